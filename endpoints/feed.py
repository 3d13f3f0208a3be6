"""The gateway config feed (v1): a snapshot of every endpoint and key the gateway must know, and the
changes since a cursor. Built with plain value queries and msgspec, not serializers, and the snapshot is
streamed: its keys are read through a server-side cursor and encoded a chunk at a time, so a million keys
take seconds and the serving process's memory stays flat (bench/config_feed.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from django.contrib.postgres.expressions import ArraySubquery
from django.db import connection
from django.db.models import Max, OuterRef, Q, QuerySet
from django.utils import timezone

from accounts.models import Team
from endpoints import listen
from endpoints.models import (
    ALLOWLIST_FIELDS,
    DEFAULT_RATE_LIMIT_RPS,
    ENFORCED_FIELDS,
    ApiKey,
    ApiKeyQuerySet,
    ConfigChange,
    ConfigFeedHorizon,
    Endpoint,
    EndpointStatus,
    PlanLimit,
    Service,
    TrafficStop,
)

logger = logging.getLogger(__name__)

FEED_VERSION = "v1"
DEFAULT_CHANGES_LIMIT = 1000
MAX_CHANGES_LIMIT = 10_000
MAX_WAIT_SECONDS = 30
# What a request that could not wait (every waiter slot taken, or no listener connection) tells the gateway: poll
# again after this many seconds, rather than at once in a loop.
RETRY_AFTER_SECONDS = 1


class CursorExpiredError(Exception):
    """The cursor predates the pruned part of the change log: take a new snapshot."""


@dataclass(frozen=True)
class Status:
    status: str
    reason: str | None = None

    @property
    def reason_text(self) -> str | None:
        """The reason for people: a machine-readable one (budget_exceeded) in words (budget exceeded)."""
        return self.reason.replace("_", " ") if self.reason and " " not in self.reason else self.reason


def key_status(
    *,
    revoked_at: datetime | None,
    valid_until: datetime | None,
    expires_at: datetime | None,
    endpoint_deleted: bool,
    endpoint_status: str,
    endpoint_reason: str,
    team_suspension: str | None,
    now: datetime,
    stop: str | None = None,
) -> Status:
    """What the gateway does with a key right now, and why. Time-based ends (expiry, the end of a rotation
    overlap) are in the record too (expires_at, valid_until): the gateway enforces them between polls."""
    if revoked_at is not None or endpoint_deleted:
        return Status("revoked", "endpoint deleted" if endpoint_deleted and revoked_at is None else None)
    if valid_until is not None and valid_until <= now:
        return Status("revoked", "replaced by rotation")
    if expires_at is not None and expires_at <= now:
        return Status("expired")
    return endpoint_status_of(
        status=endpoint_status, reason=endpoint_reason, team_suspension=team_suspension, stop=stop
    )


def endpoint_status_of(*, status: str, reason: str, team_suspension: str | None, stop: str | None = None) -> Status:
    """What the gateway does with a live endpoint (and every working key of it): a team suspension first, then a
    traffic stop (its machine-readable reason, e.g. budget_exceeded), then the platform's suspension, then the team's
    pause."""
    if team_suspension:
        return Status("suspended", team_suspension)
    if stop:
        return Status("suspended", stop)
    if status == EndpointStatus.SUSPENDED:
        return Status("suspended", reason or "suspended by the platform")
    if status == EndpointStatus.PAUSED:
        return Status("suspended", "endpoint paused by the team")
    return Status("active")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


# The endpoint's enforced fields, and what the record needs besides them.
_ENDPOINT_FIELDS = (
    "public_id",
    "team__slug",
    *ENFORCED_FIELDS,
    "deleted_at",
    "team__gateway_suspension__reason",
    "team__plan_limit__rate_limit_rps",
)
_KEY_FIELDS = (
    "key_id",
    "secret_hash",
    "team__slug",
    "endpoint__public_id",
    "endpoint__environment",
    "endpoint__status",
    "endpoint__suspended_reason",
    "endpoint__deleted_at",
    "team__gateway_suspension__reason",
    "revoked_at",
    "valid_until",
    "expires_at",
    "daily_unit_cap",
)


@dataclass(frozen=True)
class Stops:
    """The traffic stops in force, by team slug, endpoint id and key id (few rows: read whole)."""

    teams: dict[str, str]
    endpoints: dict[str, str]
    keys: dict[str, str]

    def of_endpoint(self, team: str, endpoint_id: str) -> str | None:
        return self.teams.get(team) or self.endpoints.get(endpoint_id)

    def of_key(self, team: str, endpoint_id: str, key_id: str) -> str | None:
        return self.of_endpoint(team, endpoint_id) or self.keys.get(key_id)

    def of_key_in_team(self, endpoint_id: str, key_id: str) -> str | None:
        """For the stops of one team (stops_of(team)): its own stop first, then the endpoint's, then the key's."""
        return next(iter(self.teams.values()), None) or self.endpoints.get(endpoint_id) or self.keys.get(key_id)


def stops_of(team: Team | None = None) -> Stops:
    """The traffic stops in force: every team's (the feed), or one team's (its pages)."""
    stops = Stops({}, {}, {})
    rows = (
        (TrafficStop.objects.filter(team=team) if team else TrafficStop.objects.all())
        .values_list("team__slug", "endpoint__public_id", "key__key_id", "reason")
        .order_by("pk")
    )
    for slug, endpoint_id, key_id, reason in rows:
        if key_id:
            stops.keys.setdefault(key_id, reason)
        elif endpoint_id:
            stops.endpoints.setdefault(endpoint_id, reason)
        else:
            stops.teams.setdefault(slug, reason)
    return stops


def _endpoint_record(row: dict[str, Any], services: list[str], default_plan_rps: int, stops: Stops) -> dict[str, Any]:
    plan_rps = row["team__plan_limit__rate_limit_rps"] or default_plan_rps  # no limit set by its plan: the default's
    rps = row["rate_limit_rps"]
    rps = min(rps, plan_rps) if rps else plan_rps  # never above the plan, whatever was stored before a downgrade
    if row["deleted_at"] is not None:
        effective = Status("deleted")
    else:
        effective = endpoint_status_of(
            status=row["status"],
            reason=row["suspended_reason"],
            team_suspension=row["team__gateway_suspension__reason"],
            stop=stops.of_endpoint(row["team__slug"], row["public_id"]),
        )
    return {
        "endpoint_id": row["public_id"],
        "team": row["team__slug"],
        "environment": row["environment"],
        "status": effective.status,
        "status_reason": effective.reason,
        "services": services,
        "rate_limit_rps": rps,
        "monthly_unit_cap": row["monthly_unit_cap"],
        "secret_key_required": row["secret_key_required"],
        "allowlists": allowlists_of(row.__getitem__),
    }


def allowlists_of(value_of: Callable[[str], Any]) -> dict[str, Any]:
    """The allowlists as the gateway and the team API name them ({origins: …, …, methods: …}), given how to read a
    field (of a row, or of an Endpoint)."""
    return {field.removeprefix("allowed_"): value_of(field) for field in ALLOWLIST_FIELDS}


def _key_record(
    row: tuple[Any, ...], now: datetime, stops: Stops, of_endpoints: dict[str, Status] | None = None
) -> dict[str, Any]:
    """A key as the feed publishes it. `of_endpoints` memoizes endpoint statuses (by endpoint id) for a run of rows
    read together: a key that nothing of its own ends or stops has its endpoint's status."""
    (key_id, secret_hash, team, endpoint_id, environment, endpoint_status, endpoint_reason, endpoint_deleted_at,
     team_suspension, revoked_at, valid_until, expires_at, daily_cap) = row  # fmt: skip
    if (
        of_endpoints is not None
        and revoked_at is None
        and endpoint_deleted_at is None
        and (valid_until is None or valid_until > now)
        and (expires_at is None or expires_at > now)
        and key_id not in stops.keys
    ):
        status = of_endpoints.get(endpoint_id) or of_endpoints.setdefault(
            endpoint_id,
            endpoint_status_of(
                status=endpoint_status,
                reason=endpoint_reason,
                team_suspension=team_suspension,
                stop=stops.of_endpoint(team, endpoint_id),
            ),
        )
    else:
        status = key_status(
            revoked_at=revoked_at,
            valid_until=valid_until,
            expires_at=expires_at,
            endpoint_deleted=endpoint_deleted_at is not None,
            endpoint_status=endpoint_status,
            endpoint_reason=endpoint_reason,
            team_suspension=team_suspension,
            now=now,
            stop=stops.of_key(team, endpoint_id, key_id),
        )
    return {
        "key_id": key_id,
        "secret_sha256": secret_hash,
        "team": team,
        "endpoint_id": endpoint_id,
        "environment": environment,
        "status": status.status,
        "status_reason": status.reason,
        "expires_at": _iso(expires_at),
        "valid_until": _iso(valid_until),
        "daily_unit_cap": daily_cap,
    }


