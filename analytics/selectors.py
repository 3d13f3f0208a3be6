"""Reads of usage, for charts, budgets and billing. Charts read rollups only, never the raw relay log.

Every selector takes the tenant explicitly (`team`; None only for the operator's platform-wide
view) and a UsageFilter. The grain (minute / hour / day) decides which rollup table is read; at hour
and day grain, the smallest summary cube with every dimension the query filters or groups by
(analytics.summaries), and the full rollups only when no cube has them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import BigIntegerField, Case, Count, F, Func, Max, QuerySet, Sum, Value, When
from django.db.models.functions import Cast
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone

from accounts.models import Team
from analytics import histogram, summaries
from analytics.models import (
    ROLLUP_COUNTERS,
    IngestBatch,
    LatencyDay,
    LatencyHour,
    LatencyMinute,
    QuarantinedRecord,
    QuarantineReason,
    RollupDay,
    RollupHour,
    RollupMinute,
    SummaryDay,
    SummaryHour,
    SummaryLatencyDay,
    SummaryLatencyHour,
)
from endpoints.models import ApiKey, Endpoint, Service

GRAINS = ("minute", "hour", "day")
ROLLUPS = {"minute": RollupMinute, "hour": RollupHour, "day": RollupDay}
LATENCIES = {"minute": LatencyMinute, "hour": LatencyHour, "day": LatencyDay}
SUMMARIES = {"hour": SummaryHour, "day": SummaryDay}
LATENCY_SUMMARIES = {"hour": SummaryLatencyHour, "day": SummaryLatencyDay}
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

    @property
    def dimensions(self) -> set[str]:
        """The dimensions this filter restricts."""
        pairs = (("endpoint", self.endpoint_ids), ("key", self.key_ids), ("service", self.services),
                 ("method", self.methods), ("region", self.regions))  # fmt: skip
        return {dim for dim, values in pairs if values}

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


GroupBy = str | tuple[str, ...] | None


def _source(
    full: dict[str, Any], summary: dict[str, Any], grain: str, filters: UsageFilter, group_by: GroupBy
) -> QuerySet[Any]:
    """The rows to read at `grain`: the smallest cube with the dimensions needed, else the full rollups."""
    grouped = {group_by} if isinstance(group_by, str) else set(group_by or ())
    cube = summaries.cube_for(filters.dimensions | grouped) if grain in summary else None
    if cube is None:
        return full[grain].objects.all()
    return summary[grain].objects.filter(cube=cube)


def _rows(
    team: Team | None,
    grain: str,
    start: datetime,
    end: datetime,
    filters: UsageFilter,
    group_by: GroupBy = None,
) -> QuerySet[Any]:
    rows = _source(ROLLUPS, SUMMARIES, grain, filters, group_by).filter(bucket__gte=start, bucket__lt=end)
    if team is not None:
        rows = rows.filter(team_id=team.pk)
    return filters.apply(rows)


def _latency_rows(
    team: Team | None, grain: str, start: datetime, end: datetime, filters: UsageFilter, group_by: str | None = None
) -> QuerySet[Any]:
    rows = _source(LATENCIES, LATENCY_SUMMARIES, grain, filters, group_by).filter(bucket__gte=start, bucket__lt=end)
    if team is not None:
        rows = rows.filter(team_id=team.pk)
    return filters.apply(rows)


def _sum(column: str) -> Any:
    """sum() of a counter, as bigint (PostgreSQL sums bigints as numeric, which loads as a slow Decimal)."""
    return Sum(column) if column == "latency_sum_ms" else Cast(Sum(column), BigIntegerField())


def _sums(fields: tuple[str, ...] = ROLLUP_COUNTERS) -> dict[str, Any]:
    sums = {c: _sum(c) for c in fields}
    return sums | {"latency_max_ms": Max("latency_max_ms")} if fields == ROLLUP_COUNTERS else sums


class _BucketStart(Func):
    """A bucket's start as epoch seconds: the row's own bucket, or the start of the local day (in `tz`, DST
    included) holding it. Loading an integer is several times cheaper than loading a timestamptz."""

    output_field = BigIntegerField()

    def __init__(self, tz: str | None) -> None:
        super().__init__(F("bucket"), Value(tz or "UTC"))
        self.local_day = tz is not None

    def as_sql(
        self,
        compiler: SQLCompiler,
        connection: BaseDatabaseWrapper,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> tuple[str, tuple[Any, ...]]:
        bucket_sql, bucket_params = compiler.compile(self.source_expressions[0])
        if not self.local_day:
            return f"EXTRACT(EPOCH FROM {bucket_sql})::bigint", tuple(bucket_params)
        tz_sql, tz_params = compiler.compile(self.source_expressions[1])
        sql = f"EXTRACT(EPOCH FROM timezone({tz_sql}, date_trunc('day', timezone({tz_sql}, {bucket_sql}))))::bigint"
        return sql, (*tz_params, *tz_params, *bucket_params)


def _bucket_starts(rows: QuerySet[Any], step: str, tz: str) -> tuple[QuerySet[Any], Any]:
    """rows annotated with t (epoch seconds of the bucket start), and the function turning t into a datetime."""
    zone = ZoneInfo(tz)
    instants: dict[int, datetime] = {}

    def instant(epoch: int) -> datetime:
        if epoch not in instants:
            instants[epoch] = datetime.fromtimestamp(epoch, zone)
        return instants[epoch]

    return rows.annotate(t=_BucketStart(tz if step == "day" and tz != "UTC" else None)), instant


def _spans(grain: str, start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """[start, end) at hour grain as the whole UTC days inside it (day rows) and the hours either side of
    them: the same hour buckets, up to 24 times fewer rows. The current UTC day is read from its hours: its day
    rows are recomputed only every aggregation.OPEN_DAY_EVERY, its open hour right after each aggregation run.
    Other grains stay as they are."""
    if grain != "hour":
        return [(grain, start, end)]
    first_day = _utc_midnight(start)
    if first_day < start:
        first_day += timedelta(days=1)
    last_day = min(_utc_midnight(end), _utc_midnight(timezone.now()))
    if last_day <= first_day:
        return [("hour", start, end)]
    spans = [("hour", start, first_day), ("day", first_day, last_day), ("hour", last_day, end)]
    return [(g, s, e) for g, s, e in spans if s < e]


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _utc_midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _series_grain(step: str, tz: str) -> str:
    """The rollups a series reads: day buckets in a time zone other than UTC are local days, summed from hours."""
    return "hour" if step == "day" and tz != "UTC" else step


def usage_totals(
    *,
    team: Team | None,
    start: datetime,
    end: datetime,
    grain: str = "hour",
    filters: UsageFilter = NO_FILTER,
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99),
) -> Totals:
    """Totals over [start, end) at `grain`, with latency percentiles from the histograms (two queries)."""
    spans = _spans(grain, start, end)
    parts = [_rows(team, g, s, e, filters).order_by().values("team_id").annotate(**_sums()) for g, s, e in spans]
    totals = Totals()
    for part in _union(parts):
        for name in ROLLUP_COUNTERS:
            setattr(totals, name, getattr(totals, name) + (part[name] or 0))
        totals.latency_max_ms = max(totals.latency_max_ms, part["latency_max_ms"] or 0)
    if quantiles:
        histograms = [
            _latency_rows(team, g, s, e, filters).order_by().values_list("le").annotate(n=_sum("count"))
            for g, s, e in spans
        ]
        counts: dict[int, int] = {}
        for le, n in _union(histograms):
            counts[le] = counts.get(le, 0) + n
        totals.percentiles = histogram.percentiles(counts, quantiles)
    return totals


def usage_series(
    *,
    team: Team | None,
    start: datetime,
    end: datetime,
    step: str,
    filters: UsageFilter = NO_FILTER,
    group_by: str | None = None,
    tz: str = "UTC",
    fields: tuple[str, ...] | None = None,
    groups: list[Any] | None = None,
) -> list[dict[str, Any]]:
    """Counters (all, or `fields`) per time bucket (and per group), oldest first. Day buckets follow the
    display time zone, so they are built from hour rollups; minute and hour buckets are absolute instants.
    With `groups`, only those values of group_by are kept apart; all others are summed under None."""
    grain = _series_grain(step, tz)
    rows, instant = _bucket_starts(_rows(team, grain, start, end, filters, group_by), step, tz)
    keys = ["t"]
    if group_by:
        column = DIMENSIONS[group_by]
        if groups is not None:
            kept = Case(When(**{f"{column}__in": groups}, then=F(column)), default=Value(None))
            rows = rows.annotate(**{f"{column}_kept": kept})
            keys.append(f"{column}_kept")
        else:
            keys.append(column)
    result = list(rows.values(*keys).annotate(**_sums(fields or ROLLUP_COUNTERS)).order_by(*keys))
    if group_by and groups is not None:
        for row in result:
            row[DIMENSIONS[group_by]] = row.pop(f"{DIMENSIONS[group_by]}_kept")
    for row in result:
        row["t"] = instant(row["t"])
    return result


def _union(querysets: list[QuerySet[Any]]) -> QuerySet[Any]:
    return querysets[0].union(*querysets[1:], all=True) if len(querysets) > 1 else querysets[0]


def usage_by(
    *,
    team: Team | None,
    start: datetime,
    end: datetime,
    by: tuple[str, ...],
    fields: tuple[str, ...],
    filters: UsageFilter = NO_FILTER,
    hourly: bool = False,
    fresh: bool = False,
) -> list[dict[str, Any]]:
    """`fields` summed per combination of the `by` dimensions over [start, end) (e.g. per service and method,
    for rating): one query, whole UTC days from day rows and the rest from hours. hourly=True keeps each
    hour apart (a `bucket` key; hour rows only). fresh=True reads the last hour and the open one from the minute
    rollups, which an aggregation run updates at once (hours are recomputed from them later)."""
    columns = [DIMENSIONS[d] for d in by]
    if hourly:
        rows = _rows(team, "hour", start, end, filters, by).order_by()
        return list(rows.values("bucket", *columns).annotate(**_sums(fields)).order_by("bucket", *columns))
    spans = _spans("hour", start, end)
    if fresh:
        cut = min(max(start, _hour_floor(timezone.now()) - timedelta(hours=1)), end)
        spans = _spans("hour", start, cut) + ([("minute", cut, end)] if cut < end else [])
    parts = [
        _rows(team, g, s, e, filters, by).order_by().values(*columns).annotate(**_sums(fields)) for g, s, e in spans
    ]
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in _union(parts):
        key = tuple(row[c] for c in columns)
        total = merged.setdefault(key, dict(zip(columns, key, strict=True)) | dict.fromkeys(fields, 0))
        for name in fields:
            total[name] += row[name] or 0
    return [merged[key] for key in sorted(merged, key=str)]


def usage_breakdown(
    *,
    team: Team | None,
    start: datetime,
    end: datetime,
    by: str,
    grain: str = "hour",
    filters: UsageFilter = NO_FILTER,
    limit: int | None = 10,
) -> list[dict[str, Any]]:
    """The top `limit` values (None: all) of a dimension by requests, with their counters (one query)."""
    column = DIMENSIONS[by]
    spans = _spans(grain, start, end)
    parts = [_rows(team, g, s, e, filters, by).order_by().values(column).annotate(**_sums()) for g, s, e in spans]
    if len(parts) == 1:
        return list(parts[0].order_by("-requests", column)[:limit])
    merged: dict[Any, dict[str, Any]] = {}
    for row in _union(parts):
        total = merged.setdefault(
            row[column], {column: row[column], "latency_max_ms": 0.0} | dict.fromkeys(ROLLUP_COUNTERS, 0)
        )
        for name in ROLLUP_COUNTERS:
            total[name] += row[name] or 0
        total["latency_max_ms"] = max(total["latency_max_ms"], row["latency_max_ms"] or 0)
    return sorted(merged.values(), key=lambda row: (-row["requests"], row[column]))[:limit]


def latency_percentiles_by(
    *,
    team: Team | None,
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
    parts = [
        _latency_rows(team, g, s, e, filters, by)
        .filter(**{f"{column}__in": values})
        .order_by()
        .values_list(column, "le")
        .annotate(n=_sum("count"))
        for g, s, e in _spans(grain, start, end)
    ]
    per_value: dict[Any, dict[int, int]] = {}
    for value, le, n in _union(parts):
        counts = per_value.setdefault(value, {})
        counts[le] = counts.get(le, 0) + n
    return {value: histogram.percentiles(counts, quantiles) for value, counts in per_value.items()}


def latency_series(
    *,
    team: Team | None,
    start: datetime,
    end: datetime,
    step: str,
    filters: UsageFilter = NO_FILTER,
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99),
    tz: str = "UTC",
) -> list[dict[str | float, Any]]:
    """Percentiles per time bucket, from the histograms (one query): {"t": bucket start, quantile: ms or None}."""
    grain = _series_grain(step, tz)
    rows, instant = _bucket_starts(_latency_rows(team, grain, start, end, filters), step, tz)
    per_bucket: dict[int, list[tuple[int, int]]] = {}
    for t, le, n in rows.values_list("t", "le").annotate(n=_sum("count")).order_by("t"):
        per_bucket.setdefault(t, []).append((le, n))
    points: list[dict[str | float, Any]] = []
    for t, counts in per_bucket.items():
        point: dict[str | float, Any] = {"t": instant(t)}
        for quantile, ms in histogram.percentiles(counts, quantiles).items():
            point[quantile] = ms
        points.append(point)
    return points


def requests_per_endpoint(*, team: Team, hours: int = 24) -> dict[int, list[int]]:
    """Requests per hour over the last `hours` hours for each of the team's endpoints (one query), oldest first."""
    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    starts = [start + timedelta(hours=i) for i in range(hours)]
    per_endpoint: dict[int, dict[datetime, int]] = {}
    for row in usage_series(team=team, start=start, end=end, step="hour", group_by="endpoint"):
        per_endpoint.setdefault(row["endpoint_id"], {})[row["t"]] = row["requests"]
    return {endpoint: [buckets.get(s, 0) for s in starts] for endpoint, buckets in per_endpoint.items()}


