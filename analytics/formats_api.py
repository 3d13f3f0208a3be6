"""The field's usage formats at their own gateway URLs: LiteLLM's logging payload and OTLP/HTTP logs and traces.

Each view reads the body as the NDJSON view does (the same size cap, gzip), converts it (analytics.formats) and hands
the records to the same ingestion; gateway credentials only. README, "The field's usage formats".
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import formats, ingest
from analytics.formats import litellm, otlp
from analytics.gateway_api import GatewayRequest, body_chunks
from endpoints.authentication import GatewayCredentialAuthentication, IsGateway
from project.api import ErrorSerializer

logger = logging.getLogger(__name__)


def _body(request: GatewayRequest) -> bytes:
    """The decompressed body, within ingestion's cap (413 beyond); 415 for an encoding other than gzip."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity", ""):
        raise ingest.IngestError(415, "unsupported_encoding", "Content-Encoding must be gzip or identity.")
    length = request.headers.get("Content-Length") or "0"
    if not length.isascii() or not length.isdigit():
        raise ingest.IngestError(400, "invalid_content_length", "Content-Length must be a number of bytes.")
    if int(length) > ingest.MAX_BYTES:
        raise ingest.too_large()
    return ingest.read_body(body_chunks(request), gzipped=encoding == "gzip")


class _FormatAPIView(APIView):
    authentication_classes = [GatewayCredentialAuthentication]
    permission_classes = [IsGateway]
    throttle_classes: list = []  # gateways are bounded by batch sizes, as for the NDJSON push
    parser_classes: list = []  # the body is read and decoded by analytics.formats


_ACCEPTED = inline_serializer(
    "LiteLLMUsageAccepted",
    {
        "batch_id": serializers.IntegerField(),
        "records": serializers.IntegerField(help_text="Payloads stored and counted."),
        "quarantined": serializers.IntegerField(
            help_text="Payloads set aside for the operator (unknown key or model): counted for no team."
        ),
        "quarantine_reasons": serializers.DictField(child=serializers.IntegerField()),
        "status": serializers.CharField(),
        "replayed": serializers.BooleanField(help_text="True when this answers a body (or key) already accepted."),
    },
)
_REJECTED = inline_serializer(
    "LiteLLMUsageRejected",
    {
        "code": serializers.CharField(),
        "detail": serializers.CharField(),
        "errors": serializers.ListField(
            child=serializers.DictField(),
            help_text="[{line, source, reason}], at most 100: `source` is the payload's index in the array, `[3]`.",
        ),
        "errors_truncated": serializers.BooleanField(),
    },
)
_LITELLM_EXAMPLE = [
    {
        "id": "chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f",
        "call_type": "acompletion",
        "status": "success",
        "model": "hosted_vllm/meta-llama/Llama-3.1-8B-Instruct",
        "model_group": "llama-3.1-8b-instruct",
        "prompt_tokens": 612,
        "completion_tokens": 240,
        "total_tokens": 852,
        "startTime": 1764158401.25,
        "endTime": 1764158402.162,
        "metadata": {"user_api_key_alias": "key_k7v4j042mjbko8lz", "user_api_key_auth_metadata": {}},
        "error_information": {"error_code": "", "error_class": "", "llm_provider": ""},
    }
]


