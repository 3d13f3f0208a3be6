"""The dashboard's query: range, bucket size, time zone and filters, parsed from the URL (a link
reproduces the view) and validated; and the panels' data, built from the usage selectors only
(rollups, never the raw relay log)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.http import QueryDict
from django.utils import timezone

from accounts.models import Team
from analytics import params as url
from analytics import selectors
from analytics.selectors import STATUS_CLASSES, UsageFilter
from project.params import EARLIEST_YEAR, LATEST_YEAR, parse_local_datetime

RANGES: dict[str, tuple[timedelta, str, str]] = {
    "1h": (timedelta(hours=1), "minute", "Last hour"),
    "24h": (timedelta(hours=24), "hour", "Last 24 hours"),
    "7d": (timedelta(days=7), "hour", "Last 7 days"),
    "30d": (timedelta(days=30), "day", "Last 30 days"),
    "90d": (timedelta(days=90), "day", "Last 90 days"),
}
DEFAULT_RANGE = "24h"
STEPS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
FILTER_PARAMS = ("endpoint", "key", "service", "method", "region", "status")
BREAKDOWNS = {"method": "Methods", "service": "Services", "endpoint": "Endpoints", "key": "Keys", "region": "Regions"}
COMMON_ZONES = [
    "UTC", "America/Los_Angeles", "America/New_York", "America/Sao_Paulo", "Europe/London", "Europe/Berlin",
    "Europe/Istanbul", "Asia/Dubai", "Asia/Kolkata", "Asia/Singapore", "Asia/Tokyo", "Australia/Sydney",
]  # fmt: skip


@dataclass(frozen=True)
class Query:
    range_key: str
    start: datetime
    end: datetime
    step: str
    tz: str
    filters: UsageFilter
    status: str | None
    stack: str
    params: dict[str, str]  # the normalized URL parameters
    labels: dict[str, str] = field(default_factory=dict)  # filter → what it shows (e.g. the endpoint's name)
    errors: tuple[str, ...] = ()
    # Key ids are credentials where the secret is not required: roles without keys.view see key names only.
    show_key_ids: bool = True

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    def previous(self) -> Query:
        return replace(self, start=self.start - self.span, end=self.start)

    def querystring(self, **overrides: str | None) -> str:
        return url.querystring(self.params, overrides)

    @property
    def grain(self) -> str:
        """The rollups totals and breakdowns read: local days are summed from hours (whole UTC days among them
        still come from day rows, selectors._spans)."""
        return "hour" if self.step == "day" else self.step

    @property
    def title(self) -> str:
        if self.range_key in RANGES:
            return RANGES[self.range_key][2]
        local = ZoneInfo(self.tz)
        return f"{self.start.astimezone(local):%Y-%m-%d %H:%M} – {self.end.astimezone(local):%Y-%m-%d %H:%M}"


def step_for(span: timedelta) -> str:
    if span <= timedelta(hours=6):
        return "minute"
    if span <= timedelta(days=14):
        return "hour"
    return "day"


def _floor(moment: datetime, step: str, tz: str) -> datetime:
    if step == "minute":
        return moment.replace(second=0, microsecond=0)
    if step == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    local = moment.astimezone(ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def _next(moment: datetime, step: str, tz: str) -> datetime:
    if step != "day":
        return moment + STEPS[step]
    local = moment.astimezone(ZoneInfo(tz))
    # The next local midnight (a day may last 23 or 25 hours across a DST change).
    following = (local + timedelta(days=1, hours=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    return following.astimezone(UTC)


def bucket_starts(query: Query) -> list[datetime]:
    starts, moment = [], _floor(query.start, query.step, query.tz)
    while moment < query.end:
        starts.append(moment)
        moment = _next(moment, query.step, query.tz)
    return starts


def parse(
    data: QueryDict | Mapping[str, str],
    *,
    team: Team | None,
    user_tz: str = "UTC",
    fixed: dict[str, str] | None = None,
    now: datetime | None = None,
    show_key_ids: bool = True,
) -> Query:
    """The dashboard query from URL parameters. Bad values are dropped with a message, never a 500.

    show_key_ids=False (a role without keys.view): keys are shown by name only, and a key filter is refused."""
    now = now or timezone.now()
    get = data.get
    errors: list[str] = []
    params: dict[str, str] = {}

    tz = params["tz"] = url.time_zone(get("tz"), default=user_tz, errors=errors)

    range_key = get("range") or DEFAULT_RANGE
    custom: tuple[datetime, datetime] | None = None
    if range_key == "custom":
        first, last = parse_local_datetime(get("start"), tz), parse_local_datetime(get("end"), tz)
        if first is None or last is None or first >= last:
            errors.append(
                f"A custom range needs a start before its end (YYYY-MM-DDTHH:MM, years {EARLIEST_YEAR}–{LATEST_YEAR}); "
                "showing the last 24 hours."
            )
            range_key = DEFAULT_RANGE
        elif last - first > timedelta(days=400):
            errors.append("A custom range can span at most 400 days; showing the last 24 hours.")
            range_key = DEFAULT_RANGE
        else:
            custom = (first, last)
            params["start"], params["end"] = get("start") or "", get("end") or ""
    if range_key != "custom" and range_key not in RANGES:
        errors.append(f"Unknown range {range_key[:32]!r}; showing the last 24 hours.")
        range_key = DEFAULT_RANGE
    if custom is None:
        span, step, _label = RANGES[range_key]
        end = _next(_floor(now, step, tz), step, tz)  # include the bucket in progress
        start = end - span
    else:
        start, end = custom
        step = step_for(end - start)
    params["range"] = range_key

    values = {**{k: (get(k) or "") for k in FILTER_PARAMS}, **(fixed or {})}
    labels: dict[str, str] = {}
    own = url.own_filters(
        team=team,
        endpoint=values["endpoint"],
        key=values["key"],
        show_key_ids=show_key_ids,
        params=params,
        errors=errors,
    )
    endpoint_ids: tuple[int, ...] = ()
    key_ids: tuple[int, ...] = ()
    if own.endpoint:
        endpoint_ids, labels["endpoint"] = (own.endpoint.pk,), own.endpoint.name
    if own.key:
        key_ids, labels["key"] = (own.key.pk,), own.key.name
    services: tuple[str, ...] = ()
    if values["service"]:
        name = selectors.service_name(service_id=values["service"])
        if name is None:
            errors.append(f"Unknown service {values['service']!r}; the filter was removed.")
        else:
            services, labels["service"] = (values["service"],), name
            params["service"] = values["service"]
    methods = (values["method"][:128],) if values["method"] else ()
    regions = (values["region"][:32],) if values["region"] else ()
    if methods:
        params["method"] = labels["method"] = methods[0]
    if regions:
        params["region"] = labels["region"] = regions[0]
    status = values["status"] or None
    if status and status not in STATUS_CLASSES:
        errors.append(f"Unknown status class {status!r}; use 2xx, 3xx, 4xx or 5xx.")
        status = None
    if status:
        params["status"] = labels["status"] = status
    stack = get("stack") or "service"
    if stack not in ("service", "endpoint"):
        stack = "service"
    if stack != "service":
        params["stack"] = stack
    return Query(
        range_key=range_key,
        start=start,
        end=end,
        step=step,
        tz=tz,
        filters=UsageFilter(endpoint_ids, key_ids, services, methods, regions),
        status=status,
        stack=stack,
        params=params,
        labels=labels,
        errors=tuple(errors),
        show_key_ids=show_key_ids,
    )


# --- panels -----------------------------------------------------------------------------------


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _change(now: float | None, before: float | None) -> float | None:
    if now is None or before is None or before == 0:
        return None
    return (now - before) / before


def _requests_of(row: Mapping[str, Any], status: str | None) -> int:
    return int(row[STATUS_CLASSES[status]] if status else row["requests"]) if row else 0


def _series_values(
    rows: Iterable[Mapping[Any, Any]], starts: list[datetime], value: Callable[[Mapping[Any, Any]], Any]
) -> list[Any]:
    by_bucket = {row["t"]: row for row in rows}
    return [value(by_bucket[s]) if s in by_bucket else None for s in starts]


def cards(*, team: Team | None, query: Query) -> dict[str, Any]:
    """The headline numbers, their change against the previous period, and sparklines."""
    current = selectors.usage_totals(
        team=team, start=query.start, end=query.end, grain=query.grain, filters=query.filters
    )
    before = selectors.usage_totals(
        team=team, start=query.start - query.span, end=query.start, grain=query.grain, filters=query.filters
    )
    starts = bucket_starts(query)
    fields: tuple[str, ...] = ("requests", "successes", "errors_user", "errors_upstream", "errors_gateway", "units")
    if query.status:
        fields += (STATUS_CLASSES[query.status],)
    rows = selectors.usage_series(
        team=team, start=query.start, end=query.end, step=query.step, filters=query.filters, tz=query.tz, fields=fields
    )
    latency = selectors.latency_series(
        team=team,
        start=query.start,
        end=query.end,
        step=query.step,
        filters=query.filters,
        tz=query.tz,
        quantiles=(0.9,),
    )
    requests = _requests_of(vars(current), query.status)
    requests_before = _requests_of(vars(before), query.status)
    return {
        "requests": requests,
        "requests_change": _change(requests, requests_before),
        "requests_spark": [v or 0 for v in _series_values(rows, starts, lambda r: _requests_of(r, query.status))],
        "success_rate": current.success_rate,
        "success_rate_change": (current.success_rate - before.success_rate)
        if current.success_rate is not None and before.success_rate is not None
        else None,
        "success_spark": _series_values(
            rows, starts, lambda r: selectors.success_rate(r["requests"], r["successes"], r["errors_user"])
        ),
        "errors": current.errors,
        "errors_user": current.errors_user,
        "errors_upstream": current.errors_upstream,
        "errors_gateway": current.errors_gateway,
        "errors_change": _change(current.errors, before.errors),
        "errors_spark": [
            v or 0
            for v in _series_values(
                rows, starts, lambda r: r["errors_user"] + r["errors_upstream"] + r["errors_gateway"]
            )
        ],
        "latency_avg": current.latency_avg_ms,
        "p50": current.percentiles.get(0.5),
        "p90": current.percentiles.get(0.9),
        "p99": current.percentiles.get(0.99),
        "p90_change": _change(current.percentiles.get(0.9), before.percentiles.get(0.9)),
        "latency_spark": _series_values(latency, starts, lambda r: r.get(0.9)),
        "units": current.units,
        "units_change": _change(current.units, before.units),
        "units_spark": [v or 0 for v in _series_values(rows, starts, lambda r: r["units"])],
        "input_tokens": current.input_tokens,
        "output_tokens": current.output_tokens,
        "has_data": current.requests > 0,
    }


TOP_SERIES = 7  # the chart palette has 8 colours: the 7 largest groups and "Other"


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def requests_chart(*, team: Team | None, query: Query, top: int | None = TOP_SERIES) -> dict[str, Any]:
    """Requests per bucket, one series per service (or endpoint), largest first: the `top` largest and the
    rest summed into "Other" (more stacked series than colours cannot be told apart); top=None keeps all.
    Two queries: the groups' totals, then the series of the largest (and of the rest, as one)."""
    starts = bucket_starts(query)
    counted = STATUS_CLASSES[query.status] if query.status else "requests"
    totals = selectors.usage_breakdown(
        team=team, start=query.start, end=query.end, by=query.stack, grain=query.grain, filters=query.filters,
        limit=None,
    )  # fmt: skip
    column = selectors.DIMENSIONS[query.stack]
    ordered = [row[column] for row in sorted(totals, key=lambda row: (-row[counted], str(row[column])))]
    shown, rest = ordered, []
    if top is not None and len(ordered) > top + 1:
        shown, rest = ordered[:top], ordered[top:]
    rows = selectors.usage_series(
        team=team, start=query.start, end=query.end, step=query.step, filters=query.filters, group_by=query.stack,
        tz=query.tz, fields=(counted,), groups=shown if rest else None,
    )  # fmt: skip
    per_group: dict[Any, dict[datetime, int]] = {}
    for row in rows:
        per_group.setdefault(row[column], {})[row["t"]] = int(row[counted])
    names = names_for(query.stack, shown)
    series = [
        {"label": names.get(g, str(g)), "values": [per_group.get(g, {}).get(s, 0) for s in starts]} for g in shown
    ]
    if rest:
        noun = "endpoints" if query.stack == "endpoint" else "services"
        other = per_group.get(None, {})
        series.append({"label": f"Other ({len(rest)} {noun})", "values": [other.get(s, 0) for s in starts]})
    return {"kind": "stacked", "unit": "count", "tz": query.tz, "step": query.step,
            "x": [_epoch(s) for s in starts], "series": series}  # fmt: skip


