"""LiteLLM proxy's logging payload (its StandardLoggingPayload, as the generic API logger posts it) → v1 usage records.

The generic API logger (`callback_type: generic_api`) batches one StandardLoggingPayload per LLM call and posts the
batch as a JSON array (`log_format: json_array`, its default), as one JSON object per line (`ndjson`) or one object
per request (`single`); all three are read. Only the fields below are used; the rest (messages, response, cost,
hidden params …) is ignored, and unknown fields never fail a payload.

The mapping (README, "LiteLLM"):
- relay id ← `id`; time ← `startTime`; latency ← `endTime − startTime`;
- Gatehouse key ← `metadata.user_api_key_auth_metadata.gatehouse_key_id` — the metadata the operator gives a LiteLLM
  virtual key (`/key/generate {"metadata": {"gatehouse_key_id": "key_…"}}`) — else `metadata.user_api_key_alias`,
  the key's alias (older LiteLLM versions log no key metadata). Never the requester's metadata: a caller sets that
  per request, and could bill another team;
- service ← `model_group` (the proxy's public model name), else `model`, matched to a catalog LLM service by id or
  name (formats.Catalog.llm_service);
- method ← `call_type` (completion → chat.completions …); tokens ← `prompt_tokens`, `completion_tokens`;
- status and error class ← `status` and `error_information` (LITELLM_ERRORS).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from analytics import ingest
from analytics.formats import (
    ENDPOINT_ID_MAX,
    KEY_ID_MAX,
    METHOD_MAX,
    NO_ENDPOINT,
    NO_KEY,
    Catalog,
    Converted,
    error_class_for_status,
    fitted,
    key_endpoints,
    relay_id,
    safe_or,
)

KEY_METADATA_FIELD = "gatehouse_key_id"  # in the virtual key's metadata (metadata.user_api_key_auth_metadata)
DEFAULT_REGION = "litellm"
Count = Annotated[int, msgspec.Meta(ge=0, le=ingest.INT32)]

# LiteLLM's exception classes (error_information.error_class), by who caused the failure. A class not listed goes by
# its status code (4xx the user's, 502/503/504 the upstream's), and is otherwise the gateway's own (LiteLLM's).
USER_ERRORS = frozenset({
    "AuthenticationError", "PermissionDeniedError", "BadRequestError", "InvalidRequestError", "NotFoundError",
    "UnprocessableEntityError", "ContextWindowExceededError", "ContentPolicyViolationError", "RejectedRequestError",
    "UnsupportedParamsError", "RateLimitError", "BudgetExceededError", "GuardrailRaisedException",
    "BlockedPiiEntityError",
})  # fmt: skip
UPSTREAM_ERRORS = frozenset({
    "Timeout", "APITimeoutError", "APIConnectionError", "APIError", "APIResponseValidationError",
    "ServiceUnavailableError", "InternalServerError", "BadGatewayError", "MidStreamFallbackError",
})  # fmt: skip
# The HTTP status each class stands for, when error_information.error_code does not say.
ERROR_STATUS = {
    "AuthenticationError": 401, "PermissionDeniedError": 403, "NotFoundError": 404, "UnprocessableEntityError": 422,
    "RateLimitError": 429, "Timeout": 408, "APITimeoutError": 408, "ServiceUnavailableError": 503,
    "BadGatewayError": 502, "BudgetExceededError": 400, "BadRequestError": 400, "InvalidRequestError": 400,
    "ContextWindowExceededError": 400, "ContentPolicyViolationError": 400, "RejectedRequestError": 400,
    "UnsupportedParamsError": 400, "GuardrailRaisedException": 400, "BlockedPiiEntityError": 400,
}  # fmt: skip
# LiteLLM's call types (async twins are prefixed with "a") → the catalog's LLM methods and OpenAI-style names.
CALL_TYPES = {
    "completion": "chat.completions", "text_completion": "completions", "embedding": "embeddings",
    "responses": "responses", "anthropic_messages": "messages", "image_generation": "images.generations",
    "transcription": "audio.transcriptions", "speech": "audio.speech", "moderation": "moderations",
    "rerank": "rerank",
}  # fmt: skip


class _ErrorInformation(msgspec.Struct):
    error_code: str | int | None = None
    error_class: str | None = None


class _Metadata(msgspec.Struct):
    user_api_key_alias: str | None = None
    user_api_key_auth_metadata: dict[str, Any] | None = None


class Payload(msgspec.Struct):
    """The part of LiteLLM's StandardLoggingPayload a usage record needs. Unknown fields are ignored."""

    id: Annotated[str, msgspec.Meta(min_length=1)]
    start_time: float | str = msgspec.field(name="startTime")
    end_time: float | str = msgspec.field(name="endTime")
    model: str = ""
    model_group: str | None = None
    call_type: str = ""
    status: str | None = None  # "success" / "failure"; payloads of older versions have none
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    metadata: _Metadata | None = None
    error_str: str | None = None
    error_information: _ErrorInformation | None = None


