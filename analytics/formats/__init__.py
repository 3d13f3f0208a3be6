"""The field's usage formats — LiteLLM's logging payload (formats.litellm) and OpenTelemetry's OTLP (formats.otlp) —
as converters into the gateway contract's v1 usage records.

A converter only translates. It turns a payload into the records `POST /api/gateway/v1/usage` takes (NDJSON, one
record per relay) and hands them to analytics.ingest.ingest, the one path that validates, quarantines, stores a
batch exactly once and answers replays. So every guarantee of the NDJSON path holds here by construction, and
there is no second ingestion path to keep in step.

What a format cannot express is filled in the same way for both (README, "The field's usage formats"):
- a payload that names no Gatehouse key gets key id NO_KEY and is quarantined as `unknown_key`;
- a model that is no catalog LLM service keeps its own name as the service and is quarantined as `unknown_service`;
- the endpoint is the key's own when the format has no field for it (a key belongs to one endpoint);
- units, when the payload carries none, come from the catalog as billing rates them: an LLM relay's tokens at the
  model's list prices (1,000,000 units = $1), an RPC relay's compute units for its method; a failed relay has none.

Idempotency: neither LiteLLM nor an OpenTelemetry exporter sends an Idempotency-Key, and both resend the very same
bytes when they retry. The key is therefore derived from the SHA-256 of the decompressed request body, unless the
sender gives one (a header value that never changes between batches would make every batch after the first a replay:
only a sender that sets one per batch should).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import msgspec

from analytics import ingest
from analytics.models import IngestBatch
from endpoints.models import ApiKey, GatewayCredential, Service
from endpoints.selectors import service_list

# Placeholders for what a payload does not say: ingestion quarantines the record with a reason that names them.
NO_KEY = "(none)"
NO_ENDPOINT = "(none)"
NO_SERVICE = "(none)"


def _max_length(name: str) -> int:
    """A text field's maximum length, as the record type (analytics.ingest.UsageRecord) declares it."""
    record = msgspec.inspect.type_info(ingest.UsageRecord)
    assert isinstance(record, msgspec.inspect.StructType)
    for record_field in record.fields:
        if record_field.name == name and isinstance(record_field.type, msgspec.inspect.StrType):
            return record_field.type.max_length or 0
    raise LookupError(name)


# The record's limits: a value longer than its field is cut (and marked, where the field may hold any text), so that
# it is still named in the quarantine instead of refusing the whole batch.
KEY_ID_MAX = _max_length("key_id")
ENDPOINT_ID_MAX = _max_length("endpoint_id")
SERVICE_MAX = _max_length("service")
RELAY_ID_MAX = _max_length("id")
METHOD_MAX = _max_length("method")
REGION_MAX = _max_length("region")
SAFE_TEXT = ingest.SAFE_TEXT
MAX_REPORTED_ERRORS = ingest.MAX_REPORTED_ERRORS


