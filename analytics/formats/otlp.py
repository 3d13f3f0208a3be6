"""OpenTelemetry OTLP/HTTP logs and traces → v1 usage records, so an Envoy- or OTel-collector-based gateway exports
straight to Gatehouse.

Bodies are read with OpenTelemetry's own protobuf classes (opentelemetry-proto): binary protobuf with
`ParseFromString`, OTLP JSON with protobuf's `json_format` — after the one change OTLP JSON makes to protobuf's JSON
mapping, trace and span ids in hex rather than base64. Answers are OTLP's: an Export…ServiceResponse, with
`partial_success` counting the records set aside in the quarantine, and a google.rpc.Status for any refusal, in the
request's own encoding.

A span or log record is a relay when its own attributes carry `gatehouse.key_id`; any other (an upstream client
span, an access log of something else) is not usage and is skipped. Attributes of the record win over its scope's,
which win over its resource's (`cloud.region` is usually a resource attribute). The attribute names are ATTRIBUTES.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import (  # type: ignore[import-untyped]  # googleapis-common-protos ships .pyi files but no py.typed
    code_pb2,
    error_details_pb2,
    status_pb2,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status as SpanStatus

from analytics import ingest
from analytics.formats import (
    ENDPOINT_ID_MAX,
    KEY_ID_MAX,
    METHOD_MAX,
    NO_ENDPOINT,
    NO_KEY,
    NO_SERVICE,
    REGION_MAX,
    SERVICE_MAX,
    Catalog,
    Converted,
    error_class_for_status,
    fitted,
    key_endpoints,
    relay_id,
    safe_or,
)

Signal = Literal["traces", "logs"]
Encoding = Literal["protobuf", "json"]
MEDIA_TYPES: dict[Encoding, str] = {"protobuf": "application/x-protobuf", "json": "application/json"}

# Gatehouse's attributes, and the OpenTelemetry semantic conventions read as fallbacks: record field ← attributes,
# the first present wins (README, "OpenTelemetry").
KEY_ID = "gatehouse.key_id"
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "key_id": (KEY_ID,),
    "endpoint_id": ("gatehouse.endpoint_id",),
    "service": ("gatehouse.service",),
    "model": ("gen_ai.request.model", "gen_ai.response.model"),
    "method": ("gatehouse.method", "rpc.method"),
    "operation": ("gen_ai.operation.name",),
    "status": ("http.response.status_code", "http.status_code"),
    "error_class": ("gatehouse.error_class",),
    "latency_ms": ("gatehouse.latency_ms",),
    "units": ("gatehouse.units",),
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "req_bytes": ("http.request.body.size",),
    "resp_bytes": ("http.response.body.size",),
    "region": ("gatehouse.region", "cloud.region"),
    "relay_id": ("gatehouse.relay_id",),
}
DEFAULT_REGION = "otlp"
# gen_ai.operation.name → the catalog's LLM method names.
OPERATIONS = {"chat": "chat.completions", "text_completion": "completions", "embeddings": "embeddings"}
ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# google.rpc.Code for the HTTP statuses a refusal can have (OTLP leaves Status.code to the server).
RPC_CODES = {400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED,
             404: code_pb2.NOT_FOUND, 405: code_pb2.UNIMPLEMENTED, 409: code_pb2.ALREADY_EXISTS,
             413: code_pb2.RESOURCE_EXHAUSTED, 415: code_pb2.INVALID_ARGUMENT, 422: code_pb2.INVALID_ARGUMENT,
             429: code_pb2.RESOURCE_EXHAUSTED, 503: code_pb2.UNAVAILABLE}  # fmt: skip


def encoding_of(content_type: str) -> Encoding | None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    for encoding, name in MEDIA_TYPES.items():
        if media_type == name:
            return encoding
    return None


# --- reading ----------------------------------------------------------------------------------------


def parse(body: bytes, *, signal: Signal, encoding: Encoding) -> ExportTraceServiceRequest | ExportLogsServiceRequest:
    """The Export…ServiceRequest in the body; a 400 IngestError when it is not one."""
    request = ExportTraceServiceRequest() if signal == "traces" else ExportLogsServiceRequest()
    name = type(request).__name__
    try:
        if encoding == "protobuf":
            request.ParseFromString(body)
        else:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise ValueError("the body is not a JSON object")
            json_format.ParseDict(_ids_as_base64(document), request, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        detail = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        raise ingest.IngestError(
            400, "invalid_otlp", f"The body is not an OTLP {name} ({encoding}): {detail}."
        ) from None
    return request


def _ids_as_base64(value: Any) -> Any:
    """OTLP JSON writes trace and span ids in hex where protobuf's JSON mapping has base64 (OTLP spec, "JSON Protobuf
    Encoding"); turn them back so json_format reads the bytes they stand for."""
    if isinstance(value, list):
        return [_ids_as_base64(item) for item in value]
    if not isinstance(value, dict):
        return value
    converted = {}
    for key, item in value.items():
        if key in ID_FIELDS and isinstance(item, str):
            try:
                item = base64.b64encode(bytes.fromhex(item)).decode()
            except ValueError:
                raise ValueError(f"{key} {item[:40]!r} is not hex") from None
        converted[key] = _ids_as_base64(item)
    return converted