# --- what the filters name: the team's endpoints and keys, the catalog's services -----------------


class Named(NamedTuple):
    pk: int
    name: str


def endpoint_named(*, team: Team | None, public_id: str) -> Named | None:
    """The team's endpoint with this public id, deleted ones included (their usage stays); None if not the team's."""
    row = Endpoint.objects.filter(team=team, public_id=public_id).values_list("pk", "name").first()
    return Named(*row) if row else None


def key_named(*, team: Team | None, key_id: str) -> Named | None:
    """The team's key with this key id (revoked ones included); None if not the team's."""
    row = ApiKey.objects.filter(team=team, key_id=key_id).values_list("pk", "name").first()
    return Named(*row) if row else None


def endpoint_choices(*, team: Team, include_deleted: bool = False) -> list[tuple[str, str]]:
    """(public id, name) of the team's endpoints, by name: the endpoint filter's options."""
    endpoints = Endpoint.objects.filter(team=team)
    if not include_deleted:
        endpoints = endpoints.live()
    return list(endpoints.order_by("name").values_list("public_id", "name"))


def key_choices(*, team: Team) -> list[tuple[str, str]]:
    """(key id, name) of the keys of the team's live endpoints, by name: the key filter's options."""
    keys = ApiKey.objects.filter(team=team, endpoint__deleted_at__isnull=True)
    return list(keys.order_by("name").values_list("key_id", "name"))


