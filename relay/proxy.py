"""JSON-RPC over HTTP, single and batch: `POST /v1/<key_id>` with the service in the Host header
(`eth-mainnet.<anything>`, as the catalog's URLs are), or `POST /<service>/v1/<key_id>` on any host.

A request is admitted as a whole (key, endpoint, service, secret, origin, user agent, IP, daily cap, rate limit: a
batch of n calls takes n tokens), then each call is checked (method and contract allowlists). Calls that pass go to
the service's upstream in one request — the client's own bytes when nothing was taken out — and every call becomes
one usage record: its method, its status (for a call of a batch, the status it would have had alone), its error
class, its bytes, the request's latency, and the catalog's compute units when it succeeded.

Error classes, as the contract defines them (ARCHITECTURE.md): **user** — refused here (key, limits, allowlists,
malformed JSON-RPC) or refused by the node as malformed (-32700, -32600, -32601, -32602); **upstream** — the node
unreachable, timing out, answering non-2xx or not JSON-RPC, or its internal error (-32603) and limit (-32005);
**gateway** — the relay's own fault (no upstream configured for the service, no config yet). Any other JSON-RPC error
(a revert, "nonce too low") is the node's correct answer: a success, metered.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from relay.config import Settings
from relay.enforce import RPC_INTERNAL_ERROR, RPC_INVALID_REQUEST, RPC_PARSE_ERROR, Caller, Enforcer, Refusal
from relay.feed import ConfigStore, KeyRecord
from relay.observability import Metrics
from relay.upstream import UpstreamConnectionError, UpstreamPool
from relay.usage import UsagePusher, UsageRecord

logger = logging.getLogger("relay.proxy")

USER_RPC_ERRORS = frozenset({-32700, -32600, -32601, -32602})
UPSTREAM_RPC_ERRORS = frozenset({-32603, -32005})
# Methods end up in Gatehouse's rollups, URLs and CSV files: printable ASCII only (the ingestion refuses the rest).
_SAFE_METHOD = re.compile(r"[\x20-\x7e]{1,128}")
INVALID_METHOD = "invalid"  # the method recorded for a call that names none (unparsable, not an object)
_JSON = "application/json"
UPSTREAM_CONNECTIONS = 256  # per upstream: the JSON-RPC pools here, the LLM upstreams' aiohttp session (relay.app)
Payload = bytes | dict[str, Any]  # a body as bytes (the upstream's, passed on) or to encode


class RpcCall(msgspec.Struct):
    method: str
    params: Any = None
    id: Any = msgspec.UNSET  # absent: a notification, which gets no answer
    jsonrpc: str = ""


class RpcError(msgspec.Struct):
    code: int = 0


class RpcAnswer(msgspec.Struct):
    id: Any = None
    error: RpcError | None = None


_call_decoder = msgspec.json.Decoder(RpcCall)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_answer_decoder = msgspec.json.Decoder(RpcAnswer)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


@dataclass
class Call:
    """One JSON-RPC call of a request, and what became of it."""

    raw: bytes
    method: str
    id: Any = None
    params: Any = None
    notification: bool = False
    refusal: Refusal | None = None
    answer: bytes | None = None
    status: int = 200
    error_class: str | None = None

    def answered_by_relay(self, refusal: Refusal) -> None:
        self.refusal, self.status, self.error_class = refusal, refusal.status, refusal.error_class
        self.answer = _encoder.encode(error_body(refusal, self.id))


def error_body(refusal: Refusal, rpc_id: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "error": refusal.error()}


class RequestError(Exception):
    """The body is not JSON-RPC at all: answered with one error object."""

    def __init__(self, refusal: Refusal):
        super().__init__(refusal.message)
        self.refusal = refusal


def _safe_method(value: Any) -> str:
    return value if isinstance(value, str) and _SAFE_METHOD.fullmatch(value) else INVALID_METHOD


def _call(raw: bytes) -> Call:
    """The call in one JSON value; msgspec.DecodeError when it is not JSON at all."""
    try:
        parsed = _call_decoder.decode(raw)
    except msgspec.DecodeError:
        loose = _any_decoder.decode(raw)  # valid JSON (the batch decoded), but not a call
        rpc_id = loose.get("id") if isinstance(loose, dict) else None
        call = Call(raw, _safe_method(loose.get("method") if isinstance(loose, dict) else None), rpc_id)
        call.answered_by_relay(Refusal(400, "invalid_request", "Not a JSON-RPC call.", rpc_code=RPC_INVALID_REQUEST))
        return call
    notification = parsed.id is msgspec.UNSET
    return Call(raw, _safe_method(parsed.method), None if notification else parsed.id, parsed.params, notification)


def parse(body: bytes, max_calls: int) -> tuple[list[Call], bool]:
    """The calls of a body and whether it was a batch; RequestError when it is not JSON-RPC."""
    if body.lstrip()[:1] != b"[":
        try:
            return [_call(body)], False
        except msgspec.DecodeError:  # not even JSON
            raise RequestError(Refusal(400, "parse_error", "The body is not JSON.", rpc_code=RPC_PARSE_ERROR)) from None
    try:
        raws = _raw_list_decoder.decode(body)
    except msgspec.DecodeError:
        raise RequestError(Refusal(400, "parse_error", "The body is not JSON.", rpc_code=RPC_PARSE_ERROR)) from None
    if not raws:
        raise RequestError(Refusal(400, "invalid_request", "An empty batch.", rpc_code=RPC_INVALID_REQUEST))
    if len(raws) > max_calls:
        message = f"A batch may hold at most {max_calls} calls."
        raise RequestError(Refusal(400, "batch_too_large", message, rpc_code=RPC_INVALID_REQUEST))
    return [_call(bytes(raw)) for raw in raws], True


def classify(code: int | None) -> str | None:
    """The error class of a node's answer (None: a success, even a JSON-RPC error such as a revert)."""
    if code is None:
        return None
    if code in USER_RPC_ERRORS:
        return "user"
    if code in UPSTREAM_RPC_ERRORS:
        return "upstream"
    return None