class LiteLLMUsageAPI(_FormatAPIView):
    @extend_schema(
        operation_id="gateway_usage_litellm",
        summary="Push usage as LiteLLM's logging payload",
        description=(
            "LiteLLM proxy's generic API logger (`callback_type: generic_api`) posts its StandardLoggingPayload "
            "here: a JSON array (its default `log_format`), NDJSON or one object. Each payload becomes one usage "
            "record — `id` the relay id, `model_group` (else `model`) the catalog LLM service by id or name, the "
            "Gatehouse key from the virtual key's metadata `gatehouse_key_id` (else its alias), `prompt_tokens` and "
            "`completion_tokens`, latency `endTime − startTime`, status and error class from `status` and "
            "`error_information` — and is ingested exactly as `POST /api/gateway/v1/usage` ingests it: the same "
            "validation (422 for a malformed payload, naming its index), quarantine (an unknown key or model is set "
            "aside and counted in `quarantined`), limits (10 MB, 50,000 payloads) and exactly-once storage. "
            "Without an `Idempotency-Key` (LiteLLM sends none) the key is the body's SHA-256: a resent batch is "
            "answered from the first and counted once. `region` names the region the proxy serves (default "
            "`litellm`)."
        ),
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Optional: unique per batch. Without it the body's SHA-256 is the key.",
            ),
            OpenApiParameter("Content-Encoding", str, OpenApiParameter.HEADER, enum=["gzip", "identity"]),
            OpenApiParameter(
                "region", str, description="Region of the proxy (printable ASCII, ≤ 32); default `litellm`."
            ),
        ],
        request={"application/json": {"type": "array", "items": {"type": "object"}}},
        examples=[OpenApiExample("One call", value=_LITELLM_EXAMPLE, request_only=True)],
        responses={
            202: _ACCEPTED,
            400: ErrorSerializer,
            401: ErrorSerializer,
            409: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused with a different body."),
            413: ErrorSerializer,
            415: ErrorSerializer,
            422: OpenApiResponse(_REJECTED, description="Invalid payloads; nothing was stored."),
        },
        tags=["gateway"],
    )
    def post(self, request: GatewayRequest) -> JsonResponse:
        region = request.query_params.get("region", litellm.DEFAULT_REGION)
        if not region or len(region) > formats.REGION_MAX or not formats.SAFE_TEXT.fullmatch(region):
            return JsonResponse(
                {"code": "invalid_region", "detail": "region must be 1–32 printable ASCII characters."}, status=400
            )
        try:
            body = _body(request)
            key, derived = formats.idempotency_key(
                header=request.headers.get("Idempotency-Key"), kind="litellm", body=body
            )
            converted = litellm.convert(litellm.parse(body), catalog=formats.Catalog.load(), region=region)
            accepted = formats.ingest_converted(gateway=request.auth, converted=converted, key=key, derived=derived)
        except ingest.IngestError as error:
            return JsonResponse(error.body, status=error.status)
        response = JsonResponse(accepted.body(), status=202)
        if accepted.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


_STATUS_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status: `message`, and in `details` an ErrorInfo whose `reason` is the "
    "machine-readable code (`invalid_otlp`, `invalid_records`, `payload_too_large` …) and, for invalid records, a "
    "BadRequest naming each (`resourceSpans[0].scopeSpans[0].spans[3]`).",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}


def _partial_success(rejected: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Set only when records were quarantined: how many, and why.",
        "properties": {
            rejected: {"oneOf": [{"type": "string"}, {"type": "integer"}], "description": "int64 (a string in JSON)"},
            "errorMessage": {"type": "string"},
        },
    }


def _otlp_error_responses() -> dict[Any, Any]:
    responses: dict[Any, Any] = {}
    for status, what in (
        (400, "Not an OTLP request, or invalid records (nothing stored); not retryable."),
        (401, "No valid gateway credential."),
        (403, "Not a gateway credential."),
        (409, "Idempotency-Key reused with a different body."),
        (413, "Over 10 MB decompressed or 50,000 records."),
        (415, "A Content-Type other than application/x-protobuf or application/json, or an encoding other than gzip."),
        (503, "The database is unavailable; the exporter retries."),
    ):
        responses[(status, "application/json")] = OpenApiResponse(_STATUS_SCHEMA, description=what)
        responses[(status, "application/x-protobuf")] = OpenApiResponse(OpenApiTypes.BINARY, description=what)
    return responses


def _otlp_schema(signal: otlp.Signal) -> Any:
    records, message, answer = {
        "traces": ("spans", "ExportTraceServiceRequest", "ExportTraceServiceResponse"),
        "logs": ("log records", "ExportLogsServiceRequest", "ExportLogsServiceResponse"),
    }[signal]
    timing = {
        "traces": "the span's start and end (or `gatehouse.latency_ms`); relay id from `gatehouse.relay_id`, else the "
        "span id; method falling back to the span name",
        "logs": "`gatehouse.latency_ms`; relay id from `gatehouse.relay_id`, else the record's span id",
    }[signal]
    description = (
        f"An OpenTelemetry exporter's OTLP/HTTP `{message}`, binary protobuf (`application/x-protobuf`) or OTLP JSON "
        f"(`application/json`), optionally gzip. Each of the {records} whose own attributes carry `gatehouse.key_id` "
        "is one usage record (the others are skipped): `gatehouse.endpoint_id` (else the key's), `gatehouse.service` "
        "(else `gen_ai.request.model` matched to the catalog), `gatehouse.method` (else `rpc.method`, "
        "`gen_ai.operation.name`), `http.response.status_code`, `gatehouse.error_class`, `gatehouse.units`, "
        "`gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens`, `http.request.body.size` / "
        f"`http.response.body.size`, `gatehouse.region` (else `cloud.region`); latency from {timing}. Ingested as "
        "`POST /api/gateway/v1/usage` ingests (validation, quarantine, limits, exactly once); the Idempotency-Key is "
        f"the body's SHA-256 unless one is sent. The answer is OTLP's, in the request's encoding: `{answer}`, whose "
        "`partialSuccess` counts the records quarantined; a refusal is a google.rpc.Status."
    )
    return extend_schema(
        operation_id=f"gateway_otlp_{signal}",
        summary=f"Push usage as OTLP/HTTP {records}",
        description=description,
        parameters=[
            OpenApiParameter("Content-Encoding", str, OpenApiParameter.HEADER, enum=["gzip", "identity"]),
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, description="Optional."),
        ],
        request={
            "application/x-protobuf": {"type": "string", "format": "binary"},
            "application/json": {"type": "object"},
        },
        responses={
            (200, "application/json"): OpenApiResponse(
                {
                    "type": "object",
                    "properties": {
                        "partialSuccess": _partial_success(
                            "rejectedSpans" if signal == "traces" else "rejectedLogRecords"
                        )
                    },
                },
                description="Accepted and committed; `partialSuccess` counts records quarantined.",
            ),
            (200, "application/x-protobuf"): OpenApiResponse(OpenApiTypes.BINARY, description="Accepted."),
            **_otlp_error_responses(),
        },
        tags=["gateway"],
    )


