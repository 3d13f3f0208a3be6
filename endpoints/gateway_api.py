"""The gateway API (v1): the config feed. Gateway credentials only; see ARCHITECTURE.md's contract."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import msgspec
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from endpoints import feed
from endpoints.authentication import GatewayCredentialAuthentication, IsGateway
from project.api import ErrorSerializer
from project.params import parse_int

_encoder = msgspec.json.Encoder()
R = TypeVar("R", bound=HttpResponseBase)


def json_response(request: Request, body: dict, *, etag: str, status: int = 200) -> HttpResponse:
    """JSON with an ETag (If-None-Match → 304) and gzip when the gateway accepts it."""
    if status == 200 and etag in request.headers.get("If-None-Match", ""):
        response = HttpResponse(status=304)
    else:
        payload = _encoder.encode(body)
        response = HttpResponse(content_type="application/json", status=status)
        if "gzip" in request.headers.get("Accept-Encoding", "") and len(payload) > 1024:
            payload = gzip.compress(payload, compresslevel=5, mtime=0)
            response["Content-Encoding"] = "gzip"
        response.content = payload
    return _feed_headers(response, etag)


def _feed_headers(response: R, etag: str) -> R:
    response["ETag"] = etag
    response["Vary"] = "Accept-Encoding"
    response["Cache-Control"] = "no-store"
    return response


# Streamed snapshots are compressed as they go, at a level that keeps up with the encoding (bench/config_feed.py).
SNAPSHOT_GZIP_LEVEL = 5


def _gzipped(chunks: Iterable[bytes], close: Callable[[], None]) -> Iterator[bytes]:
    """gzip of the chunks, each compressed on a thread of its own while the next is read and encoded (zlib lets go
    of the GIL, so the two share the machine's cores); one compressor thread keeps the order."""
    compressor = zlib.compressobj(SNAPSHOT_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="feed-gzip") as pool:
            pending: Future[bytes] | None = None
            for chunk in chunks:
                compressing = pool.submit(compressor.compress, chunk)
                if pending is not None and (out := pending.result()):
                    yield out
                pending = compressing
            if pending is not None and (out := pending.result()):
                yield out
        yield compressor.flush()
    finally:
        close()


def snapshot_response(request: Request, snapshot: feed.Snapshot) -> HttpResponseBase:
    """The snapshot streamed as it is read (gzip when the gateway accepts it), or 304 when the gateway has it."""
    etag = f'W/"snap-{snapshot.cursor}"'
    if etag in request.headers.get("If-None-Match", ""):
        snapshot.close()
        return _feed_headers(HttpResponse(status=304), etag)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response = StreamingHttpResponse(_gzipped(snapshot, snapshot.close), content_type="application/json")
        response["Content-Encoding"] = "gzip"
    else:
        response = StreamingHttpResponse(snapshot, content_type="application/json")
    return _feed_headers(response, etag)


_ENDPOINT = inline_serializer(
    "FeedEndpoint",
    {
        "endpoint_id": serializers.CharField(),
        "team": serializers.CharField(help_text="The team's slug."),
        "environment": serializers.ChoiceField(choices=["production", "test"]),
        "status": serializers.ChoiceField(choices=["active", "suspended", "deleted"]),
        "status_reason": serializers.CharField(allow_null=True),
        "services": serializers.ListField(child=serializers.CharField()),
        "rate_limit_rps": serializers.IntegerField(
            help_text="Requests per second to enforce: the endpoint's own limit, never above its team's plan limit "
            "(the plan's limit when the endpoint sets none)."
        ),
        "monthly_unit_cap": serializers.IntegerField(allow_null=True),
        "secret_key_required": serializers.BooleanField(),
        "allowlists": serializers.DictField(
            help_text="origins, user_agents, ips, contracts and methods ({service: [...]}); empty: no limit."
        ),
    },
)
_KEY = inline_serializer(
    "FeedKey",
    {
        "key_id": serializers.CharField(),
        "secret_sha256": serializers.CharField(help_text="Hex SHA-256 of the secret the client presents."),
        "team": serializers.CharField(),
        "endpoint_id": serializers.CharField(),
        "environment": serializers.CharField(),
        "status": serializers.ChoiceField(choices=["active", "expired", "revoked", "suspended"]),
        "status_reason": serializers.CharField(allow_null=True),
        "expires_at": serializers.DateTimeField(allow_null=True),
        "valid_until": serializers.DateTimeField(allow_null=True, help_text="End of a rotation overlap."),
        "daily_unit_cap": serializers.IntegerField(allow_null=True),
    },
)


_SERVICE = inline_serializer(
    "FeedService",
    {
        "id": serializers.CharField(),
        "kind": serializers.ChoiceField(choices=["rpc", "llm"]),
        "chain_family": serializers.CharField(),
        "compute_units": serializers.IntegerField(help_text="Units of a successful call to a method not listed below."),
        "method_compute_units": serializers.DictField(
            child=serializers.IntegerField(), help_text="Units of a successful call, per method."
        ),
        "input_price_per_million": serializers.DecimalField(
            max_digits=12, decimal_places=6, allow_null=True, help_text="LLM: units per input token × 10^6."
        ),
        "output_price_per_million": serializers.DecimalField(
            max_digits=12, decimal_places=6, allow_null=True, help_text="LLM: units per output token × 10^6."
        ),
    },
)


class ConfigFeedAPI(APIView):
    authentication_classes = [GatewayCredentialAuthentication]
    permission_classes = [IsGateway]
    throttle_classes: list = []  # gateways are bounded by batch sizes, not a per-minute count

    @extend_schema(
        operation_id="gateway_config",
        summary="Config feed: snapshot, or changes since a cursor",
        description=(
            "Without `since`: every live endpoint and every key the gateway may accept, plus a `cursor`. "
            "With `since=<cursor>`: only what changed after it, oldest first, one entry per object with its "
            "current state (revoked keys and deleted endpoints included), and the next cursor; follow "
            "`has_more`. Verify a presented key by hashing it (SHA-256) and looking the hash up locally. "
            "Enforce `expires_at` and `valid_until` locally too: they end without a change entry. "
            "Send If-None-Match with the last ETag to get 304 when nothing changed. 410 means the cursor "
            "is older than the retained change log: take a new snapshot.\n\n"
            f"Long-poll: add `wait=<seconds>` (0–{feed.MAX_WAIT_SECONDS}, default 0: answer at once) to `since`. "
            "When nothing changed after the cursor, the request is held until a change commits — answered within "
            "tens of milliseconds of the commit — or the wait runs out; either way the answer is the one a poll "
            "would get at that moment (an empty `changes` list on timeout, or 304 to a matching If-None-Match). "
            "A change that is already there is answered at once; rolled-back changes never wake a request. Each "
            "Gatehouse process holds a limited number of requests at a time; beyond it the request is answered at "
            "once with a `Retry-After` header (seconds): wait that long before the next poll. Without `since` "
            "(a snapshot), `wait` is ignored."
        ),
        parameters=[
            OpenApiParameter(
                "since",
                {"type": "string", "pattern": "^[0-9]{1,18}$"},
                description="A cursor from an earlier response (digits).",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": feed.MAX_CHANGES_LIMIT},
                description=f"Changes per page (default {feed.DEFAULT_CHANGES_LIMIT}, max {feed.MAX_CHANGES_LIMIT}).",
            ),
            OpenApiParameter(
                "wait",
                {"type": "integer", "minimum": 0, "maximum": feed.MAX_WAIT_SECONDS, "default": 0},
                description="With `since`: seconds to hold the request until a change commits (0: answer at once).",
            ),
        ],
        responses={
            200: inline_serializer(
                "ConfigFeed",
                {
                    "version": serializers.CharField(),
                    "cursor": serializers.CharField(),
                    "since": serializers.CharField(required=False),
                    "has_more": serializers.BooleanField(required=False),
                    "generated_at": serializers.DateTimeField(),
                    "endpoints": serializers.ListField(child=_ENDPOINT, required=False),
                    "keys": serializers.ListField(child=_KEY, required=False),
                    "services": serializers.ListField(
                        child=_SERVICE, required=False, help_text="In a snapshot: what metering needs of the catalog."
                    ),
                    "changes": serializers.ListField(
                        child=serializers.DictField(),
                        required=False,
                        help_text="{seq, type: endpoint|key, endpoint|key: {...}}",
                    ),
                },
            ),
            304: OpenApiResponse(description="Nothing changed since the ETag you sent."),
            400: ErrorSerializer,
            401: ErrorSerializer,
            410: ErrorSerializer,
        },
        tags=["gateway"],
    )
    def get(self, request: Request) -> HttpResponseBase:
        since_raw = request.query_params.get("since")
        limit_raw = request.query_params.get("limit", str(feed.DEFAULT_CHANGES_LIMIT))
        limit = parse_int(limit_raw, minimum=1, maximum=feed.MAX_CHANGES_LIMIT)
        wait = parse_int(request.query_params.get("wait", "0"), minimum=0, maximum=feed.MAX_WAIT_SECONDS)
        if wait is None:
            return json_response(
                request,
                {"code": "invalid_wait", "detail": f"wait must be whole seconds, 0–{feed.MAX_WAIT_SECONDS}."},
                etag='W/"error"',
                status=400,
            )
        if since_raw is None and limit is not None:
            return snapshot_response(request, feed.Snapshot())
        since = parse_int(since_raw, minimum=0, maximum=2**62)
        if since is None or limit is None:
            return json_response(
                request,
                {
                    "code": "invalid_cursor",
                    "detail": f"since must be a cursor from this feed; limit 1–{feed.MAX_CHANGES_LIMIT}.",
                },
                etag='W/"error"',
                status=400,
            )
        try:
            waited = feed.changes_waiting(since=since, limit=limit, wait=wait)
        except feed.CursorExpiredError:
            return json_response(
                request,
                {
                    "code": "cursor_expired",
                    "detail": "This cursor is older than the retained change log; take a new snapshot.",
                },
                etag='W/"expired"',
                status=410,
            )
        body = waited.body
        response = json_response(request, body, etag=f'W/"chg-{since_raw}-{body["cursor"]}-{limit_raw}"')
        if waited.retry_after is not None:
            response["Retry-After"] = str(waited.retry_after)
        return response
