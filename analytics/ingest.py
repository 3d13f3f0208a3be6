"""Usage ingestion: read (and gunzip, bounded), decode and validate a batch of NDJSON records, then
store it — the batch row and every record (binary COPY) — in one transaction.

The hot path avoids per-record ORM and serializer work: msgspec decodes each line straight into
a typed struct (that is the type and range validation), and rows go to PostgreSQL with binary COPY.

A malformed record refuses the whole batch (422): the gateway has a bug to fix. A well-formed record
that names a key, endpoint or service we cannot attribute (a key whose team was just deleted, say)
does not: it goes to the quarantine the operator sees, counted in the 202, so one tenant's stale
record never blocks another tenant's usage and nothing is dropped silently.

PostgreSQL is the only store a batch needs: Redis (cache and broker) being down only delays the
aggregation nudge, which the beat sweeper makes good when Redis is back.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, NamedTuple, TypedDict

import msgspec
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from analytics.models import ERROR_CLASSES, RELAY_COLUMNS, IngestBatch, QuarantinedRecord, QuarantineReason
from analytics.partitions import ensure_all_partitions_today
from endpoints.models import ApiKey, GatewayCredential, Service

logger = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024  # decompressed
MAX_RECORDS = 50_000
MAX_FUTURE = timedelta(minutes=5)
MAX_AGE = timedelta(days=35)
MAX_REPORTED_ERRORS = 100
INT32 = 2**31 - 1
SERVICE_IDS_TTL_SECONDS = 60.0
GZIP_MAGIC = b"\x1f\x8b"
# Relay ids, methods and regions end up in URLs, CSV files and log lines: printable ASCII only (space to ~).
SAFE_TEXT = re.compile(r"[\x20-\x7e]+")
SAFE_FIELDS = ("id", "method", "region")


class UsageRecord(msgspec.Struct):
    """One relay, as the gateway contract (v1) defines it. Unknown fields are ignored (forward compatible)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    ts: int | Annotated[datetime, msgspec.Meta(tz=True)]
    key_id: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    endpoint_id: Annotated[str, msgspec.Meta(min_length=1, max_length=24)]
    service: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    method: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    status: Annotated[int, msgspec.Meta(ge=100, le=599)]
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=3_600_000)]
    req_bytes: Annotated[int, msgspec.Meta(ge=0, le=INT32)]
    resp_bytes: Annotated[int, msgspec.Meta(ge=0, le=INT32)]
    units: Annotated[int, msgspec.Meta(ge=0, le=INT32)]
    region: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    error_class: Literal["user", "upstream", "gateway"] | None = None
    input_tokens: Annotated[int, msgspec.Meta(ge=0, le=INT32)] | None = None
    output_tokens: Annotated[int, msgspec.Meta(ge=0, le=INT32)] | None = None


_decoder = msgspec.json.Decoder(UsageRecord)
_list_decoder = msgspec.json.Decoder(list[UsageRecord])

COPY_COLUMNS = ", ".join(RELAY_COLUMNS)  # _copy_rows writes each row's values in this order
COPY_TYPES = list(RELAY_COLUMNS.values())


class RecordError(TypedDict):
    """Why one line of a batch was refused (the 422 lists them)."""

    line: int
    reason: str


class IngestError(Exception):
    """A refusal with an HTTP status and a machine-readable body."""

    def __init__(self, status: int, code: str, detail: str, **extra: object):
        super().__init__(detail)
        self.status = status
        self.body = {"code": code, "detail": detail, **extra}


@dataclass
class Accepted:
    batch_id: int
    records: int
    replayed: bool = False
    quarantined: dict[str, int] = field(default_factory=dict)  # reason → records set aside
    timings: dict[str, float] = field(default_factory=dict)

    def body(self) -> dict[str, object]:
        return {
            "batch_id": self.batch_id,
            "records": self.records,
            "quarantined": sum(self.quarantined.values()),
            "quarantine_reasons": dict(sorted(self.quarantined.items())),
            "status": "accepted",
            "replayed": self.replayed,
        }


# --- reading the body -----------------------------------------------------------------------