def service_name(*, service_id: str) -> str | None:
    """The catalog name of a service (None: not in the catalog)."""
    return Service.objects.filter(pk=service_id).values_list("name", flat=True).first()


def team_has_endpoint(*, team: Team) -> bool:
    return Endpoint.objects.filter(team=team).live().exists()


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


@dataclass
class QuarantineSummary:
    total: int
    by_reason: list[dict[str, Any]]  # {reason, label, gateway, records, last_received_at}
    since: datetime


def quarantine_records() -> QuerySet[QuarantinedRecord]:
    """Every quarantined record, newest first, with its gateway (the operator's quarantine page pages through it)."""
    return QuarantinedRecord.objects.select_related("gateway").order_by("-received_at", "-id")


def quarantine_summary(*, days: int = 7) -> QuarantineSummary:
    """Records the gateways sent that no team could be billed for, by reason and gateway (operator page)."""
    since = timezone.now() - timedelta(days=days)
    rows = list(
        QuarantinedRecord.objects.filter(received_at__gte=since)
        .values("reason", "gateway__name")
        .annotate(records=Count("id"), last_received_at=Max("received_at"))
        .order_by("-records", "reason", "gateway__name")
    )
    labels = dict(QuarantineReason.choices)
    by_reason = [
        {"reason": row["reason"], "label": labels.get(row["reason"], row["reason"]), "gateway": row["gateway__name"],
         "records": row["records"], "last_received_at": row["last_received_at"]}
        for row in rows
    ]  # fmt: skip
    return QuarantineSummary(total=sum(row["records"] for row in rows), by_reason=by_reason, since=since)