def _default_plan_rps() -> int:
    default = PlanLimit.objects.filter(team__isnull=True).values_list("rate_limit_rps", flat=True).first()
    return default or DEFAULT_RATE_LIMIT_RPS


def _endpoint_rows(filter_: Q) -> QuerySet[Any]:
    """The endpoints as the feed reads them: their fields and their services' ids, sorted (a subquery per row, so a
    chunk of them is one index range scan, not an aggregate over every endpoint)."""
    services = Endpoint.services.through.objects.filter(endpoint_id=OuterRef("pk")).order_by("service_id")
    return (
        Endpoint.objects.filter(filter_)
        .annotate(service_ids=ArraySubquery(services.values("service_id")))
        .values("pk", *_ENDPOINT_FIELDS, "service_ids")
    )


def _endpoints(filter_: Q, stops: Stops) -> list[dict[str, Any]]:
    default_rps = _default_plan_rps()
    return [_endpoint_record(row, row["service_ids"], default_rps, stops) for row in _endpoint_rows(filter_).order_by()]


def _keys(keys: ApiKeyQuerySet, now: datetime, stops: Stops) -> list[dict[str, Any]]:
    rows = keys.values_list(*_KEY_FIELDS).order_by()
    return [_key_record(row, now, stops) for row in rows.iterator(chunk_size=SNAPSHOT_CHUNK)]


