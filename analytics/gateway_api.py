"""POST /api/gateway/v1/usage: the gateway pushes one NDJSON record per relay. Gateway credentials only."""

from __future__ import annotations

from collections.abc import Iterator

from django.http import JsonResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from analytics import ingest
from endpoints.authentication import GatewayCredentialAuthentication, IsGateway
from endpoints.models import GatewayCredential
from project.api import ErrorSerializer

CHUNK = 64 * 1024
_EXAMPLE = (
    '{"id":"r-8f2c","ts":"2026-11-26T12:00:01.250Z","key_id":"key_k7v4j042mjbko8lz","endpoint_id":"ep_0g70cjxv9tf4",'
    '"service":"eth-mainnet","method":"eth_call","status":200,"error_class":null,"latency_ms":41.7,'
    '"req_bytes":312,"resp_bytes":1180,"units":26,"region":"eu-west-1"}'
)


class GatewayRequest(Request):
    """A request IsGateway let through: GatewayCredentialAuthentication set `auth` to the gateway's credential."""

    auth: GatewayCredential


def body_chunks(request: Request) -> Iterator[bytes]:
    raw = request._request  # the WSGI request: read the stream ourselves, with our own size limit
    while True:
        chunk = raw.read(CHUNK)
        if not chunk:
            return
        yield chunk


class UsageIngestAPI(APIView):
    authentication_classes = [GatewayCredentialAuthentication]
    permission_classes = [IsGateway]
    throttle_classes: list = []  # gateways are bounded by batch sizes, not a per-minute count
    parser_classes: list = []  # the body is NDJSON, read and validated by analytics.ingest

    @extend_schema(
        operation_id="gateway_usage_ingest",
        summary="Push usage records (NDJSON, one record per relay)",
        description=(
            "Body: one JSON object per line (the v1 usage record: id, ts, key_id, endpoint_id, service, method, "
            "status, error_class, latency_ms, req_bytes, resp_bytes, units, input_tokens, output_tokens, region), "
            "optionally with `Content-Encoding: gzip`. At most 10 MB decompressed and 50,000 records (413 beyond). "
            "`Idempotency-Key` is required: resending the same key with the same body returns the original answer "
            "and counts nothing twice; the same key with a different body is 409. Any malformed record (wrong type, "
            "out of range, `id`/`method`/`region` outside printable ASCII, a duplicate id) refuses the whole batch "
            "with 422, listing line numbers and reasons; nothing is stored. A well-formed record that cannot be "
            "attributed — an unknown key, a key of a deleted team, a key of another endpoint, an unknown service — "
            "does not block "
            "the batch: it is stored in the operator's quarantine and counted in `quarantined`. Several "
            "concatenated gzip members are one body; bytes after the last member are 400. 202 means the batch is "
            "committed: it will be counted exactly once, whatever happens to the aggregation."
        ),
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="Unique per batch (≤ 128 characters).",
            ),
            OpenApiParameter("Content-Encoding", str, OpenApiParameter.HEADER, enum=["gzip", "identity"]),
        ],
        request={"application/x-ndjson": {"type": "string", "format": "binary"}},
        examples=[OpenApiExample("One record", value=_EXAMPLE, request_only=True, media_type="application/x-ndjson")],
        responses={
            202: inline_serializer(
                "UsageAccepted",
                {
                    "batch_id": serializers.IntegerField(),
                    "records": serializers.IntegerField(help_text="Records stored and counted."),
                    "quarantined": serializers.IntegerField(
                        help_text="Well-formed records set aside for the operator (not counted for any team)."
                    ),
                    "quarantine_reasons": serializers.DictField(
                        child=serializers.IntegerField(),
                        help_text="Quarantined records per reason: unknown_key, team_deleted, endpoint_mismatch, "
                        "unknown_service.",
                    ),
                    "status": serializers.CharField(),
                    "replayed": serializers.BooleanField(
                        help_text="True when this answers a repeated Idempotency-Key."
                    ),
                },
            ),
            400: ErrorSerializer,
            401: ErrorSerializer,
            409: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused with a different body."),
            413: ErrorSerializer,
            415: OpenApiResponse(ErrorSerializer, description="Content-Encoding other than gzip or identity."),
            422: OpenApiResponse(
                inline_serializer(
                    "UsageRejected",
                    {
                        "code": serializers.CharField(),
                        "detail": serializers.CharField(),
                        "errors": serializers.ListField(
                            child=serializers.DictField(), help_text="[{line, reason}], at most 100"
                        ),
                        "errors_truncated": serializers.BooleanField(),
                    },
                ),
                description="Invalid records; nothing was stored.",
            ),
        },
        tags=["gateway"],
    )
    def post(self, request: GatewayRequest) -> JsonResponse:
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key or len(key) > 128 or not key.isprintable():
            return JsonResponse(
                {
                    "code": "idempotency_key_required",
                    "detail": "Send an Idempotency-Key header (1–128 printable characters) unique to this batch.",
                },
                status=400,
            )
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity", ""):
            return JsonResponse(
                {"code": "unsupported_encoding", "detail": "Content-Encoding must be gzip or identity."}, status=415
            )
        length_header = request.headers.get("Content-Length") or "0"
        if not length_header.isdigit():
            return JsonResponse(
                {"code": "invalid_content_length", "detail": "Content-Length must be a number of bytes."}, status=400
            )
        length = int(length_header)
        try:
            if length > ingest.MAX_BYTES:
                raise ingest.too_large()
            body = ingest.read_body(body_chunks(request), gzipped=encoding == "gzip")
            accepted = ingest.ingest(gateway=request.auth, idempotency_key=key, body=body)
        except ingest.IngestError as error:
            return JsonResponse(error.body, status=error.status)
        response = JsonResponse(accepted.body(), status=202)
        if accepted.replayed:
            response["Idempotent-Replayed"] = "true"
        return response
