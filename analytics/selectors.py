"""Reads of usage, for charts, budgets and billing. Charts read rollups only, never the raw relay log.

Every selector takes the tenant explicitly (`team`; None only for the operator's platform-wide
view) and a UsageFilter. The grain (minute / hour / day) decides which rollup table is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import F, Max, QuerySet, Sum
from django.db.models.functions import Trunc
from django.utils import timezone

from analytics import histogram
from analytics.models import (
    IngestBatch,
    LatencyDay,
    LatencyHour,
    LatencyMinute,
    RollupDay,
    RollupHour,
    RollupMinute,
)

GRAINS = ("minute", "hour", "day")
ROLLUPS = {"minute": RollupMinute, "hour": RollupHour, "day": RollupDay}
LATENCIES = {"minute": LatencyMinute, "hour": LatencyHour, "day": LatencyDay}
COUNTERS = ("requests", "successes", "errors_user", "errors_upstream", "errors_gateway", "status_2xx", "status_3xx",
            "status_4xx", "status_5xx", "latency_sum_ms", "req_bytes", "resp_bytes", "units", "input_tokens",
            "output_tokens")  # fmt: skip
DIMENSIONS = {"endpoint": "endpoint_id", "key": "key_id", "service": "service", "method": "method", "region": "region",
              "team": "team_id"}  # fmt: skip
STATUS_CLASSES = {"2xx": "status_2xx", "3xx": "status_3xx", "4xx": "status_4xx", "5xx": "status_5xx"}


@dataclass(frozen=True)
class UsageFilter:
    """Which relays to count. Empty tuples mean 'all'. Ids are the internal primary keys."""

    endpoint_ids: tuple[int, ...] = ()
    key_ids: tuple[int, ...] = ()
    services: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()

    def apply(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        for values, column in (
            (self.endpoint_ids, "endpoint_id"),
            (self.key_ids, "key_id"),
            (self.services, "service"),
            (self.methods, "method"),
            (self.regions, "region"),
        ):
            if values:
                queryset = queryset.filter(**{f"{column}__in": values})
        return queryset


NO_FILTER = UsageFilter()


@dataclass
class Totals:
    requests: int = 0
    successes: int = 0
    errors_user: int = 0
    errors_upstream: int = 0
    errors_gateway: int = 0
    status_2xx: int = 0
    status_3xx: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    req_bytes: int = 0
    resp_bytes: int = 0
    units: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    percentiles: dict[float, float | None] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.errors_user + self.errors_upstream + self.errors_gateway

    @property
    def success_rate(self) -> float | None:
        """Grove's definition: user-caused errors (bad key, rate limited, bad request) leave the denominator."""
        return success_rate(self.requests, self.successes, self.errors_user)

    @property
    def latency_avg_ms(self) -> float | None:
        return self.latency_sum_ms / self.requests if self.requests else None


def success_rate(requests: int, successes: int, errors_user: int) -> float | None:
    counted = requests - errors_user
    return successes / counted if counted > 0 else None


def _rows(team: Any, grain: str, start: datetime, end: datetime, filters: UsageFilter) -> QuerySet[Any]:
    model = ROLLUPS[grain]
    rows = model.objects.filter(bucket__gte=start, bucket__lt=end)
    if team is not None:
        rows = rows.filter(team_id=team.pk)
    return filters.apply(rows)


def _latency_rows(team: Any, grain: str, start: datetime, end: datetime, filters: UsageFilter) -> QuerySet[Any]:
    rows = LATENCIES[grain].objects.filter(bucket__gte=start, bucket__lt=end)
    if team is not None:
        rows = rows.filter(team_id=team.pk)
    return filters.apply(rows)


def _sums() -> dict[str, Any]:
    return {c: Sum(c) for c in COUNTERS} | {"latency_max_ms": Max("latency_max_ms")}


def usage_totals(
    *,
    team: Any,
    start: datetime,
    end: datetime,
    grain: str = "hour",
    filters: UsageFilter = NO_FILTER,
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99),
) -> Totals:
    """Totals over [start, end) at `grain`, with latency percentiles from the histograms."""
    values = _rows(team, grain, start, end, filters).aggregate(**_sums())
    totals = Totals(**{k: (v or 0) for k, v in values.items()})
    if quantiles:
        counts = _latency_rows(team, grain, start, end, filters).values_list("le").annotate(n=Sum("count"))
        totals.percentiles = histogram.percentiles(list(counts), quantiles)
    return totals