def latency_chart(*, team: Team | None, query: Query) -> dict[str, Any]:
    starts = bucket_starts(query)
    rows = selectors.latency_series(
        team=team, start=query.start, end=query.end, step=query.step, filters=query.filters, tz=query.tz
    )

    def ms(quantile: float) -> Callable[[Mapping[Any, Any]], float | None]:
        return lambda r: round(r[quantile], 2) if r.get(quantile) else None

    series = [
        {"label": label, "values": _series_values(rows, starts, ms(q))}
        for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
    ]
    return {"kind": "lines", "unit": "ms", "scale": "log", "tz": query.tz, "step": query.step,
            "x": [_epoch(s) for s in starts], "series": series}  # fmt: skip


def errors_chart(*, team: Team | None, query: Query) -> dict[str, Any]:
    """Error rate per bucket by class, as a percentage of that bucket's requests."""
    starts = bucket_starts(query)
    rows = selectors.usage_series(
        team=team, start=query.start, end=query.end, step=query.step, filters=query.filters, tz=query.tz,
        fields=("requests", "errors_user", "errors_upstream", "errors_gateway"),
    )  # fmt: skip

    def pct(column: str) -> Callable[[Mapping[Any, Any]], float | None]:
        return lambda r: round(100 * r[column] / r["requests"], 3) if r["requests"] else None

    series = [
        {"label": f"{label} errors", "values": _series_values(rows, starts, pct(column))}
        for label, column in (("user", "errors_user"), ("upstream", "errors_upstream"), ("gateway", "errors_gateway"))
    ]
    return {"kind": "lines", "unit": "percent", "tz": query.tz, "step": query.step,
            "x": [_epoch(s) for s in starts], "series": series}  # fmt: skip