# Endpoints or keys per chunk of a streamed snapshot: one keyset query, one encode, one write.
SNAPSHOT_CHUNK = 5000
_encoder = msgspec.json.Encoder()


def _cursor_now() -> int:
    return ConfigChange.objects.aggregate(latest=Max("id"))["latest"] or 0


def _services() -> list[dict[str, Any]]:
    """What the gateway needs of the catalog to meter a relay: each service's compute units per relay and per method,
    and an LLM's token prices (units = tokens × price per million, as billing counts them). (Catalog edits are not
    change entries: a gateway picks them up with its next snapshot.)"""
    fields = ("id", "kind", "chain_family", "compute_units", "method_compute_units", "input_price_per_million",
              "output_price_per_million")  # fmt: skip
    rows = Service.objects.values_list(*fields)
    return [dict(zip(fields, row, strict=True)) for row in rows.order_by("sort_order", "id")]


class Snapshot:
    """Every live endpoint and every key the gateway may have to accept, with the cursor they go with, as JSON bytes
    a piece at a time: {"version", "cursor", "generated_at", "endpoints", "services", "keys": [...]}.

    The cursor is read first (made, a Snapshot has it, for the ETag); the rows after it, keys SNAPSHOT_CHUNK at a
    time in primary-key order, each chunk its own short query. So no transaction is held while the gateway reads
    (nor a server-side cursor: it works through PgBouncer in transaction mode), and every row is at least as new as
    the cursor: a change after it is in ?since=<cursor>, whose entries carry the current state, so a gateway that
    applies them after the snapshot ends up right either way (config changes are numbered in commit order:
    services.config_change_record).
    """

    def __init__(self) -> None:
        self._chunks = self._generate()
        self.cursor: str = next(self._chunks).decode()

    def __iter__(self) -> Generator[bytes]:
        return self._chunks

    def close(self) -> None:
        self._chunks.close()

    def _generate(self) -> Generator[bytes]:
        now = timezone.now()
        cursor_id = str(_cursor_now())
        yield cursor_id.encode()
        stops = stops_of()
        head = {"version": FEED_VERSION, "cursor": cursor_id, "generated_at": _iso(now), "services": _services()}
        yield _encoder.encode(head)[:-1] + b',"endpoints":['
        default_rps = _default_plan_rps()
        separator = b""
        for rows in _by_pk(_endpoint_rows(Q(deleted_at__isnull=True))):
            records = [_endpoint_record(row, row["service_ids"], default_rps, stops) for row in rows]
            yield separator + _encoder.encode(records)[1:-1]
            separator = b","
        yield b'],"keys":['
        separator = b""
        for rows in _by_pk(ApiKey.objects.unrevoked(now).values_list("pk", *_KEY_FIELDS)):
            of_endpoints: dict[str, Status] = {}
            records = [_key_record(row[1:], now, stops, of_endpoints) for row in rows]
            yield separator + _encoder.encode(records)[1:-1]
            separator = b","
        yield b"]}"


