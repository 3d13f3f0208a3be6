"""The relay's copy of Gatehouse's config: the snapshot at start, then the change feed followed for ever.

Keys are kept by key id with the SHA-256 of their secret only, as the feed publishes them: a presented secret is
hashed and compared (never stored, never logged). When Gatehouse cannot be reached the relay keeps serving the last
config it had ("fail static"), and says so in /healthz and /metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import aiohttp
import msgspec

from relay.config import Settings
from relay.observability import Metrics

logger = logging.getLogger("relay.feed")

CONFIG_PATH = "/api/gateway/v1/config"
SNAPSHOT_TIMEOUT = 120.0
MAX_BACKOFF = 30.0
# A long poll answers by `wait` seconds; past it by this much the connection is taken for dead.
WAIT_SLACK = 15.0


class Allowlists(msgspec.Struct, frozen=True):
    origins: list[str] = msgspec.field(default_factory=list)
    user_agents: list[str] = msgspec.field(default_factory=list)
    ips: list[str] = msgspec.field(default_factory=list)
    contracts: dict[str, list[str]] = msgspec.field(default_factory=dict)
    methods: dict[str, list[str]] = msgspec.field(default_factory=dict)


class KeyRecord(msgspec.Struct, frozen=True):
    """A key as the feed publishes it. A removal ("team deleted") carries only key_id, status and status_reason."""

    key_id: str
    status: str
    status_reason: str | None = None
    secret_sha256: str = ""
    team: str = ""
    endpoint_id: str = ""
    environment: str = ""
    expires_at: datetime | None = None
    valid_until: datetime | None = None
    daily_unit_cap: int | None = None

    def secret_matches(self, presented: str) -> bool:
        """Whether the presented secret hashes to the published SHA-256 (endpoints/keys.py hashes the same way)."""
        digest = hashlib.sha256(presented.encode()).hexdigest()
        return bool(self.secret_sha256) and hmac.compare_digest(digest, self.secret_sha256)


class EndpointRecord(msgspec.Struct, frozen=True):
    endpoint_id: str
    status: str
    status_reason: str | None = None
    team: str = ""
    environment: str = ""
    services: list[str] = msgspec.field(default_factory=list)
    rate_limit_rps: int | None = None
    monthly_unit_cap: int | None = None
    secret_key_required: bool = False
    allowlists: Allowlists = msgspec.field(default_factory=Allowlists)


class ServiceRecord(msgspec.Struct, frozen=True):
    """What the relay needs of the catalog to meter a call: compute units per method (RPC); for an LLM service its
    token prices (USD per million tokens) when the feed publishes them."""

    id: str
    kind: str = "rpc"
    chain_family: str = ""
    compute_units: int = 0
    method_compute_units: dict[str, int] = msgspec.field(default_factory=dict)
    input_price_per_million: Decimal | None = None
    output_price_per_million: Decimal | None = None

    def units_for(self, method: str) -> int:
        return self.method_compute_units.get(method, self.compute_units)


class Snapshot(msgspec.Struct):
    version: str
    cursor: str
    endpoints: list[EndpointRecord]
    keys: list[KeyRecord]
    services: list[ServiceRecord] | None = None  # None: a Gatehouse that does not publish the catalog


class Change(msgspec.Struct):
    seq: int
    type: str
    key: KeyRecord | None = None
    endpoint: EndpointRecord | None = None


class Changes(msgspec.Struct):
    version: str
    cursor: str
    has_more: bool = False
    changes: list[Change] = msgspec.field(default_factory=list)


_snapshot_decoder = msgspec.json.Decoder(Snapshot)
_changes_decoder = msgspec.json.Decoder(Changes)


@dataclass
class ConfigStore:
    """The config the relay enforces. Records are immutable and replaced whole, so a reader holding one sees a
    consistent object; everything runs on one event loop, so no lock is needed."""

    keys: dict[str, KeyRecord] = field(default_factory=dict)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    cursor: str | None = None
    synced_at: float | None = None  # monotonic time of the last answer from the feed
    snapshot_at: float | None = None

    @property
    def loaded(self) -> bool:
        return self.cursor is not None

    def replace(self, snapshot: Snapshot, now: float) -> None:
        self.keys = {key.key_id: key for key in snapshot.keys}
        self.endpoints = {endpoint.endpoint_id: endpoint for endpoint in snapshot.endpoints}
        if snapshot.services is not None:
            self.services = {service.id: service for service in snapshot.services}
        self.cursor = snapshot.cursor
        self.synced_at = self.snapshot_at = now

    def apply(self, changes: Changes, now: float) -> int:
        """Apply the entries in order (each is the object's current state); returns how many. A revoked key or a
        deleted endpoint stays, with its status, so the relay can say "revoked" until the next snapshot drops it."""
        for change in changes.changes:
            if change.key is not None:
                self.keys[change.key.key_id] = change.key
            elif change.endpoint is not None:
                self.endpoints[change.endpoint.endpoint_id] = change.endpoint
        self.cursor = changes.cursor
        self.synced_at = now
        return len(changes.changes)


class FeedError(Exception):
    """The feed answered something the relay cannot use (the message says what); it retries with backoff."""


@dataclass
class FeedFollower:
    """Loads the snapshot, then long-polls `?since=<cursor>&wait=<s>`; a server that ignores `wait` answers at
    once, and the follower then polls every feed_poll_interval instead. 410 (cursor expired) → a new snapshot."""

    settings: Settings
    store: ConfigStore
    session: aiohttp.ClientSession
    metrics: Metrics
    _retry_after: float = 0.0  # what the last answer asked for (a long-poll that could not wait says when to ask)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.gateway_secret}", "Accept": "application/json"}

    async def _get(self, params: dict[str, str], timeout: float) -> tuple[int, bytes]:
        url = self.settings.gatehouse_url + CONFIG_PATH
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with self.session.get(url, params=params, headers=self._headers(), timeout=client_timeout) as response:
            retry_after = response.headers.get("Retry-After", "")
            self._retry_after = float(retry_after) if retry_after.isdigit() else 0.0
            return response.status, await response.read()

    async def load_snapshot(self) -> None:
        status, body = await self._get({}, SNAPSHOT_TIMEOUT)
        if status != 200:
            raise FeedError(f"snapshot answered {status}: {_excerpt(body)}")
        try:
            snapshot = _snapshot_decoder.decode(body)
        except msgspec.DecodeError as error:  # ValidationError is a DecodeError
            raise FeedError(f"snapshot does not match the contract: {error}") from None
        self.metrics.inc("relay_feed_snapshots_total")
        self.store.replace(snapshot, time.monotonic())
        if snapshot.services is None:
            logger.warning("the config feed publishes no service catalog: every call is metered as 0 units")
        logger.info(
            "config snapshot loaded",
            extra={"cursor": snapshot.cursor, "keys": len(snapshot.keys), "endpoints": len(snapshot.endpoints)},
        )

    async def poll_once(self) -> int:
        """One request for the changes after the cursor; returns how many were applied (0 on a quiet feed)."""
        params = {"since": self.store.cursor or "0"}
        wait = self.settings.feed_wait
        if wait:
            params["wait"] = str(wait)
        status, body = await self._get(params, wait + WAIT_SLACK)
        if status == 410 or (status == 400 and b"invalid_cursor" in body):
            logger.warning("cursor %s no longer valid (%s): taking a new snapshot", self.store.cursor, status)
            await self.load_snapshot()
            return 0
        if status != 200:
            raise FeedError(f"changes answered {status}: {_excerpt(body)}")
        try:
            changes = _changes_decoder.decode(body)
        except msgspec.DecodeError as error:
            raise FeedError(f"changes do not match the contract: {error}") from None
        self.metrics.inc("relay_feed_changes_total", len(changes.changes))
        applied = self.store.apply(changes, time.monotonic())
        if applied:
            logger.info("config changes applied", extra={"changes": applied, "cursor": changes.cursor})
        return applied if not changes.has_more else max(applied, 1)  # has_more: ask again at once

    async def run(self) -> None:
        """Follow the feed until cancelled; every failure is logged and retried with capped exponential backoff."""
        backoff = self.settings.feed_poll_interval
        while True:
            try:
                if not self.store.loaded or self._snapshot_due():
                    await self.load_snapshot()
                started = time.monotonic()
                applied = await self.poll_once()
                backoff = self.settings.feed_poll_interval
                pause = max(self.settings.feed_poll_interval, self._retry_after)
                if not applied and time.monotonic() - started < pause:  # answered at once with nothing: no long poll
                    await asyncio.sleep(pause)
            except (aiohttp.ClientError, TimeoutError, FeedError) as error:
                self.metrics.inc("relay_feed_errors_total")
                logger.warning(
                    "config feed unavailable; serving the last config",
                    extra={"error": str(error) or type(error).__name__, "retry_in": backoff},
                )
            except Exception:  # a bug must not stop the relay from following the feed: say so, and go on
                self.metrics.inc("relay_feed_errors_total")
                logger.exception("config feed: unexpected error; serving the last config", extra={"retry_in": backoff})
            else:
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _snapshot_due(self) -> bool:
        # Catalog edits (compute units) are not change entries: a periodic snapshot picks them up.
        taken = self.store.snapshot_at
        return taken is None or time.monotonic() - taken > self.settings.resnapshot_interval


def _excerpt(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace")


def snapshot_age(store: ConfigStore) -> float | None:
    """Seconds since the feed last answered (None before the first snapshot)."""
    return None if store.synced_at is None else time.monotonic() - store.synced_at