def usage_series(
    *,
    team: Any,
    start: datetime,
    end: datetime,
    step: str,
    filters: UsageFilter = NO_FILTER,
    group_by: str | None = None,
    tz: str = "UTC",
) -> list[dict[str, Any]]:
    """Counters per time bucket (and per group), oldest first. Day buckets follow the display time zone,
    so they are built from hour rollups; minute and hour buckets are absolute instants."""
    grain = "hour" if step == "day" and tz != "UTC" else step
    rows = _rows(team, grain, start, end, filters)
    if step == "day" and tz != "UTC":
        rows = rows.annotate(t=Trunc("bucket", "day", tzinfo=ZoneInfo(tz)))
    else:
        rows = rows.annotate(t=F("bucket"))
    keys = ["t"] + ([DIMENSIONS[group_by]] if group_by else [])
    return list(rows.values(*keys).annotate(**_sums()).order_by(*keys))


def usage_breakdown(
    *,
    team: Any,
    start: datetime,
    end: datetime,
    by: str,
    grain: str = "hour",
    filters: UsageFilter = NO_FILTER,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """The top `limit` values of a dimension by requests, with their counters."""
    column = DIMENSIONS[by]
    return list(
        _rows(team, grain, start, end, filters).values(column).annotate(**_sums()).order_by("-requests", column)[:limit]
    )


def latency_percentiles_by(
    *,
    team: Any,
    start: datetime,
    end: datetime,
    by: str,
    values: list[Any],
    grain: str = "hour",
    filters: UsageFilter = NO_FILTER,
    quantiles: tuple[float, ...] = (0.95,),
) -> dict[Any, dict[float, float | None]]:
    """Percentiles per value of a dimension (e.g. p95 of each of the top methods): one query."""
    column = DIMENSIONS[by]
    rows = (
        _latency_rows(team, grain, start, end, filters)
        .filter(**{f"{column}__in": values})
        .values_list(column, "le")
        .annotate(n=Sum("count"))
    )
    per_value: dict[Any, list[tuple[int, int]]] = {}
    for value, le, n in rows:
        per_value.setdefault(value, []).append((le, n))
    return {value: histogram.percentiles(counts, quantiles) for value, counts in per_value.items()}


def latency_series(
    *,
    team: Any,
    start: datetime,
    end: datetime,
    step: str,
    filters: UsageFilter = NO_FILTER,
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99),
    tz: str = "UTC",
) -> list[dict[str, Any]]:
    """Percentiles per time bucket, from the histograms (one query)."""
    grain = "hour" if step == "day" and tz != "UTC" else step
    rows = _latency_rows(team, grain, start, end, filters)
    if step == "day" and tz != "UTC":
        rows = rows.annotate(t=Trunc("bucket", "day", tzinfo=ZoneInfo(tz)))
    else:
        rows = rows.annotate(t=F("bucket"))
    per_bucket: dict[datetime, list[tuple[int, int]]] = {}
    for t, le, n in rows.values_list("t", "le").annotate(n=Sum("count")).order_by("t"):
        per_bucket.setdefault(t, []).append((le, n))
    return [{"t": t, **histogram.percentiles(c, quantiles)} for t, c in per_bucket.items()]


def requests_per_endpoint(*, team: Any, hours: int = 24) -> dict[int, list[int]]:
    """Requests per hour over the last `hours` hours for each of the team's endpoints (one query), oldest first."""
    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    starts = [start + timedelta(hours=i) for i in range(hours)]
    per_endpoint: dict[int, dict[datetime, int]] = {}
    for row in usage_series(team=team, start=start, end=end, step="hour", group_by="endpoint"):
        per_endpoint.setdefault(row["endpoint_id"], {})[row["t"]] = row["requests"]
    return {endpoint: [buckets.get(s, 0) for s in starts] for endpoint, buckets in per_endpoint.items()}


# --- ingestion health --------------------------------------------------------------------------


@dataclass
class IngestionHealth:
    pending_batches: int
    oldest_pending_age_seconds: float
    records_last_minute: int

    @property
    def records_per_second(self) -> float:
        return round(self.records_last_minute / 60.0, 1)


def ingestion_health() -> IngestionHealth:
    """How far aggregation is behind, and how fast records arrive (operator metrics, /readyz)."""
    now = timezone.now()
    pending = IngestBatch.objects.filter(aggregated_at__isnull=True)
    oldest = pending.order_by("id").values_list("received_at", flat=True).first()
    recent = IngestBatch.objects.filter(received_at__gte=now - timedelta(minutes=1)).aggregate(n=Sum("record_count"))
    return IngestionHealth(
        pending_batches=pending.count(),
        oldest_pending_age_seconds=round((now - oldest).total_seconds(), 1) if oldest else 0.0,
        records_last_minute=recent["n"] or 0,
    )