def _by_pk(rows: QuerySet[Any]) -> Iterator[list[Any]]:
    """The rows of a values() or values_list() query led by "pk", SNAPSHOT_CHUNK at a time in primary-key order:
    each chunk is its own short query (an index range scan), so none is held open between chunks."""
    after = 0
    while True:
        chunk = list(rows.filter(pk__gt=after).order_by("pk")[:SNAPSHOT_CHUNK])
        if chunk:
            yield chunk
            last = chunk[-1]
            after = last["pk"] if isinstance(last, dict) else last[0]
        if len(chunk) < SNAPSHOT_CHUNK:
            return


def snapshot() -> dict[str, Any]:
    """The snapshot as one dict (tests, and callers that want it whole)."""
    return msgspec.json.decode(b"".join(Snapshot()))


def changes(*, since: int, limit: int = DEFAULT_CHANGES_LIMIT) -> dict[str, Any]:
    """What changed after `since`, oldest first, one entry per object with its current state.

    Removals are states too: a revoked key has status "revoked", a deleted endpoint "deleted".
    """
    horizon = ConfigFeedHorizon.objects.values_list("pruned_through_id", flat=True).first() or 0
    if since < horizon:
        raise CursorExpiredError
    now = timezone.now()
    latest = list(
        ConfigChange.objects.filter(id__gt=since)
        .values("kind", "object_id")
        .annotate(seq=Max("id"))
        .order_by("seq")[: limit + 1]
    )
    has_more = len(latest) > limit
    latest = latest[:limit]
    endpoint_ids = [row["object_id"] for row in latest if row["kind"] == ConfigChange.Kind.ENDPOINT]
    key_ids = [row["object_id"] for row in latest if row["kind"] == ConfigChange.Kind.KEY]
    stops = stops_of()
    endpoints = {e["endpoint_id"]: e for e in _endpoints(Q(public_id__in=endpoint_ids), stops)} if endpoint_ids else {}
    keys = {k["key_id"]: k for k in _keys(ApiKey.objects.filter(key_id__in=key_ids), now, stops)} if key_ids else {}
    entries = []
    for row in latest:
        object_id = row["object_id"]
        # An object with no row any more went with its team: tell the gateway to forget it.
        if row["kind"] == ConfigChange.Kind.ENDPOINT:
            record = endpoints.get(object_id) or {
                "endpoint_id": object_id,
                "status": "deleted",
                "status_reason": "team deleted",
            }
            entries.append({"seq": row["seq"], "type": "endpoint", "endpoint": record})
        else:
            record = keys.get(object_id) or {"key_id": object_id, "status": "revoked", "status_reason": "team deleted"}
            entries.append({"seq": row["seq"], "type": "key", "key": record})
    cursor = latest[-1]["seq"] if latest else since
    return {
        "version": FEED_VERSION,
        "since": str(since),
        "cursor": str(cursor),
        "has_more": has_more,
        "generated_at": _iso(now),
        "changes": entries,
    }


@dataclass(frozen=True)
class Waited:
    """The answer to a long-poll; retry_after is set when it was answered at once instead of waiting."""

    body: dict[str, Any]
    retry_after: int | None = None


def changes_waiting(*, since: int, limit: int = DEFAULT_CHANGES_LIMIT, wait: int = 0) -> Waited:
    """changes(), but when there is none after `since` yet, held up to `wait` seconds until one commits."""
    body = changes(since=since, limit=limit)
    if body["changes"] or wait <= 0:
        return Waited(body)
    with listen.waiter_slot() as granted:
        if not granted:
            return Waited(body, retry_after=RETRY_AFTER_SECONDS)
        if not connection.in_atomic_block:
            connection.close()  # hold no Django connection while waiting (a pooled one goes back to its pool)
        try:
            listen.wait_for_change(since=since, timeout=wait)
        except psycopg.Error as error:
            logger.warning("config feed: cannot wait for changes, answering at once: %s", error)
            return Waited(body, retry_after=RETRY_AFTER_SECONDS)
    # Woken or timed out, the answer is the one a poll made now gets (on a timeout: no changes, a new generated_at).
    return Waited(changes(since=since, limit=limit))