def fitted(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters and marked with … when it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_or(text: str, limit: int, fallback: str) -> str:
    """`text` when it is printable ASCII within `limit` characters (relay ids, methods and regions must be), else
    `fallback`."""
    return text if len(text) <= limit and SAFE_TEXT.fullmatch(text) else fallback


def relay_id(source_id: str, *, prefix: str) -> str:
    """The payload's own id as the relay id; one the contract cannot hold (too long, not printable ASCII) becomes a
    digest of it, so the same payload always gets the same relay id."""
    if source_id and len(source_id) <= RELAY_ID_MAX and SAFE_TEXT.fullmatch(source_id):
        return source_id
    return f"{prefix}-{hashlib.sha256(source_id.encode()).hexdigest()[:40]}"


def error_class_for_status(status: int) -> str | None:
    """Who caused a failure when the payload does not say: the client for 4xx, the upstream for 502/503/504 (bad
    gateway, unavailable, timeout are what an upstream hop answers), the gateway for any other 5xx."""
    if status < 400:
        return None
    if status < 500:
        return "user"
    return "upstream" if status in (502, 503, 504) else "gateway"


def _normal(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


class Catalog:
    """The service catalog as the converters need it: LLM services by id or name, and units as billing rates them."""

    def __init__(self, services: Iterable[Service]):
        self.services = {service.id: service for service in services}
        self._llm: dict[str, str] = {}
        for service in self.services.values():
            if service.is_llm:
                self._llm.setdefault(_normal(service.id), service.id)
                self._llm.setdefault(_normal(service.name), service.id)

    @classmethod
    def load(cls) -> Catalog:
        return cls(service_list(include_retired=True))

    def llm_service(self, *models: str | None) -> str | None:
        """The catalog LLM service a model name stands for: the first of `models` that, whole or after its last `/`
        (a provider prefix, `together_ai/meta-llama/…`), equals a service id or name — case, spaces and underscores
        aside ("Llama 3.1 8B Instruct" is `llama-3.1-8b-instruct`)."""
        for model in models:
            if not model:
                continue
            for candidate in (model, model.rsplit("/", 1)[-1]):
                found = self._llm.get(_normal(candidate))
                if found:
                    return found
        return None

    def unknown_service(self, model: str | None) -> str:
        """The service of a record whose model is no catalog LLM service: the model's own name (so the quarantine
        says which), never the id of another catalog service (a model group named `base` is not Base's RPC)."""
        if not model:
            return NO_SERVICE
        name = fitted(model, SERVICE_MAX)
        return fitted(f"llm:{name}", SERVICE_MAX) if name in self.services else name

    def units(self, service_id: str, method: str, *, input_tokens: int, output_tokens: int, ok: bool) -> int:
        """Billable units of one relay, as billing.rating counts them; a failed relay or an unknown service has none."""
        service = self.services.get(service_id)
        if service is None or not ok:
            return 0
        if service.is_llm:
            input_price, output_price = service.token_prices
            value = input_tokens * (input_price or Decimal(0)) + output_tokens * (output_price or Decimal(0))
            return int(Decimal(value).to_integral_value(ROUND_HALF_UP))
        return service.compute_units_for(method)


def key_endpoints(key_ids: Iterable[str]) -> dict[str, str]:
    """key id → its endpoint's public id, for formats that name only the key (revoked keys included: ingestion
    decides what a key's record is worth, as for the NDJSON path)."""
    wanted = {key_id for key_id in key_ids if key_id != NO_KEY}
    if not wanted:
        return {}
    return dict(ApiKey.objects.filter(key_id__in=wanted).values_list("key_id", "endpoint__public_id"))


@dataclass
class Converted:
    """A payload as v1 records, with where each came from (`resourceSpans[0].scopeSpans[0].spans[3]`, `[2]`) for
    error messages, the items refused, and the items that are no relay (an OTLP span without a key attribute)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    ignored: int = 0

    def add(self, source: str, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.sources.append(source)

    def refuse(self, source: str, reason: str) -> None:
        """`line` counts the payload's relay items, refused ones included (so it names the same item either way)."""
        self.refused += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": len(self.records) + self.refused, "source": source, "reason": reason})


def idempotency_key(*, header: str | None, kind: str, body: bytes) -> tuple[str, bool]:
    """The batch's Idempotency-Key — the sender's, else derived from the body — and whether it was derived."""
    given = (header or "").strip()
    if given:
        if len(given) > 128 or not given.isprintable():
            raise ingest.IngestError(
                400,
                "idempotency_key_invalid",
                "An Idempotency-Key must be 1–128 printable characters; leave it out to have it derived from the body.",
            )
        return given, False
    return f"{kind}:sha256:{hashlib.sha256(body).hexdigest()}", True


def ingest_converted(*, gateway: GatewayCredential, converted: Converted, key: str, derived: bool) -> ingest.Accepted:
    """Feed converted records to analytics.ingest.ingest, with its refusals pointing at the payload's own items."""
    if converted.errors:
        raise ingest.IngestError(
            422,
            "invalid_records",
            "Some records are invalid, so nothing in this batch was stored. Fix them and send the batch again.",
            errors=converted.errors,
            errors_truncated=len(converted.errors) >= MAX_REPORTED_ERRORS,
        )
    if len(converted.records) > ingest.MAX_RECORDS:
        raise ingest.too_large()
    # Deterministic bytes for the same payload (dicts keep their order): a replay compares equal.
    body = b"\n".join(msgspec.json.encode(record) for record in converted.records)
    try:
        return ingest.ingest(gateway=gateway, idempotency_key=key, body=body)
    except ingest.IngestError as error:
        errors = error.body.get("errors")
        if error.status == 422 and isinstance(errors, list):
            error.body["errors"] = [_at_source(entry, converted.sources) for entry in errors]
        elif error.status == 409 and derived:
            # The key is the digest of this very payload, so the batch stored under it is this payload; it only
            # converted differently then (the catalog or a key changed since). Answer what was answered.
            replay = _replay(gateway, key, error.body.get("batch_id"))
            if replay is not None:
                return replay
        raise


def _at_source(entry: dict[str, Any], sources: list[str]) -> dict[str, Any]:
    line = entry.get("line")
    if isinstance(line, int) and 1 <= line <= len(sources):
        return {"line": line, "source": sources[line - 1], "reason": entry.get("reason", "")}
    return entry


def _replay(gateway: GatewayCredential, key: str, batch_id: object) -> ingest.Accepted | None:
    if not isinstance(batch_id, int):
        return None
    stored = IngestBatch.objects.filter(pk=batch_id, gateway=gateway).values_list("body_sha256", flat=True).first()
    return None if stored is None else ingest.existing_batch(gateway, key, stored)
