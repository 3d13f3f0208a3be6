"""LLM services (catalog kind "llm") over the OpenAI API: `POST /v1/<key_id>/chat/completions` and
`POST /v1/<key_id>/embeddings`, addressed like RPC services — the path prefix `/<service>/v1/<key_id>/…`, or the Host
header's first label; the catalog's own URLs (`llm.<domain>/v1/<key_id>/chat/completions`) name no model in the
host, so there the body's `model` names the service.

Admission is the RPC side's (key, endpoint, service, secret, origin, user agent, IP, method allowlist, daily cap,
rate limit: a request is one token), with the same HTTP statuses; refusals come in OpenAI's error shape
`{"error": {"message", "type", "param", "code"}}`, `code` being the reason the RPC side puts in `error.data.reason`.

The request goes to the service's OpenAI-compatible upstream (a base URL such as `http://127.0.0.1:8600/v1`; the
operation's path is appended) with the client's body as it came, `model` included; only a body that names no model
gets the service id as its model. Streaming (`"stream": true`) is refused with 400 for now: the reference relay
meters from the `usage` of a complete answer.

One usage record per request: method `chat.completions` or `embeddings`, the upstream's `usage.prompt_tokens` /
`usage.completion_tokens` as input / output tokens (0 for a failure), and units as billing rates them — tokens at
the model's list prices, 1,000,000 units = $1 — when the feed publishes the prices (`input_price_per_million`,
`output_price_per_million` on the service), else 0 (Gatehouse's billing rates LLM usage from the tokens in any case).
Error classes as the contract defines them: refused here, or a 4xx the upstream gives the request itself (400, 404,
413, 422: a bad request, passed through) → user; the upstream unreachable, too slow, 5xx, 429 (its own limit), an
authentication failure of the relay's upstream credentials or an answer that is not JSON → upstream; no upstream
configured → gateway.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from relay.enforce import Refusal
from relay.feed import KeyRecord
from relay.proxy import Proxy, rfc3339
from relay.usage import UsageRecord

logger = logging.getLogger("relay.llm")

OPERATIONS = {"chat/completions": "chat.completions", "embeddings": "embeddings"}
# A 4xx the upstream answers about the request itself: the caller's to fix, passed through as it came.
USER_UPSTREAM_STATUSES = frozenset({400, 404, 413, 422})
STREAMING_NOT_SUPPORTED = "Streaming is not supported by the reference relay yet: send the request without stream."
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def openai_error(refusal: Refusal) -> dict[str, Any]:
    """OpenAI's error body for a refusal; `code` is the machine-readable reason."""
    error: dict[str, Any] = {
        "message": refusal.message,
        "type": _ERROR_TYPES.get(refusal.status, "api_error"),
        "param": None,
        "code": refusal.reason,
    }
    if refusal.status_reason:
        error["status_reason"] = refusal.status_reason
    return {"error": error}


def token_units(service: Any, input_tokens: int, output_tokens: int) -> int:
    """Billable units of an LLM request when the feed publishes the model's prices (USD per million tokens)."""
    input_price = getattr(service, "input_price_per_million", None)
    output_price = getattr(service, "output_price_per_million", None)
    if input_price is None and output_price is None:
        return 0
    value = input_tokens * Decimal(input_price or 0) + output_tokens * Decimal(output_price or 0)
    return int(value.to_integral_value(ROUND_HALF_UP))


def _tokens(answer: Any) -> tuple[int, int] | None:
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    if not (isinstance(prompt, int) and isinstance(completion, int)) or prompt < 0 or completion < 0:
        return None
    return min(prompt, 2**31 - 1), min(completion, 2**31 - 1)


@dataclass
class Outcome:
    status: int
    payload: bytes | dict[str, Any]
    error_class: str | None = None
    refusal: Refusal | None = None
    input_tokens: int = 0
    output_tokens: int = 0


def _refused(refusal: Refusal) -> Outcome:
    return Outcome(refusal.status, openai_error(refusal), refusal.error_class, refusal)


def _upstream_refusal(status: int, reason: str, message: str) -> Outcome:
    return _refused(Refusal(status, reason, message, error_class="upstream"))