def read_body(chunks: Iterator[bytes], *, gzipped: bool) -> bytes:
    """The request body, decompressed if gzipped, refused past MAX_BYTES without ever holding more."""
    out = bytearray()
    if not gzipped:
        for chunk in chunks:
            out += chunk
            if len(out) > MAX_BYTES:
                raise too_large()
        return bytes(out)
    # A gzip body may hold several members one after the other (`cat a.gz b.gz`, or a gateway that
    # compresses as it goes): every member is part of the body, and anything else after one is refused.
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if inflater.eof:  # the previous member ended: what follows must be the next one
                    if not GZIP_MAGIC.startswith(data[:2]):
                        raise IngestError(
                            400, "invalid_gzip", "The body has bytes after its gzip data that are not a gzip member."
                        )
                    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                out += inflater.decompress(data, MAX_BYTES + 1 - len(out))
                if len(out) > MAX_BYTES:
                    raise too_large()
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        if not inflater.eof:
            raise IngestError(400, "invalid_gzip", "The gzip body is truncated.")
    except zlib.error as error:
        raise IngestError(400, "invalid_gzip", f"The body is not valid gzip: {error}.") from None
    return bytes(out)


def too_large() -> IngestError:
    return IngestError(
        413,
        "payload_too_large",
        f"A batch may hold at most {MAX_BYTES // (1024 * 1024)} MB (decompressed) and {MAX_RECORDS:,} records; "
        "split it and send the parts with their own Idempotency-Key.",
        max_bytes=MAX_BYTES,
        max_records=MAX_RECORDS,
    )


# --- decoding and validating ----------------------------------------------------------------


class _Row(NamedTuple):
    """A decoded record with its line number and its timestamp as a datetime (a tuple: cheap at 50k/s)."""

    line: int
    record: UsageRecord
    ts: datetime


_service_ids: tuple[float, frozenset[str]] = (0.0, frozenset())


def _services() -> frozenset[str]:
    """The catalog's service ids, kept in the process for a minute (a handful of ids; no Redis round trip)."""
    global _service_ids
    loaded_at, known = _service_ids
    if time.monotonic() - loaded_at > SERVICE_IDS_TTL_SECONDS or not known:
        known = frozenset(Service.objects.values_list("id", flat=True))
        _service_ids = (time.monotonic(), known)
    return known


def decode(body: bytes, *, now: datetime) -> tuple[list[_Row], list[RecordError]]:
    """Decode every line; return the rows and the per-line errors (first MAX_REPORTED_ERRORS)."""
    lines = body.split(b"\n")
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if len(numbered) > MAX_RECORDS:
        raise too_large()
    # JSON strings cannot hold raw control characters, so a pure-ASCII body without escapes or DEL has only
    # printable text in every string: the per-record check of SAFE_FIELDS is needed only otherwise.
    plain = body.isascii() and b"\\" not in body and b"\x7f" not in body
    records = _decode_all_at_once(numbered)
    if records is None:  # something is wrong somewhere: decode line by line to say where
        return _decode_line_by_line(numbered, now=now, plain=plain)
    return _check(zip((number for number, _ in numbered), records, strict=True), now=now, plain=plain)


def _decode_all_at_once(numbered: list[tuple[int, bytes]]) -> list[UsageRecord] | None:
    """The fast path for a valid batch: one decoder call for the whole body, as a JSON array."""
    if not numbered:
        return []
    try:
        records = _list_decoder.decode(b"[" + b",".join(line for _n, line in numbered) + b"]")
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    # A line holding two objects ('{..},{..}') would pass as two records: only one per line is NDJSON.
    return records if len(records) == len(numbered) else None


def _decode_line_by_line(
    numbered: list[tuple[int, bytes]], *, now: datetime, plain: bool
) -> tuple[list[_Row], list[RecordError]]:
    decoded: list[tuple[int, UsageRecord]] = []
    errors: list[RecordError] = []
    for number, line in numbered:
        try:
            decoded.append((number, _decoder.decode(line)))
        except msgspec.ValidationError as error:
            errors.append({"line": number, "reason": str(error)})
        except msgspec.DecodeError as error:
            errors.append({"line": number, "reason": f"not a JSON object: {error}"})
        if len(errors) >= MAX_REPORTED_ERRORS:
            return [], errors
    rows, more = _check(decoded, now=now, plain=plain)
    merged = sorted(errors + more, key=lambda error: error["line"])
    return rows, merged[:MAX_REPORTED_ERRORS]


def _unsafe_field(record: UsageRecord) -> str | None:
    for name in SAFE_FIELDS:
        if not SAFE_TEXT.fullmatch(getattr(record, name)):
            return name
    return None