def _answer_class(raw: bytes) -> tuple[Any, str | None]:
    try:
        answer = _answer_decoder.decode(raw)
    except msgspec.DecodeError:
        return None, "upstream"
    return answer.id, classify(answer.error.code if answer.error else None)


class UpstreamError(Exception):
    def __init__(self, refusal: Refusal):
        super().__init__(refusal.message)
        self.refusal = refusal


def _upstream_refusal(status: int, reason: str, message: str) -> Refusal:
    return Refusal(status, reason, message, rpc_code=RPC_INTERNAL_ERROR, error_class="upstream")


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Proxy:
    settings: Settings
    store: ConfigStore
    enforcer: Enforcer
    usage: UsagePusher
    metrics: Metrics
    session: aiohttp.ClientSession  # LLM upstreams (relay.llm)
    pools: dict[str, UpstreamPool] = field(default_factory=dict)  # JSON-RPC upstreams, one pool per service

    def service_of(self, request: web.Request) -> str | None:
        """The service a request addresses: the path prefix if any, else the Host header's first label."""
        service = request.match_info.get("service")
        if service is None:
            host = (request.host or "").rsplit(":", 1)[0] if not (request.host or "").startswith("[") else ""
            label, dot, _rest = host.partition(".")
            service = label.lower() if dot else None
        if not service:
            return None
        known = service in self.store.services if self.store.services else service in self.settings.upstreams
        return service if known else None

    def caller(self, request: web.Request) -> Caller:
        authorization = request.headers.get("Authorization", "")
        scheme, _, secret = authorization.partition(" ")
        ip = request.remote
        if self.settings.trusted_proxy_count:
            forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
            if len(forwarded) >= self.settings.trusted_proxy_count:
                ip = forwarded[-self.settings.trusted_proxy_count]
        return Caller(
            key_id=request.match_info["key_id"],
            secret=secret.strip() if scheme.lower() == "bearer" and secret.strip() else None,
            origin=request.headers.get("Origin"),
            user_agent=request.headers.get("User-Agent"),
            ip=ip,
        )

    async def preflight(self, request: web.Request) -> web.Response:
        """CORS preflight: browsers may send; the POST itself is where the origin allowlist is enforced."""
        response = web.Response(status=204)
        response.headers.update(
            {
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            }
        )
        return _cors(request, response)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        now = datetime.now(UTC)
        service = self.service_of(request)
        if service is None:
            message = "Name a service: POST /<service>/v1/<key_id>, or a Host header <service>.<domain>."
            return self._refuse(request, "-", started, Refusal(404, "unknown_service", message))
        if not self.store.loaded:
            not_ready = Refusal(503, "not_ready", "The gateway has no configuration yet.", error_class="gateway")
            return self._refuse(request, service, started, not_ready)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            message = f"The body is over {self.settings.max_body_bytes:,} bytes."
            too_large = Refusal(413, "body_too_large", message, rpc_code=RPC_INVALID_REQUEST)
            return self._refuse(request, service, started, too_large)
        admission = self.enforcer.admit(self.caller(request), service, now)
        key, policy = admission.key, admission.policy
        try:
            calls, batch = parse(body, self.settings.max_batch_calls)
        except RequestError as error:
            unparsed = admission.refusal or error.refusal
            if key is not None:
                call = Call(body, INVALID_METHOD)
                call.answered_by_relay(unparsed)
                self._record([call], key, service, now, started, single=True)
            return self._refuse(request, service, started, unparsed)
        refusal = admission.refusal
        if refusal is None and key is not None and policy is not None:
            refusal = self.enforcer.spend(key, policy, len(calls), now, time.monotonic())
        if refusal is None and not self.settings.upstream_for(service):
            message = f"The gateway has no upstream for {service}."
            refusal = Refusal(503, "no_upstream", message, rpc_code=RPC_INTERNAL_ERROR, error_class="gateway")
        if refusal is not None or key is None or policy is None:
            refusal = refusal or Refusal(500, "gateway_error", "Internal gateway error.", error_class="gateway")
            for call in calls:
                call.answered_by_relay(refusal)
            if key is not None:
                self._record(calls, key, service, now, started, single=not batch)
            return self._refuse(request, service, started, refusal, None if batch else calls[0].id)
        for call in calls:
            if call.refusal is None and (call_refusal := policy.call_refusal(service, call.method, call.params)):
                call.answered_by_relay(call_refusal)
        status, payload = await self._forward(service, calls, body, batch)
        self._record(calls, key, service, now, started, single=not batch, payload=payload)
        return self._finish(request, service, started, status, payload)

    def _refuse(
        self, request: web.Request, service: str, started: float, refusal: Refusal, rpc_id: Any = None
    ) -> web.Response:
        return self._finish(request, service, started, refusal.status, error_body(refusal, rpc_id), refusal)

    async def _forward(self, service: str, calls: list[Call], body: bytes, batch: bool) -> tuple[int, Payload]:
        """Send the calls not answered here to the upstream; returns the HTTP status and body for the client."""
        forward = [call for call in calls if call.refusal is None]
        if not forward:
            if not batch:
                only = calls[0]
                assert only.refusal is not None  # not forwarded: refused here
                return only.refusal.status, only.answer or b""
            return 200, b"[" + b",".join(call.answer or b"" for call in calls if not call.notification) + b"]"
        outgoing = body if len(forward) == len(calls) else b"[" + b",".join(call.raw for call in forward) + b"]"
        try:
            answer = await self._upstream(service, outgoing)
        except UpstreamError as error:
            for call in forward:
                call.status, call.error_class = error.refusal.status, "upstream"
            return error.refusal.status, error_body(error.refusal)
        if not batch:
            forward[0].answer = answer
            if not forward[0].notification:  # a notification is answered with nothing: nothing to classify
                _rpc_id, forward[0].error_class = _answer_class(answer)
            return 200, answer
        try:
            answers = _raw_list_decoder.decode(answer)
        except msgspec.DecodeError:  # one object for a whole batch: the node refused the batch as such
            _rpc_id, error_class = _answer_class(answer)
            for call in forward:
                call.error_class = error_class or "upstream"
            return 200, answer
        by_id: defaultdict[bytes, deque[tuple[bytes, str | None]]] = defaultdict(deque)
        for raw in answers:
            rpc_id, error_class = _answer_class(bytes(raw))
            by_id[_encoder.encode(rpc_id)].append((bytes(raw), error_class))
        complete = True
        for call in forward:
            if call.notification:
                continue
            matches = by_id.get(_encoder.encode(call.id))
            if matches:
                call.answer, call.error_class = matches.popleft()
            else:
                complete = False
                missing = _upstream_refusal(502, "upstream_no_answer", "The upstream did not answer this call.")
                call.answered_by_relay(missing)
        if complete and len(forward) == len(calls):
            return 200, answer  # the node's own bytes, untouched
        return 200, b"[" + b",".join(call.answer or b"" for call in calls if not call.notification) + b"]"

    async def _upstream(self, service: str, body: bytes) -> bytes:
        pool = self.pools.get(service)
        if pool is None:
            pool = self.pools[service] = UpstreamPool(self.settings.upstreams[service], limit=UPSTREAM_CONNECTIONS)
        try:
            status, answer = await pool.post(body, self.settings.upstream_timeout)
        except UpstreamConnectionError as error:
            if error.timeout:
                message = f"The upstream took over {self.settings.upstream_timeout:g} s."
                raise UpstreamError(_upstream_refusal(504, "upstream_timeout", message)) from None
            logger.warning("upstream unreachable", extra={"service": service, "error": str(error)})
            raise UpstreamError(
                _upstream_refusal(502, "upstream_unavailable", "The upstream is unreachable.")
            ) from None
        if not 200 <= status < 300:
            message = f"The upstream answered HTTP {status}."
            logger.warning(
                "upstream error",
                extra={"service": service, "status": status, "answer": answer[:200].decode(errors="replace")},
            )
            raise UpstreamError(_upstream_refusal(502, "upstream_error", message))
        return answer

    def _record(
        self,
        calls: list[Call],
        key: KeyRecord,
        service: str,
        now: datetime,
        started: float,
        *,
        single: bool,
        payload: Payload | None = None,
    ) -> None:
        """One usage record per call; the units the catalog gives its method when it succeeded."""
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        catalog = self.store.services.get(service)
        ts = rfc3339(now)
        single_resp = (
            len(payload if isinstance(payload, bytes) else _encoder.encode(payload)) if single and payload else 0
        )
        units_total = 0
        for call in calls:
            units = catalog.units_for(call.method) if catalog and call.error_class is None and call.status < 400 else 0
            units_total += units
            resp_bytes = single_resp or len(call.answer or b"")
            self.usage.add(
                UsageRecord(
                    id=os.urandom(12).hex(),
                    ts=ts,
                    key_id=key.key_id,
                    endpoint_id=key.endpoint_id,
                    service=service,
                    method=call.method,
                    status=call.status,
                    error_class=call.error_class,
                    latency_ms=latency_ms,
                    req_bytes=len(call.raw),
                    resp_bytes=resp_bytes,
                    units=units,
                    region=self.settings.region,
                )
            )
            self.metrics.call(service, call.status, call.error_class)
        self.enforcer.count(key.key_id, units_total, now)

    def _finish(
        self,
        request: web.Request,
        service: str,
        started: float,
        status: int,
        payload: Payload,
        refusal: Refusal | None = None,
    ) -> web.Response:
        body = payload if isinstance(payload, bytes) else _encoder.encode(payload)
        response = web.Response(status=status, body=body, content_type=_JSON)
        if refusal is not None and refusal.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, int(refusal.retry_after + 0.999)))
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="gatehouse-relay"'
        self.metrics.request(service, status, time.perf_counter() - started)
        return _cors(request, response)


def _cors(request: web.Request, response: web.Response) -> web.Response:
    """Browsers may read every answer (a refusal's message included); the origin allowlist decides what is served."""
    origin = request.headers.get("Origin")
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response