# --- converting ---------------------------------------------------------------------------------------


def _attributes(pairs: Any) -> dict[str, AnyValue]:
    return {pair.key: pair.value for pair in pairs}


def _python(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_python(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {pair.key: _python(pair.value) for pair in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return None if kind is None else getattr(value, kind)


class _Attributes:
    """A record's attributes over its scope's and resource's, read by record field (ATTRIBUTES)."""

    def __init__(self, *layers: dict[str, AnyValue]):
        self.values: dict[str, AnyValue] = {}
        for layer in layers:
            self.values.update(layer)

    def get(self, name: str) -> Any:
        for attribute in ATTRIBUTES[name]:
            if attribute in self.values:
                return _python(self.values[attribute])
        return None

    def text(self, name: str) -> str | None:
        value = self.get(name)
        return value if isinstance(value, str) and value.strip() else None

    def integer(self, name: str) -> Any:
        """An int attribute; an integral double or a string of digits is read as one (some exporters stringify).
        Anything else is passed on as it is, for ingestion to refuse with the field's name."""
        value = self.get(name)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            return int(value.strip())
        return value

    def number(self, name: str) -> Any:
        value = self.get(name)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return value


def _rfc3339(nanoseconds: int) -> str:
    return (EPOCH + timedelta(microseconds=nanoseconds // 1000)).isoformat()


def convert(request: ExportTraceServiceRequest | ExportLogsServiceRequest, *, catalog: Catalog) -> Converted:
    """Every relay span or log record as a v1 record, or as a refusal naming it (`resourceSpans[0]…spans[3]`)."""
    items: list[tuple[str, Span | LogRecord, _Attributes]] = []
    converted = Converted()
    if isinstance(request, ExportTraceServiceRequest):
        for r, resource_spans in enumerate(request.resource_spans):
            resource = _attributes(resource_spans.resource.attributes)
            for s, scope_spans in enumerate(resource_spans.scope_spans):
                scope = _attributes(scope_spans.scope.attributes)
                for n, span in enumerate(scope_spans.spans):
                    own = _attributes(span.attributes)
                    if KEY_ID not in own:
                        converted.ignored += 1
                        continue
                    where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]"
                    items.append((where, span, _Attributes(resource, scope, own)))
    else:
        for r, resource_logs in enumerate(request.resource_logs):
            resource = _attributes(resource_logs.resource.attributes)
            for s, scope_logs in enumerate(resource_logs.scope_logs):
                scope = _attributes(scope_logs.scope.attributes)
                for n, log_record in enumerate(scope_logs.log_records):
                    own = _attributes(log_record.attributes)
                    if KEY_ID not in own:
                        converted.ignored += 1
                        continue
                    where = f"resourceLogs[{r}].scopeLogs[{s}].logRecords[{n}]"
                    items.append((where, log_record, _Attributes(resource, scope, own)))
    if len(items) > ingest.MAX_RECORDS:
        raise ingest.too_large()
    endpoints = key_endpoints(key for _where, _item, attributes in items if (key := _valid_key_id(attributes)))
    for where, item, attributes in items:
        try:
            record = _record(item, attributes, catalog=catalog, endpoints=endpoints)
        except ValueError as error:
            converted.refuse(where, str(error))
            continue
        converted.add(where, record)
    return converted


def _key_id(attributes: _Attributes) -> str:
    value = attributes.get("key_id")
    if not isinstance(value, str):
        raise ValueError(f"{KEY_ID}: expected a string, got {_kind(value)}")
    return fitted(value.strip(), KEY_ID_MAX) if value.strip() else NO_KEY


def _valid_key_id(attributes: _Attributes) -> str | None:
    try:
        return _key_id(attributes)
    except ValueError:
        return None  # refused with its reason when its record is built


def _kind(value: Any) -> str:
    return {list: "an array", dict: "a key-value list", bool: "a bool", int: "an int", float: "a double"}.get(
        type(value), type(value).__name__
    )


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _record(
    item: Span | LogRecord, attributes: _Attributes, *, catalog: Catalog, endpoints: dict[str, str]
) -> dict[str, Any]:
    """One relay's record. What the record type can check (a string where an int belongs, an unknown error class) is
    passed on as it is, for ingestion to refuse naming the field; what it cannot is refused here."""
    name: str | None = None
    if isinstance(item, Span):
        name = item.name
        if not item.start_time_unix_nano or not item.end_time_unix_nano:
            raise ValueError("a span needs startTimeUnixNano and endTimeUnixNano")
        if item.end_time_unix_nano < item.start_time_unix_nano:
            raise ValueError("endTimeUnixNano is before startTimeUnixNano")
        started = item.start_time_unix_nano
        latency = attributes.number("latency_ms")
        if latency is None:
            latency = (item.end_time_unix_nano - item.start_time_unix_nano) / 1_000_000
        failed = item.status.code == SpanStatus.STATUS_CODE_ERROR
    else:
        started = item.time_unix_nano or item.observed_time_unix_nano
        if not started:
            raise ValueError("a log record needs timeUnixNano (or observedTimeUnixNano)")
        latency = attributes.number("latency_ms")
        if latency is None:
            raise ValueError(f"{ATTRIBUTES['latency_ms'][0]}: a log record needs this attribute (milliseconds)")
        failed = item.severity_number >= SeverityNumber.SEVERITY_NUMBER_ERROR
    given_id = attributes.get("relay_id")
    if _given(given_id) and not isinstance(given_id, str):
        raise ValueError(f"{ATTRIBUTES['relay_id'][0]}: expected a string, got {_kind(given_id)}")
    source_id = given_id or item.span_id.hex()
    if not source_id:
        raise ValueError(f"{ATTRIBUTES['relay_id'][0]}: a log record needs this attribute, or the spanId of its relay")
    key_id = _key_id(attributes)

    service = attributes.get("service")
    if not _given(service):
        model = attributes.text("model")
        service = (catalog.llm_service(model) or catalog.unknown_service(model)) if model else NO_SERVICE
    elif isinstance(service, str):
        service = fitted(service, SERVICE_MAX)
    method = attributes.get("method")
    if isinstance(method, str) and method:
        method = safe_or(method, METHOD_MAX, "other")
    elif not _given(method):
        operation = attributes.text("operation")
        method = (OPERATIONS.get(operation, operation) if operation else None) or name or "unknown"
        method = safe_or(method, METHOD_MAX, "other")
    status = attributes.integer("status")
    if status is None:
        status = 500 if failed else 200
    error_class = attributes.get("error_class")
    if not _given(error_class):
        error_class = error_class_for_status(status) if isinstance(status, int) else None
    input_tokens = attributes.integer("input_tokens")
    output_tokens = attributes.integer("output_tokens")
    units = attributes.integer("units")
    if units is None and isinstance(service, str) and isinstance(method, str):
        ok = error_class is None and isinstance(status, int) and status < 400
        tokens = [value if isinstance(value, int) else 0 for value in (input_tokens, output_tokens)]
        units = catalog.units(service, method, input_tokens=tokens[0], output_tokens=tokens[1], ok=ok)
    endpoint_id = attributes.get("endpoint_id")
    if not _given(endpoint_id):
        endpoint_id = fitted(endpoints.get(key_id, NO_ENDPOINT), ENDPOINT_ID_MAX)
    region = attributes.get("region")
    if not _given(region):
        region = DEFAULT_REGION
    return {
        "id": relay_id(source_id, prefix="otlp"),
        "ts": _rfc3339(started),
        "key_id": key_id,
        "endpoint_id": endpoint_id,
        "service": service,
        "method": method,
        "status": status,
        "error_class": error_class,
        "latency_ms": round(latency, 3) if isinstance(latency, float) else latency,
        "req_bytes": _or_zero(attributes.integer("req_bytes")),
        "resp_bytes": _or_zero(attributes.integer("resp_bytes")),
        "units": units,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "region": region[:REGION_MAX] if isinstance(region, str) else region,
    }


def _or_zero(value: Any) -> Any:
    return 0 if value is None else value


# --- answering ----------------------------------------------------------------------------------------


def export_response(
    *, signal: Signal, accepted: ingest.Accepted | None
) -> ExportTraceServiceResponse | ExportLogsServiceResponse:
    """OTLP's success answer; `partial_success` counts the records quarantined (stored for the operator, counted for
    no team) and says why. Left unset when everything was counted, as the spec requires."""
    if signal == "traces":
        traces = ExportTraceServiceResponse()
        rejected = sum(accepted.quarantined.values()) if accepted else 0
        if rejected and accepted:
            traces.partial_success.rejected_spans = rejected
            traces.partial_success.error_message = _quarantine_message(accepted, "spans")
        return traces
    logs = ExportLogsServiceResponse()
    rejected = sum(accepted.quarantined.values()) if accepted else 0
    if rejected and accepted:
        logs.partial_success.rejected_log_records = rejected
        logs.partial_success.error_message = _quarantine_message(accepted, "log records")
    return logs


def _quarantine_message(accepted: ingest.Accepted, noun: str) -> str:
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(accepted.quarantined.items()))
    total = sum(accepted.quarantined.values())
    return (
        f"{total} of {total + accepted.records} {noun} quarantined in batch {accepted.batch_id} ({reasons}): "
        "their key, endpoint or service is not Gatehouse's, so no team is billed for them. "
        f"Check the {KEY_ID}, gatehouse.service and gen_ai.request.model attributes."
    )


def error_status(status: int, body: dict[str, Any]) -> Any:
    """A refusal as the google.rpc.Status OTLP answers 4xx and 5xx with: the machine-readable code in an ErrorInfo
    (the same `code` as the NDJSON path's JSON bodies) and, for invalid records, a BadRequest naming each."""
    answer = status_pb2.Status(code=RPC_CODES.get(status, code_pb2.UNKNOWN), message=str(body.get("detail", "")))
    metadata = {name: str(value) for name, value in body.items() if name not in ("code", "detail", "errors")}
    answer.details.add().Pack(
        error_details_pb2.ErrorInfo(reason=str(body.get("code", "error")), domain="gatehouse", metadata=metadata)
    )
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=str(entry.get("source") or f"line {entry.get('line')}"), description=str(entry.get("reason"))
            )
            for entry in errors
            if isinstance(entry, dict)
        ]
        answer.details.add().Pack(error_details_pb2.BadRequest(field_violations=violations))
    return answer


def serialize(message: Message, encoding: Encoding) -> bytes:
    if encoding == "protobuf":
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()