# --- health: what alert rules read -------------------------------------------------------------


@dataclass(frozen=True)
class HealthFigures:
    """A window's relays, its failures by who caused them, and its p95 latency (ms; None without relays)."""

    relays: int
    errors_user: int
    errors: int  # upstream + gateway: the failures the success rate counts against the service
    p95_ms: float | None

    @property
    def counted(self) -> int:
        """The relays an error rate is over: the success rate's denominator (user errors leave it)."""
        return self.relays - self.errors_user

    @property
    def error_rate(self) -> float | None:
        """The share of counted relays that failed: 1 − success_rate, None when nothing counts."""
        return self.errors / self.counted if self.counted > 0 else None


def health_figures(
    *,
    team: Team,
    start: datetime,
    end: datetime,
    endpoint_id: int | None = None,
    service: str = "",
    p95: bool = True,
) -> HealthFigures:
    """The team's relays, errors and p95 latency over [start, end) from the minute rollups and minute latency
    histograms, optionally for one endpoint (pk) and/or one service id: what a health alert rule reads (one query,
    two with p95)."""
    filters = UsageFilter(endpoint_ids=(endpoint_id,) if endpoint_id else (), services=(service,) if service else ())
    totals = usage_totals(
        team=team, start=start, end=end, grain="minute", filters=filters, quantiles=(0.95,) if p95 else ()
    )
    return HealthFigures(
        relays=totals.requests,
        errors_user=totals.errors_user,
        errors=totals.errors_upstream + totals.errors_gateway,
        p95_ms=totals.percentiles.get(0.95),
    )