def breakdown_table(*, team: Team | None, query: Query, by: str, limit: int = 10) -> list[dict[str, Any]]:
    """Top values of a dimension with their requests, error rate and p95 (two queries)."""
    rows = selectors.usage_breakdown(
        team=team, start=query.start, end=query.end, by=by, grain=query.grain, filters=query.filters, limit=limit
    )
    column = selectors.DIMENSIONS[by]
    values = [row[column] for row in rows]
    p95 = selectors.latency_percentiles_by(
        team=team, start=query.start, end=query.end, by=by, values=values, grain=query.grain, filters=query.filters
    )
    names = names_for(by, values, key_ids=query.show_key_ids)
    public = public_ids_for(by, values, key_ids=query.show_key_ids)
    total = sum(row["requests"] for row in rows) or 1
    return [
        {
            "value": row[column],
            "label": names.get(row[column], str(row[column])),
            "public_id": public.get(row[column]),
            "requests": row["requests"],
            "share": row["requests"] / total,
            "error_rate": _ratio(row["errors_user"] + row["errors_upstream"] + row["errors_gateway"], row["requests"]),
            "success_rate": selectors.success_rate(row["requests"], row["successes"], row["errors_user"]),
            "p95": p95.get(row[column], {}).get(0.95),
            "units": row["units"],
        }
        for row in rows
    ]