async def handle(proxy: Proxy, request: web.Request, operation: str) -> web.Response:
    """One OpenAI-API request for an LLM service: admitted, forwarded, metered."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    method = OPERATIONS[operation]
    if not proxy.store.loaded:
        not_ready = Refusal(503, "not_ready", "The gateway has no configuration yet.", error_class="gateway")
        return proxy._finish(request, "-", started, 503, openai_error(not_ready), not_ready)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        message = f"The body is over {proxy.settings.max_body_bytes:,} bytes."
        too_large = Refusal(413, "body_too_large", message)
        return proxy._finish(request, "-", started, 413, openai_error(too_large), too_large)
    try:
        parsed = _decoder.decode(body)
    except msgspec.DecodeError:
        parsed = None
    service = _service_of(proxy, request, parsed)
    if service is None:
        message = "Name an LLM service: POST /<service>/v1/<key_id>/chat/completions, or a known model in `model`."
        unknown = Refusal(404, "unknown_service", message)
        return proxy._finish(request, "-", started, 404, openai_error(unknown), unknown)
    admission = proxy.enforcer.admit(proxy.caller(request), service, now)
    key, policy = admission.key, admission.policy
    refusal = admission.refusal
    if refusal is None and not isinstance(parsed, dict):
        refusal = Refusal(400, "invalid_request", "The body must be a JSON object (an OpenAI API request).")
    if refusal is None and policy is not None:
        refusal = policy.call_refusal(service, method, None)
    if refusal is None and isinstance(parsed, dict) and parsed.get("stream") is True:
        refusal = Refusal(400, "streaming_not_supported", STREAMING_NOT_SUPPORTED)
    if refusal is None and key is not None and policy is not None:
        refusal = proxy.enforcer.spend(key, policy, 1, now, time.monotonic())
    upstream = _upstream_url(proxy, service)
    if refusal is None and upstream is None:
        message = f"The gateway has no upstream for {service}."
        refusal = Refusal(503, "no_upstream", message, error_class="gateway")
    if refusal is None and (key is None or policy is None):
        refusal = Refusal(500, "gateway_error", "Internal gateway error.", error_class="gateway")
    if refusal is not None or upstream is None or not isinstance(parsed, dict):
        refusal = refusal or Refusal(500, "gateway_error", "Internal gateway error.", error_class="gateway")
        outcome = _refused(refusal)
    else:
        if "model" not in parsed:
            parsed["model"] = service
            body = _encoder.encode(parsed)
        outcome = await _forward(proxy, service, f"{upstream.rstrip('/')}/{operation}", body)
    response_body = outcome.payload if isinstance(outcome.payload, bytes) else _encoder.encode(outcome.payload)
    if key is not None:
        _record(proxy, key, service, method, now, started, outcome, len(body), len(response_body))
    return proxy._finish(request, service, started, outcome.status, response_body, outcome.refusal)


def _service_of(proxy: Proxy, request: web.Request, parsed: Any) -> str | None:
    """The path prefix, else the Host header's first label, else (the catalog's `llm.` host) the body's model —
    always an LLM service of the catalog (or, with no catalog in the feed, one with an upstream configured)."""
    named = request.match_info.get("service")
    if named is None:
        service = proxy.service_of(request)
        if service is None or not _is_llm(proxy, service):
            model = parsed.get("model") if isinstance(parsed, dict) else None
            service = model if isinstance(model, str) else None
    else:
        service = named
    if service is None or not _is_llm(proxy, service):
        return None
    return service


def _is_llm(proxy: Proxy, service: str) -> bool:
    catalog = proxy.store.services
    if catalog:
        record = catalog.get(service)
        return record is not None and record.kind == "llm"
    return service in proxy.settings.upstreams


def _upstream_url(proxy: Proxy, service: str) -> str | None:
    """The service's own upstream, else one configured for every model under the id `llm`."""
    return proxy.settings.upstream_for(service) or proxy.settings.upstream_for("llm")


async def _forward(proxy: Proxy, service: str, url: str, body: bytes) -> Outcome:
    timeout = aiohttp.ClientTimeout(total=proxy.settings.upstream_timeout)
    headers = {"Content-Type": "application/json"}
    if proxy.settings.llm_api_key:  # a hosted OpenAI-compatible API: the operator's key, never the client's
        headers["Authorization"] = f"Bearer {proxy.settings.llm_api_key}"
    try:
        async with proxy.session.post(url, data=body, headers=headers, timeout=timeout) as response:
            answer = await response.read()
            status = response.status
    except TimeoutError:
        return _upstream_refusal(
            504, "upstream_timeout", f"The upstream took over {proxy.settings.upstream_timeout:g} s."
        )
    except (aiohttp.ClientError, OSError) as error:
        logger.warning("upstream unreachable", extra={"service": service, "error": repr(error)})
        return _upstream_refusal(502, "upstream_unavailable", "The upstream is unreachable.")
    try:
        decoded = _decoder.decode(answer)
    except msgspec.DecodeError:
        decoded = None
    if status in USER_UPSTREAM_STATUSES:
        payload = (
            answer
            if isinstance(decoded, dict)
            else openai_error(Refusal(status, "upstream_refused", "The upstream refused the request."))
        )
        return Outcome(status, payload, "user")
    if status == 429:
        limited = Refusal(
            429, "upstream_rate_limited", "The upstream is rate limiting; retry shortly.", error_class="upstream"
        )
        return Outcome(429, answer if isinstance(decoded, dict) else openai_error(limited), "upstream", limited)
    if not 200 <= status < 300:
        logger.warning(
            "upstream error",
            extra={"service": service, "status": status, "answer": answer[:200].decode(errors="replace")},
        )
        return _upstream_refusal(502, "upstream_error", f"The upstream answered HTTP {status}.")
    tokens = _tokens(decoded)
    if tokens is None:
        return _upstream_refusal(
            502, "upstream_error", "The upstream's answer is not an OpenAI API response with usage."
        )
    return Outcome(status, answer, None, None, *tokens)


def _record(
    proxy: Proxy,
    key: KeyRecord,
    service: str,
    method: str,
    now: datetime,
    started: float,
    outcome: Outcome,
    req_bytes: int,
    resp_bytes: int,
) -> None:
    ok = outcome.error_class is None and outcome.status < 400
    units = token_units(proxy.store.services.get(service), outcome.input_tokens, outcome.output_tokens) if ok else 0
    proxy.usage.add(
        UsageRecord(
            id=os.urandom(12).hex(),
            ts=rfc3339(now),
            key_id=key.key_id,
            endpoint_id=key.endpoint_id,
            service=service,
            method=method,
            status=outcome.status,
            error_class=outcome.error_class,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            req_bytes=req_bytes,
            resp_bytes=resp_bytes,
            units=units,
            region=proxy.settings.region,
            input_tokens=outcome.input_tokens if ok else 0,
            output_tokens=outcome.output_tokens if ok else 0,
        )
    )
    proxy.metrics.call(service, outcome.status, outcome.error_class)
    proxy.enforcer.count(key.key_id, units, now)