def parse(body: bytes) -> list[Any]:
    """The payloads of a body in any of the generic logger's formats: a JSON array, one object, or NDJSON."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        try:  # log_format: ndjson — one payload a line
            data = [msgspec.json.decode(line) for line in body.splitlines() if line.strip()]
        except msgspec.DecodeError as error:
            raise ingest.IngestError(
                400, "invalid_json", f"The body is not JSON (an array of LiteLLM logging payloads): {error}."
            ) from None
    if isinstance(data, dict):  # log_format: single
        data = [data]
    if not isinstance(data, list):
        raise ingest.IngestError(
            400, "invalid_payload", "The body must be a JSON array (or object, or NDJSON) of LiteLLM logging payloads."
        )
    if len(data) > ingest.MAX_RECORDS:
        raise ingest.too_large()
    return data


def convert(items: list[Any], *, catalog: Catalog, region: str) -> Converted:
    """Every payload as a v1 record, or as a refusal with its index and reason."""
    payloads: list[tuple[str, Payload | None, str]] = []
    for index, item in enumerate(items):
        try:
            payloads.append((f"[{index}]", msgspec.convert(item, Payload), ""))
        except msgspec.ValidationError as error:
            payloads.append((f"[{index}]", None, str(error)))
    keys = [_key_id(payload) for _source, payload, _reason in payloads if payload is not None]
    endpoints = key_endpoints(keys)
    converted = Converted()
    for source, payload, reason in payloads:
        if payload is None:
            converted.refuse(source, reason)
            continue
        try:
            record = _record(payload, catalog=catalog, endpoints=endpoints, region=region)
        except ValueError as error:
            converted.refuse(source, str(error))
            continue
        converted.add(source, record)
    return converted


def _key_id(payload: Payload) -> str:
    metadata = payload.metadata or _Metadata()
    from_key = (metadata.user_api_key_auth_metadata or {}).get(KEY_METADATA_FIELD)
    for value in (from_key, metadata.user_api_key_alias):
        if isinstance(value, str) and value.strip():
            return fitted(value.strip(), KEY_ID_MAX)
    return NO_KEY


def _time(value: float | str, name: str) -> datetime:
    """LiteLLM logs Unix seconds (a float); a payload serialised from datetimes has ISO 8601, naive read as UTC."""
    try:
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.strip())
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if math.isfinite(value):
            return datetime.fromtimestamp(value, tz=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise ValueError(f"{name}: expected Unix seconds or an ISO 8601 time, got {value!r}")


def _outcome(payload: Payload) -> tuple[int, str | None]:
    """HTTP status and error class: 200 for a success; for a failure, LiteLLM's status code (else its class's) and
    who caused it, by the exception class (USER_ERRORS, UPSTREAM_ERRORS), else by the status code."""
    info = payload.error_information or _ErrorInformation()
    failed = payload.status == "failure" if payload.status else bool(payload.error_str or info.error_class)
    if not failed:
        return 200, None
    name = (info.error_class or "").rsplit(".", 1)[-1]
    code = str(info.error_code or "").strip()
    status = int(code) if code.isascii() and code.isdigit() and 100 <= int(code) <= 599 else ERROR_STATUS.get(name, 500)
    if name in USER_ERRORS:
        return status, "user"
    if name in UPSTREAM_ERRORS:
        return status, "upstream"
    if status < 400:  # a failure that says it succeeded: LiteLLM's own
        return 500, "gateway"
    return status, error_class_for_status(status) or "gateway"  # a class not listed: its status says who


def _method(call_type: str) -> str:
    name = call_type.removeprefix("litellm.")
    if not name:
        return "unknown"
    known = CALL_TYPES.get(name) or (CALL_TYPES.get(name[1:]) if name.startswith("a") else None)
    return known or safe_or(name, METHOD_MAX, "other")


def _record(payload: Payload, *, catalog: Catalog, endpoints: dict[str, str], region: str) -> dict[str, Any]:
    started = _time(payload.start_time, "startTime")
    ended = _time(payload.end_time, "endTime")
    key_id = _key_id(payload)
    model = payload.model_group or payload.model
    service = catalog.llm_service(payload.model_group, payload.model) or catalog.unknown_service(model)
    method = _method(payload.call_type)
    status, error_class = _outcome(payload)
    input_tokens = payload.prompt_tokens or 0
    output_tokens = payload.completion_tokens or 0
    ok = error_class is None
    return {
        "id": relay_id(payload.id, prefix="litellm"),
        "ts": started.isoformat(),
        "key_id": key_id,
        "endpoint_id": fitted(endpoints.get(key_id, NO_ENDPOINT), ENDPOINT_ID_MAX),
        "service": service,
        "method": method,
        "status": status,
        "error_class": error_class,
        # LiteLLM reads the wall clock at both ends: a clock step between them must not make a negative latency.
        "latency_ms": round(max(0.0, (ended - started).total_seconds() * 1000), 3),
        "req_bytes": 0,  # the payload carries no sizes
        "resp_bytes": 0,
        "units": catalog.units(service, method, input_tokens=input_tokens, output_tokens=output_tokens, ok=ok),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "region": region,
    }
