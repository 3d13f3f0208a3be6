"""Usage records to Gatehouse, exactly once: `POST /api/gateway/v1/usage`, gzip NDJSON, one Idempotency-Key a batch.

Spool first, send second. Every second (or as soon as flush_records are waiting) the buffer is written to the spool
directory as one gzip file per batch, named with its Idempotency-Key, and fsynced; only then is it sent, oldest
first, and only a 2xx deletes it. A failure (Gatehouse down, 5xx, 429, a timeout) keeps the file and retries it with
the same key and the same bytes after a capped exponential backoff, so Gatehouse's idempotency turns a retry of a
batch it did commit into a replay, never a second count. A relay restart finds the files and sends them. A refusal
that no retry can fix (400, 409, 413, 415, 422) moves the file to spool/rejected/ and logs why.

What can be lost: on a hard kill (SIGKILL, power loss) the records of the last flush interval, still in memory.
SIGTERM and SIGINT flush them to the spool first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec

from relay.config import Settings
from relay.observability import Metrics

logger = logging.getLogger("relay.usage")

USAGE_PATH = "/api/gateway/v1/usage"
SUFFIX = ".ndjson.gz"
MAX_BATCH_BYTES = 8 * 1024 * 1024  # under Gatehouse's 10 MB (decompressed) per batch
MAX_BACKOFF = 30.0
POST_TIMEOUT = 60.0
# Answers no retry can change: the batch itself is wrong (or its key was used for other bytes).
PERMANENT = frozenset({400, 409, 413, 415, 422})


class UsageRecord(msgspec.Struct, omit_defaults=True):
    """One relayed call, as the gateway contract (v1) defines the usage record."""

    id: str
    ts: str
    key_id: str
    endpoint_id: str
    service: str
    method: str
    status: int
    error_class: str | None
    latency_ms: float
    req_bytes: int
    resp_bytes: int
    units: int
    region: str
    input_tokens: int | None = None
    output_tokens: int | None = None


_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    idempotency_key: str
    records: int

    @classmethod
    def of(cls, path: Path) -> SpoolFile | None:
        """<created ns>-<records>-<idempotency key>.ndjson.gz, or None for anything else in the directory."""
        created, _, rest = path.name.removesuffix(SUFFIX).partition("-")
        records, _, key = rest.partition("-")
        if not path.name.endswith(SUFFIX) or not created.isdigit() or not records.isdigit() or not key:
            return None
        return cls(path, key, int(records))


class Spool:
    """The directory of batches not yet acknowledged. Files appear whole (written aside, fsynced, renamed)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.rejected = directory / "rejected"
        self.rejected.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(".tmp-*"):  # a write cut short by a crash: never acknowledged, never sent
            leftover.unlink()

    def write(self, lines: list[bytes]) -> SpoolFile:
        key = f"relay-{uuid.uuid4().hex}"
        path = self.directory / f"{time.time_ns():020d}-{len(lines)}-{key}{SUFFIX}"
        body = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=5, mtime=0)
        temporary = self.directory / f".tmp-{key}"
        with temporary.open("wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
        _fsync_directory(self.directory)
        return SpoolFile(path, key, len(lines))

    def pending(self) -> list[SpoolFile]:
        found = (SpoolFile.of(path) for path in sorted(self.directory.glob(f"*{SUFFIX}")))
        return [spooled for spooled in found if spooled is not None]

    def reject(self, spooled: SpoolFile) -> None:
        spooled.path.replace(self.rejected / spooled.path.name)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def batches(lines: list[bytes], max_records: int, max_bytes: int = MAX_BATCH_BYTES) -> list[list[bytes]]:
    """The lines cut into batches of at most max_records records and max_bytes bytes."""
    out: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and (len(current) >= max_records or size + len(line) + 1 > max_bytes):
            out.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        out.append(current)
    return out


class UsagePusher:
    """Buffers records, spools them as batches and delivers the spool; see the module docstring."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession, metrics: Metrics):
        self.settings = settings
        self.session = session
        self.metrics = metrics
        self.spool = Spool(settings.spool_dir)
        self.buffer: list[bytes] = []
        pending = self.spool.pending()
        self.spooled_files = len(pending)
        self.spooled_records = sum(spooled.records for spooled in pending)
        self._wake = asyncio.Event()
        self._delivering = asyncio.Lock()
        self._flushing = asyncio.Lock()  # a flush returns once every record buffered before it is in the spool
        self._backoff = 0.0
        self._retry_at = 0.0
        if pending:
            logger.info("spooled usage found", extra={"files": len(pending), "records": self.spooled_records})

    def add(self, record: UsageRecord) -> None:
        self.buffer.append(_encoder.encode(record))
        self.metrics.inc("relay_usage_records_total")
        if len(self.buffer) >= self.settings.flush_records:
            self._wake.set()

    async def flush(self) -> None:
        """Move the buffer to the spool (one file per batch, fsynced). A flush already writing (the periodic one) is
        waited for, so what was buffered before this call is in the spool when it returns."""
        async with self._flushing:
            if not self.buffer:
                return
            lines, self.buffer = self.buffer, []
            for batch in batches(lines, self.settings.flush_records):
                await asyncio.to_thread(self.spool.write, batch)
                self.spooled_files += 1
                self.spooled_records += len(batch)

    async def deliver(self) -> bool:
        """Send the spooled batches, oldest first; stop at the first that must be retried. True when none is left."""
        async with self._delivering:
            for spooled in self.spool.pending():
                outcome = await self._post(spooled)
                if outcome == "retry":
                    self.metrics.inc("relay_usage_delivery_failures_total")
                    self._backoff = min(max(self._backoff * 2, self.settings.flush_interval), MAX_BACKOFF)
                    self._retry_at = time.monotonic() + self._backoff
                    return False
                if outcome == "delivered":
                    spooled.path.unlink(missing_ok=True)
                    self.metrics.inc("relay_usage_batches_delivered_total")
                else:
                    self.spool.reject(spooled)
                    self.metrics.inc("relay_usage_batches_rejected_total")
                self.spooled_files -= 1
                self.spooled_records -= spooled.records
            self._backoff = 0.0
            return True

    async def _post(self, spooled: SpoolFile) -> str:
        body = await asyncio.to_thread(spooled.path.read_bytes)
        headers = {
            "Authorization": f"Bearer {self.settings.gateway_secret}",
            "Idempotency-Key": spooled.idempotency_key,
            "Content-Type": "application/x-ndjson",
            "Content-Encoding": "gzip",
        }
        url = self.settings.gatehouse_url + USAGE_PATH
        extra: dict[str, object] = {"idempotency_key": spooled.idempotency_key, "records": spooled.records}
        try:
            timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT)
            async with self.session.post(url, data=body, headers=headers, timeout=timeout) as response:
                answer = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            logger.warning("usage push failed; will retry", extra=extra | {"error": str(error) or type(error).__name__})
            return "retry"
        if 200 <= status < 300:
            return "delivered"
        extra |= {"status": status, "answer": answer[:500].decode("utf-8", "replace")}
        if status in PERMANENT:
            logger.error("usage batch refused for good; moved to spool/rejected", extra=extra)
            return "rejected"
        logger.warning("usage push answered %s; will retry", status, extra=extra)
        return "retry"

    async def run(self) -> None:
        """Until cancelled: flush every flush_interval (sooner when the buffer is full), then deliver when due."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
                if time.monotonic() >= self._retry_at:
                    await self.deliver()
            except Exception:  # the spool's disk, or a bug: the records stay where they are; say so loudly, go on
                logger.exception("usage flush or delivery failed; retrying")

    async def close(self, deadline_seconds: float) -> None:
        """Flush the buffer to the spool, then try to deliver it within the deadline; what is left stays spooled."""
        await self.flush()
        deadline = time.monotonic() + deadline_seconds
        while not await self.deliver():
            pause = self._retry_at - time.monotonic()
            if time.monotonic() + max(pause, 0) >= deadline:
                break
            await asyncio.sleep(max(pause, 0))
        if self.spooled_files:
            logger.warning(
                "usage left in the spool for the next start",
                extra={"files": self.spooled_files, "records": self.spooled_records},
            )