class _OtlpAPIView(_FormatAPIView):
    """OTLP/HTTP: every answer, refusals included, in the request's encoding (JSON when it names neither)."""

    signal: ClassVar[otlp.Signal]

    def _encoding(self) -> otlp.Encoding:
        return otlp.encoding_of(self.request.META.get("CONTENT_TYPE", "")) or "json"

    def _answer(self, message: Any, status: int) -> HttpResponse:
        encoding = self._encoding()
        return HttpResponse(otlp.serialize(message, encoding), status=status, content_type=otlp.MEDIA_TYPES[encoding])

    def export(self, request: GatewayRequest) -> HttpResponse:
        encoding = otlp.encoding_of(request.META.get("CONTENT_TYPE", ""))
        try:
            if encoding is None:
                raise ingest.IngestError(
                    415, "unsupported_media_type", "Content-Type must be application/x-protobuf or application/json."
                )
            body = _body(request)
            converted = otlp.convert(
                otlp.parse(body, signal=self.signal, encoding=encoding), catalog=formats.Catalog.load()
            )
            accepted = None
            if converted.records or converted.errors:  # OTLP: a request without relays is a success
                key, derived = formats.idempotency_key(
                    header=request.headers.get("Idempotency-Key"), kind=f"otlp-{self.signal}", body=body
                )
                accepted = formats.ingest_converted(gateway=request.auth, converted=converted, key=key, derived=derived)
        except ingest.IngestError as error:
            # OTLP answers invalid data with 400 (never retried) where the NDJSON path says 422.
            status = 400 if error.status == 422 else error.status
            return self._answer(otlp.error_status(status, error.body), status)
        except (OperationalError, InterfaceError):
            # OTLP exporters retry a 503 (and drop the batch on a 500): nothing was committed, so let them.
            logger.warning("OTLP %s export refused: the database is unavailable", self.signal, exc_info=True)
            body_503 = {"code": "unavailable", "detail": "The usage store is unavailable; retry later."}
            response = self._answer(otlp.error_status(503, body_503), 503)
            response["Retry-After"] = "5"
            return response
        response = self._answer(otlp.export_response(signal=self.signal, accepted=accepted), 200)
        response["Gatehouse-Ignored"] = str(converted.ignored)
        if accepted is not None:
            response["Gatehouse-Batch"] = str(accepted.batch_id)
            if accepted.replayed:
                response["Idempotent-Replayed"] = "true"
        return response

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        """DRF's own refusals (credentials, method) as a google.rpc.Status too, WWW-Authenticate kept."""
        response = super().dispatch(request, *args, **kwargs)
        if not isinstance(response, Response) or not isinstance(response.data, dict):
            return response
        answer = self._answer(otlp.error_status(response.status_code, response.data), response.status_code)
        for header, value in response.items():
            if header.lower() not in ("content-type", "content-length"):
                answer[header] = value
        return answer


class OtlpTracesAPI(_OtlpAPIView):
    signal = "traces"

    @_otlp_schema("traces")
    def post(self, request: GatewayRequest) -> HttpResponse:
        return self.export(request)


class OtlpLogsAPI(_OtlpAPIView):
    signal = "logs"

    @_otlp_schema("logs")
    def post(self, request: GatewayRequest) -> HttpResponse:
        return self.export(request)