def names_for(by: str, ids: list[Any], *, key_ids: bool = True) -> dict[Any, str]:
    """Display names for the values a panel shows: one query, whatever the number of endpoints and keys.
    Keys are "name · key id", or the name alone for a role that does not see keys (key_ids=False)."""
    from endpoints.models import ApiKey, Endpoint, Service

    if by == "endpoint":
        return dict(Endpoint.objects.filter(pk__in=ids).values_list("pk", "name"))
    if by == "key":
        return {
            pk: f"{name} · {key_id}" if key_ids else name
            for pk, name, key_id in ApiKey.objects.filter(pk__in=ids).values_list("pk", "name", "key_id")
        }
    if by == "service":
        return dict(Service.objects.filter(pk__in=ids).values_list("pk", "name"))
    if by == "team":
        from accounts.models import Team

        return dict(Team.objects.filter(pk__in=ids).values_list("pk", "name"))
    return {}


def public_ids_for(by: str, ids: list[Any], *, key_ids: bool = True) -> dict[Any, str]:
    """Public ids for links to endpoint and key pages (none for other dimensions, nor keys when key_ids=False)."""
    from endpoints.models import ApiKey, Endpoint

    if by == "endpoint":
        return dict(Endpoint.objects.filter(pk__in=ids, deleted_at__isnull=True).values_list("pk", "public_id"))
    if by == "key" and key_ids:
        return dict(ApiKey.objects.filter(pk__in=ids).values_list("pk", "key_id"))
    return {}


def service_health(*, query: Query) -> list[dict[str, Any]]:
    """The operator's per-service view across all teams: traffic, error rate and p95."""
    return breakdown_table(team=None, query=query, by="service", limit=50)


def top_teams(*, query: Query) -> list[dict[str, Any]]:
    return breakdown_table(team=None, query=query, by="team", limit=10)