def _check(
    decoded: Iterable[tuple[int, UsageRecord]], *, now: datetime, plain: bool = False
) -> tuple[list[_Row], list[RecordError]]:
    """Checks a record type cannot express: time window, printable ids and unique ids in the batch."""
    rows: list[_Row] = []
    errors: list[RecordError] = []
    earliest, latest = now - MAX_AGE, now + MAX_FUTURE
    seen_ids: set[str] = set()
    for number, record in decoded:
        ts = record.ts if isinstance(record.ts, datetime) else _from_epoch_ms(record.ts)
        unsafe = None if plain else _unsafe_field(record)
        if unsafe is not None:
            errors.append(
                {"line": number, "reason": f"{unsafe}: only printable ASCII characters (space to ~) are allowed"}
            )
        elif ts is None:
            errors.append({"line": number, "reason": "ts: epoch milliseconds out of range"})
        elif ts > latest:
            errors.append({"line": number, "reason": "ts is more than 5 minutes in the future"})
        elif ts < earliest:
            errors.append({"line": number, "reason": "ts is older than 35 days"})
        elif record.id in seen_ids:
            errors.append({"line": number, "reason": f"id {record.id!r} appears twice in this batch"})
        else:
            seen_ids.add(record.id)
            rows.append(_Row(number, record, ts))
            continue
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    return rows, errors


