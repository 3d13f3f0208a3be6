"""The relay explorer: the raw relay log within its retention window, newest first, keyset-paginated.

It reads one team's rows in a bounded time window (the raw log's BRIN index on ts narrows the
scan to that window); charts never come here.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.http import QueryDict
from django.utils import timezone

from accounts.models import Team
from analytics import params as url
from analytics.models import ERROR_CLASS_NAMES, RELAY_COLUMNS
from project.params import in_range, parse_local_datetime

WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24)}
DEFAULT_WINDOW = "1h"
PAGE_SIZE = 50
CSV_CAP = 100_000
STATUS_RANGES = {"2xx": (200, 299), "3xx": (300, 399), "4xx": (400, 499), "5xx": (500, 599)}
COLUMNS = tuple(column for column in RELAY_COLUMNS if column != "team_id")  # every read is of one team's relays
# Exported as stored, after the relay's time, id, endpoint, key and error class (which the CSV names).
CSV_AS_STORED = ("latency_ms", "req_bytes", "resp_bytes", "units", "input_tokens", "output_tokens")


@dataclass
class Search:
    start: datetime
    end: datetime
    tz: str
    window: str
    endpoint_pk: int | None = None
    key_pk: int | None = None
    service: str | None = None
    method: str | None = None
    status: str | None = None
    min_latency_ms: float | None = None
    cursor: tuple[datetime, int, str] | None = None
    params: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    show_key_ids: bool = True  # False for roles without keys.view: key names only (a key id can be a credential)

    def querystring(self, **overrides: str | None) -> str:
        return url.querystring(self.params, overrides)

    @property
    def retention_start(self) -> datetime:
        today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=settings.RAW_RETENTION_DAYS - 1)

    @property
    def beyond_retention(self) -> bool:
        return self.start < self.retention_start


def encode_cursor(ts: datetime, batch_id: int, relay_id: str) -> str:
    raw = f"{ts.isoformat()}|{batch_id}|{relay_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[datetime, int, str] | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        ts, batch, relay_id = raw.split("|", 2)
        moment, batch_id = datetime.fromisoformat(ts), int(batch)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if moment.tzinfo is None or not in_range(moment) or not 0 < batch_id < 2**63 or "\x00" in relay_id:
        return None
    return moment, batch_id, relay_id


def parse(
    data: QueryDict | Mapping[str, str],
    *,
    team: Team,
    user_tz: str = "UTC",
    now: datetime | None = None,
    show_key_ids: bool = True,
) -> Search:
    now = now or timezone.now()
    get = data.get
    errors: list[str] = []
    tz = url.time_zone(get("tz"), default=user_tz, errors=errors)
    params: dict[str, str] = {"tz": tz}
    window = get("window") or DEFAULT_WINDOW
    custom: tuple[datetime, datetime] | None = None
    if window == "custom":
        first, last = parse_local_datetime(get("start"), tz), parse_local_datetime(get("end"), tz)
        if first is None or last is None or first >= last or last - first > timedelta(days=2):
            errors.append("A custom window needs a start before its end, at most 2 days apart; showing the last hour.")
            window = DEFAULT_WINDOW
        else:
            custom = (first, last)
            params["start"], params["end"] = get("start") or "", get("end") or ""
    if custom is None:
        if window not in WINDOWS:
            errors.append(f"Unknown window {window[:32]!r}; showing the last hour.")
            window = DEFAULT_WINDOW
        # Relays may be stamped a little ahead of our clock.
        start, end = now - WINDOWS[window], now + timedelta(minutes=5)
    else:
        start, end = custom
    params["window"] = window
    own = url.own_filters(
        team=team, endpoint=get("endpoint"), key=get("key"), show_key_ids=show_key_ids, params=params, errors=errors
    )
    service, method = (get("service") or "")[:128] or None, (get("method") or "")[:128] or None
    if service:
        params["service"] = service
    if method:
        params["method"] = method
    status = get("status") or None
    if status and status not in STATUS_RANGES:
        errors.append("Status must be 2xx, 3xx, 4xx or 5xx.")
        status = None
    if status:
        params["status"] = status
    min_latency_ms = None
    if get("min_latency"):
        try:
            minimum = float(get("min_latency") or 0)
            if not math.isfinite(minimum):
                raise ValueError(minimum)
            min_latency_ms = max(0.0, minimum)
            params["min_latency"] = get("min_latency") or ""
        except ValueError:
            errors.append("Minimum latency must be a number of milliseconds.")
    cursor = None
    if get("cursor"):
        cursor = decode_cursor(get("cursor") or "")
        if cursor is None:
            errors.append("That page link is broken; showing the newest relays.")
    return Search(
        start=start,
        end=end,
        tz=tz,
        window=window,
        endpoint_pk=own.endpoint.pk if own.endpoint else None,
        key_pk=own.key.pk if own.key else None,
        service=service,
        method=method,
        status=status,
        min_latency_ms=min_latency_ms,
        cursor=cursor,
        params=params,
        errors=errors,
        show_key_ids=show_key_ids,
    )


def _where(team: Team, search: Search) -> tuple[str, list[Any]]:
    clauses = ["team_id = %s", "ts >= %s", "ts < %s"]
    args: list[Any] = [team.pk, search.start, search.end]
    for column, value in (
        ("endpoint_id", search.endpoint_pk),
        ("key_id", search.key_pk),
        ("service", search.service),
        ("method", search.method),
    ):
        if value is not None:
            clauses.append(f"{column} = %s")
            args.append(value)
    if search.status:
        low, high = STATUS_RANGES[search.status]
        clauses.append("status BETWEEN %s AND %s")
        args += [low, high]
    if search.min_latency_ms is not None:
        clauses.append("latency_ms >= %s")
        args.append(search.min_latency_ms)
    return " AND ".join(clauses), args


def _rows(team: Team, search: Search, *, limit: int, after: tuple[datetime, int, str] | None) -> list[dict[str, Any]]:
    where, args = _where(team, search)
    if after is not None:
        where += " AND (ts, batch_id, relay_id) < (%s, %s, %s)"
        args += list(after)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(COLUMNS)} FROM analytics_relay WHERE {where} "  # noqa: S608 - fixed columns; values are parameters
            "ORDER BY ts DESC, batch_id DESC, relay_id DESC LIMIT %s",
            [*args, limit],
        )
        return [dict(zip(COLUMNS, row, strict=True)) for row in cursor.fetchall()]


def _names(rows: list[dict[str, Any]], *, key_ids: bool = True) -> None:
    from endpoints.models import ApiKey, Endpoint

    endpoints = dict(Endpoint.objects.filter(pk__in={r["endpoint_id"] for r in rows}).values_list("pk", "name"))
    keys = {
        pk: (key_id, name)
        for pk, key_id, name in ApiKey.objects.filter(pk__in={r["key_id"] for r in rows}).values_list(
            "pk", "key_id", "name"
        )
    }
    for row in rows:
        row["endpoint_name"] = endpoints.get(row["endpoint_id"], "—")
        row["key_public_id"], row["key_name"] = keys.get(row["key_id"], ("—", "—"))
        if not key_ids:
            row["key_public_id"] = ""
        row["error_class_name"] = ERROR_CLASS_NAMES.get(row["error_class"]) or ""


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def page(*, team: Team, search: Search, size: int = PAGE_SIZE) -> Page:
    rows = _rows(team, search, limit=size + 1, after=search.cursor)
    more = len(rows) > size
    rows = rows[:size]
    _names(rows, key_ids=search.show_key_ids)
    last = rows[-1] if rows and more else None
    return Page(rows, encode_cursor(last["ts"], last["batch_id"], last["relay_id"]) if last else None)


def csv_rows(*, team: Team, search: Search, cap: int = CSV_CAP) -> Iterator[list[Any]]:
    """The explorer's current filter as CSV rows, newest first, streamed in pages; capped with a note."""
    key_column = "key_id" if search.show_key_ids else "key"
    yield [f"ts ({search.tz})", "relay_id", "endpoint", key_column, "service", "method", "region", "status",
           "error_class", *CSV_AS_STORED]  # fmt: skip
    zone = ZoneInfo(search.tz)
    sent, after = 0, search.cursor
    while sent < cap:
        rows = _rows(team, search, limit=min(5000, cap - sent), after=after)
        if not rows:
            return
        _names(rows, key_ids=search.show_key_ids)
        for r in rows:
            yield [
                r["ts"].astimezone(zone).isoformat(), r["relay_id"], r["endpoint_name"],
                r["key_public_id"] if search.show_key_ids else r["key_name"], r["service"], r["method"], r["region"],
                r["status"], r["error_class_name"], *(r[column] for column in CSV_AS_STORED),
            ]  # fmt: skip
        sent += len(rows)
        after = (rows[-1]["ts"], rows[-1]["batch_id"], rows[-1]["relay_id"])
    if _rows(team, search, limit=1, after=after):
        yield [f"# capped at {cap:,} rows: narrow the time window or filters to export the rest"]


def relay(*, team: Team, batch_id: int, relay_id: str, show_key_ids: bool = True) -> dict[str, Any] | None:
    if not relay_id or len(relay_id) > 64:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(COLUMNS)} FROM analytics_relay WHERE team_id = %s AND batch_id = %s AND relay_id = %s",  # noqa: S608
            [team.pk, int(batch_id), relay_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    found = dict(zip(COLUMNS, row, strict=True))
    _names([found], key_ids=show_key_ids)
    return found
