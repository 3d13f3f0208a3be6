"""The relay explorer: the raw relay log within its retention window, newest first, keyset-paginated.

It reads one team's rows in a bounded time window (the raw log's BRIN index on ts narrows the
scan to that window); charts never come here.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection
from django.http import QueryDict
from django.utils import timezone

from analytics.models import ERROR_CLASS_NAMES
from project.params import in_range, is_time_zone, parse_local_datetime

WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24)}
DEFAULT_WINDOW = "1h"
PAGE_SIZE = 50
CSV_CAP = 100_000
STATUS_RANGES = {"2xx": (200, 299), "3xx": (300, 399), "4xx": (400, 499), "5xx": (500, 599)}
COLUMNS = (
    "ts",
    "batch_id",
    "relay_id",
    "endpoint_id",
    "key_id",
    "service",
    "method",
    "region",
    "status",
    "error_class",
    "latency_ms",
    "req_bytes",
    "resp_bytes",
    "units",
    "input_tokens",
    "output_tokens",
)


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
        params = {**self.params, **overrides}
        return urlencode({k: v for k, v in params.items() if v})

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
    data: QueryDict | dict[str, str],
    *,
    team: Any,
    user_tz: str = "UTC",
    now: datetime | None = None,
    show_key_ids: bool = True,
) -> Search:
    from endpoints.models import ApiKey, Endpoint

    now = now or timezone.now()
    get = data.get
    errors: list[str] = []
    tz = get("tz") or user_tz or "UTC"
    if not is_time_zone(tz):
        errors.append(f"Unknown time zone {tz[:64]!r}; showing UTC.")
        tz = "UTC"
    params: dict[str, str] = {"tz": tz}
    window = get("window") or DEFAULT_WINDOW
    start = end = None
    if window == "custom":
        start, end = parse_local_datetime(get("start"), tz), parse_local_datetime(get("end"), tz)
        if start is None or end is None or start >= end or end - start > timedelta(days=2):
            errors.append("A custom window needs a start before its end, at most 2 days apart; showing the last hour.")
            window = DEFAULT_WINDOW
        else:
            params["start"], params["end"] = get("start") or "", get("end") or ""
    if window != "custom":
        if window not in WINDOWS:
            errors.append(f"Unknown window {window[:32]!r}; showing the last hour.")
            window = DEFAULT_WINDOW
        end = now + timedelta(minutes=5)  # relays may be stamped a little ahead of our clock
        start = now - WINDOWS[window]
    params["window"] = window
    search = Search(start=start, end=end, tz=tz, window=window, params=params, errors=errors, show_key_ids=show_key_ids)  # type: ignore[arg-type]
    if get("endpoint"):
        pk = Endpoint.objects.filter(team=team, public_id=get("endpoint")).values_list("pk", flat=True).first()
        if pk is None:
            errors.append("That endpoint is not one of this team's; the filter was removed.")
        else:
            search.endpoint_pk, params["endpoint"] = pk, get("endpoint")  # type: ignore[assignment]
    if get("key") and not show_key_ids:
        errors.append("Your role does not show API keys, so the key filter was removed.")
    elif get("key"):
        pk = ApiKey.objects.filter(team=team, key_id=get("key")).values_list("pk", flat=True).first()
        if pk is None:
            errors.append("That key is not one of this team's; the filter was removed.")
        else:
            search.key_pk, params["key"] = pk, get("key")  # type: ignore[assignment]
    for name in ("service", "method"):
        if get(name):
            value = (get(name) or "")[:128]
            setattr(search, name, value)
            params[name] = value
    if get("status"):
        if get("status") in STATUS_RANGES:
            search.status = params["status"] = get("status")  # type: ignore[assignment]
        else:
            errors.append("Status must be 2xx, 3xx, 4xx or 5xx.")
    if get("min_latency"):
        try:
            minimum = float(get("min_latency") or 0)
            if not math.isfinite(minimum):
                raise ValueError(minimum)
            search.min_latency_ms = max(0.0, minimum)
            params["min_latency"] = get("min_latency") or ""
        except ValueError:
            errors.append("Minimum latency must be a number of milliseconds.")
    if get("cursor"):
        search.cursor = decode_cursor(get("cursor") or "")
        if search.cursor is None:
            errors.append("That page link is broken; showing the newest relays.")
    return search


def _where(team: Any, search: Search) -> tuple[str, list[Any]]:
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


def _rows(team: Any, search: Search, *, limit: int, after: tuple[datetime, int, str] | None) -> list[dict[str, Any]]:
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


def page(*, team: Any, search: Search, size: int = PAGE_SIZE) -> Page:
    rows = _rows(team, search, limit=size + 1, after=search.cursor)
    more = len(rows) > size
    rows = rows[:size]
    _names(rows, key_ids=search.show_key_ids)
    last = rows[-1] if rows and more else None
    return Page(rows, encode_cursor(last["ts"], last["batch_id"], last["relay_id"]) if last else None)


def csv_rows(*, team: Any, search: Search, cap: int = CSV_CAP) -> Iterator[list[Any]]:
    """The explorer's current filter as CSV rows, newest first, streamed in pages; capped with a note."""
    yield [
        f"ts ({search.tz})",
        "relay_id",
        "endpoint",
        "key_id" if search.show_key_ids else "key",
        "service",
        "method",
        "region",
        "status",
        "error_class",
        "latency_ms",
        "req_bytes",
        "resp_bytes",
        "units",
        "input_tokens",
        "output_tokens",
    ]
    zone = ZoneInfo(search.tz)
    sent, after = 0, search.cursor
    while sent < cap:
        rows = _rows(team, search, limit=min(5000, cap - sent), after=after)
        if not rows:
            return
        _names(rows, key_ids=search.show_key_ids)
        for r in rows:
            yield [
                r["ts"].astimezone(zone).isoformat(),
                r["relay_id"],
                r["endpoint_name"],
                r["key_public_id"] if search.show_key_ids else r["key_name"],
                r["service"],
                r["method"],
                r["region"],
                r["status"],
                r["error_class_name"],
                r["latency_ms"],
                r["req_bytes"],
                r["resp_bytes"],
                r["units"],
                r["input_tokens"],
                r["output_tokens"],
            ]
        sent += len(rows)
        after = (rows[-1]["ts"], rows[-1]["batch_id"], rows[-1]["relay_id"])
    if _rows(team, search, limit=1, after=after):
        yield [f"# capped at {cap:,} rows: narrow the time window or filters to export the rest"]


def relay(*, team: Any, batch_id: int, relay_id: str, show_key_ids: bool = True) -> dict[str, Any] | None:
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