def _from_epoch_ms(value: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


class _Aside(NamedTuple):
    """A well-formed record that cannot be attributed or rated: stored in the quarantine, not the relay log."""

    row: _Row
    reason: str
    detail: str
    team_id: int | None


def resolve(rows: list[_Row]) -> tuple[dict[str, tuple[int, int, int, str]], list[_Aside]]:
    """key_id → (key pk, team id, endpoint pk, endpoint public id), for revoked keys and deleted endpoints too; and
    the records to set aside: an unknown key, a key of a deleted team, a key of another endpoint, an unknown service."""
    key_ids = {row.record.key_id for row in rows}
    keys: dict[str, tuple[int, int, int, str]] = {}
    closed: set[str] = set()  # keys of deleted teams: nobody is billed for them any more
    for key_id, pk, team_id, endpoint_pk, endpoint_public_id, team_deleted_at in ApiKey.objects.filter(
        key_id__in=key_ids
    ).values_list("key_id", "id", "team_id", "endpoint_id", "endpoint__public_id", "team__deleted_at"):
        keys[key_id] = (pk, team_id, endpoint_pk, endpoint_public_id)
        if team_deleted_at is not None:
            closed.add(key_id)
    services = _services()
    aside: list[_Aside] = []
    for row in rows:
        record = row.record
        known = keys.get(record.key_id)
        if known is None:
            aside.append(_Aside(row, QuarantineReason.UNKNOWN_KEY, f"unknown key_id {record.key_id!r}", None))
        elif record.key_id in closed:
            detail = f"key {record.key_id} belongs to a deleted team"
            aside.append(_Aside(row, QuarantineReason.TEAM_DELETED, detail, known[1]))
        elif known[3] != record.endpoint_id:
            detail = f"key {record.key_id} belongs to endpoint {known[3]}, not {record.endpoint_id}"
            aside.append(_Aside(row, QuarantineReason.ENDPOINT_MISMATCH, detail, known[1]))
        elif record.service not in services:
            aside.append(_Aside(row, QuarantineReason.UNKNOWN_SERVICE, f"unknown service {record.service!r}", known[1]))
    return keys, aside


# --- storing ----------------------------------------------------------------------------------


def existing_batch(gateway: GatewayCredential, idempotency_key: str, body_hash: str) -> Accepted | None:
    batch = IngestBatch.objects.filter(gateway=gateway, idempotency_key=idempotency_key).first()
    if batch is None:
        return None
    if batch.body_sha256 != body_hash:
        raise IngestError(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different body. Use a new key for a new batch.",
            batch_id=batch.id,
        )
    quarantined: dict[str, int] = {}
    if batch.quarantined_count:
        quarantined = dict(Counter(QuarantinedRecord.objects.filter(batch=batch).values_list("reason", flat=True)))
    return Accepted(batch_id=batch.id, records=batch.record_count, replayed=True, quarantined=quarantined)


def ingest(*, gateway: GatewayCredential, idempotency_key: str, body: bytes) -> Accepted:
    """Validate and durably store one batch. Returns only after the commit; raises IngestError on refusal."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    body_hash = hashlib.sha256(body).hexdigest()
    replay = existing_batch(gateway, idempotency_key, body_hash)
    if replay is not None:
        return replay
    now = timezone.now()
    rows, errors = decode(body, now=now)
    timings["decode"] = time.perf_counter() - started
    if not rows and not errors:
        raise IngestError(400, "empty_batch", "The body holds no records (one JSON object per line).")
    if errors:
        raise IngestError(
            422,
            "invalid_records",
            "Some records are invalid, so nothing in this batch was stored. Fix them and send the batch again.",
            errors=errors,
            errors_truncated=len(errors) >= MAX_REPORTED_ERRORS,
        )
    keys, aside = resolve(rows)
    kept = rows
    if aside:
        set_aside = {entry.row.line for entry in aside}
        kept = [row for row in rows if row.line not in set_aside]
    timings["validate"] = time.perf_counter() - started
    ensure_all_partitions_today()
    try:
        with transaction.atomic():
            batch = IngestBatch.objects.create(
                gateway=gateway,
                idempotency_key=idempotency_key,
                body_sha256=body_hash,
                record_count=len(kept),
                quarantined_count=len(aside),
                min_ts=min(row.ts for row in rows),
                max_ts=max(row.ts for row in rows),
                received_at=now,
            )
            _copy_rows(batch.id, kept, keys)
            if aside:
                _quarantine(batch, aside, now)
            transaction.on_commit(nudge_aggregation)
    except IntegrityError:
        # The same batch arrived twice at once: the other request stored it.
        replay = existing_batch(gateway, idempotency_key, body_hash)
        if replay is None:
            raise
        return replay
    timings["stored"] = time.perf_counter() - started
    if aside:
        logger.warning(
            "batch %s: %s of %s records quarantined", batch.id, len(aside), len(rows),
            extra={"batch_id": batch.id, "quarantined": len(aside), "gateway": gateway.name},
        )  # fmt: skip
    return Accepted(
        batch_id=batch.id,
        records=len(kept),
        quarantined=dict(Counter(entry.reason for entry in aside)),
        timings=timings,
    )


def _quarantine(batch: IngestBatch, aside: list[_Aside], now: datetime) -> None:
    QuarantinedRecord.objects.bulk_create(
        [
            QuarantinedRecord(
                batch=batch,
                gateway_id=batch.gateway_id,
                line=entry.row.line,
                reason=entry.reason,
                detail=entry.detail[:300],
                team_id=entry.team_id,
                relay_id=entry.row.record.id,
                key_id=entry.row.record.key_id,
                endpoint_id=entry.row.record.endpoint_id,
                service=entry.row.record.service,
                ts=entry.row.ts,
                record=msgspec.to_builtins(entry.row.record),
                received_at=now,
            )
            for entry in aside
        ],
        batch_size=2000,
    )


def _copy_rows(batch_id: int, rows: list[_Row], keys: dict[str, tuple[int, int, int, str]]) -> None:
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY analytics_relay ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(COPY_TYPES)
        write = copy.write_row
        classes = ERROR_CLASSES
        for row in rows:
            record = row.record
            key_pk, team_id, endpoint_pk, _public = keys[record.key_id]
            write(
                (
                    row.ts,
                    batch_id,
                    team_id,
                    endpoint_pk,
                    key_pk,
                    record.id,
                    record.service,
                    record.method,
                    record.region,
                    record.status,
                    classes[record.error_class],
                    record.latency_ms,
                    record.req_bytes,
                    record.resp_bytes,
                    record.units,
                    record.input_tokens or 0,
                    record.output_tokens or 0,
                )
            )


REDIS_WARNING_EVERY_SECONDS = 60.0
_redis_warned_at = -REDIS_WARNING_EVERY_SECONDS


def nudge_aggregation() -> None:
    """Queue an aggregation run after a commit — at most one per AGGREGATION_INTERVAL_SECONDS (beat sweeps anyway).

    The batch is committed already: with Redis down (cache and broker), the nudge is skipped and the beat
    sweeper rolls the batch up once Redis is back. Nothing here may turn the 202 into an error."""
    global _redis_warned_at
    try:
        due = cache.add("ingest:aggregation-nudge", 1, timeout=settings.AGGREGATION_INTERVAL_SECONDS)
    except RedisError:
        if time.monotonic() - _redis_warned_at > REDIS_WARNING_EVERY_SECONDS:  # one line a minute, not one a batch
            _redis_warned_at = time.monotonic()
            logger.warning("Redis is unreachable: aggregation waits for the sweeper", exc_info=True)
        return
    if due:
        from analytics.tasks import aggregate_pending

        try:
            aggregate_pending.delay()
        except Exception:  # the broker is down: the beat sweeper (or the next nudge) picks the batch up
            logger.warning("could not queue aggregation; the sweeper will", exc_info=True)
