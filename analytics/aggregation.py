"""Aggregation: committed batches → minute, hour and day rollups and latency histograms, exactly once.

One run claims pending batches (FOR UPDATE SKIP LOCKED), adds their records into the minute
rollups and histograms with one INSERT … SELECT … ON CONFLICT DO UPDATE statement (a single scan of
the raw rows), marks the hours it touched dirty, marks the batches aggregated and updates keys'
last-used time — all in one transaction. Hours and days are then recomputed from the minutes by
compaction (replace, not add: a pure function of committed minute rows, so it may run any number
of times), and with them their summaries (analytics.summaries); per-batch upserts into three grains
cost twice as much (bench/ingest.py). So a run that
crashes half-way changes nothing, a run repeated or redelivered finds nothing left to add, and a
batch is never skipped: runs pick batches by their flag, not by a watermark, so a batch that
commits late is simply picked up by the next run.

Several runs may work at once (one per worker process): SKIP LOCKED gives each its own batches,
and every upsert takes its row locks in the same order (tables in a fixed order, rows sorted by
key), so concurrent runs wait for each other rather than deadlock. Should PostgreSQL still detect
a deadlock, the loser's transaction rolls back whole and its batches are retried.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from django.db.backends.utils import CursorWrapper
from psycopg.errors import DeadlockDetected

from analytics.histogram import SQL_BUCKET
from analytics.models import ROLLUP_COUNTERS
from analytics.partitions import ensure_all_partitions_today
from analytics.signals import rollups_updated
from analytics.summaries import grouped_columns, grouping_sets
from endpoints.services import api_keys_mark_used

# A run's cost follows the distinct groups (minute × team × endpoint × key × service × method × region) it
# touches, not its records: when aggregation falls behind, bigger runs share each upsert among more records
# and catch up. These bound one transaction.
DEFAULT_MAX_BATCHES = 400
DEFAULT_MAX_RECORDS = 1_000_000
DIMS = "team_id, endpoint_id, key_id, service, method, region"
CONFLICT = f"bucket, {DIMS}"


def _measures(latency: bool) -> tuple[str, str]:
    """The measure columns of a rollup (counters and latency max) or histogram table, and their sums over rows."""
    if latency:
        return "le, count", "le, sum(count)"
    columns = ", ".join(ROLLUP_COUNTERS) + ", latency_max_ms"
    sums = ", ".join(f"sum({c})" for c in ROLLUP_COUNTERS) + ", max(latency_max_ms)"
    return columns, sums


def _added(table: str) -> str:
    """ON CONFLICT … DO UPDATE SET: a rollup row plus the incoming one (counters add, the latency max is kept)."""
    updates = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in ROLLUP_COUNTERS)
    return f"{updates},\n        latency_max_ms = GREATEST({table}.latency_max_ms, EXCLUDED.latency_max_ms)"


def _rollup_upsert(table: str, grain: str, where: str = "") -> str:
    """Add the minute groups of `m` into a rollup table at `grain` (minute / hour / day)."""
    columns, sums = _measures(latency=False)
    return f"""
    INSERT INTO {table} (bucket, {DIMS}, {columns})
    SELECT date_trunc('{grain}', bucket), {DIMS}, {sums}
    FROM m {where}
    GROUP BY 1, {DIMS}
    ORDER BY 1, {DIMS}
    ON CONFLICT ({CONFLICT}) DO UPDATE SET {_added(table)}
    RETURNING 1"""


def _latency_upsert(table: str, grain: str, where: str = "") -> str:
    return f"""
    INSERT INTO {table} (bucket, {DIMS}, le, count)
    SELECT date_trunc('{grain}', bucket), {DIMS}, le, sum(count)
    FROM h {where}
    GROUP BY 1, {DIMS}, le
    ORDER BY 1, {DIMS}, le
    ON CONFLICT ({CONFLICT}, le) DO UPDATE SET count = {table}.count + EXCLUDED.count
    RETURNING 1"""


SUMMARY_KEY = "cube, team_id, bucket, endpoint_id, key_id, service, method, region"
SUMMARY_DIMS = "cube, endpoint_id, key_id, service, method, region, bucket, team_id"  # grouped_columns() order


def _summary_upsert(table: str, latency: bool, where: str) -> str:
    """Add the late groups of `m` (counters) or `h` (histograms) into the hour summaries, every cube at once."""
    columns, select = _measures(latency)
    if latency:
        source, key, le = "h", f"{SUMMARY_KEY}, le", ", le"
        updates = f"count = {table}.count + EXCLUDED.count"
    else:
        source, key, le, updates = "m", SUMMARY_KEY, "", _added(table)
    return f"""
    INSERT INTO {table} ({SUMMARY_DIMS}, {columns})
    SELECT {grouped_columns()}, date_trunc('hour', bucket), team_id, {select}
    FROM {source} {where}
    GROUP BY date_trunc('hour', bucket), team_id{le}, {grouping_sets()}
    ORDER BY 1, 2, 3, 4, 5, 6, 7, 8{", 9" if latency else ""}
    ON CONFLICT ({key}) DO UPDATE SET {updates}
    RETURNING 1"""


_RECENT = "WHERE bucket >= %(minute_floor)s"
_LATE = "WHERE bucket < %(minute_floor)s"

# Per run: minute rollups and histograms, plus the hours and days they touched marked dirty (compaction
# recomputes those from the minutes). Relays older than the minute tables' window go straight into the
# hour tables and the hour summaries, additively (exactly once like the minutes: same transaction as the
# batch flag), and mark their days dirty.
AGGREGATE_SQL = f"""
WITH g AS MATERIALIZED (
    -- One pass over the batches' relays, at the finest grain needed: minute × dimensions × latency bucket.
    SELECT date_trunc('minute', ts) AS bucket, {DIMS}, {SQL_BUCKET} AS le,
        count(*) AS requests,
        count(*) FILTER (WHERE error_class = 0) AS successes,
        count(*) FILTER (WHERE error_class = 1) AS errors_user,
        count(*) FILTER (WHERE error_class = 2) AS errors_upstream,
        count(*) FILTER (WHERE error_class = 3) AS errors_gateway,
        count(*) FILTER (WHERE status BETWEEN 200 AND 299) AS status_2xx,
        count(*) FILTER (WHERE status BETWEEN 300 AND 399) AS status_3xx,
        count(*) FILTER (WHERE status BETWEEN 400 AND 499) AS status_4xx,
        count(*) FILTER (WHERE status >= 500) AS status_5xx,
        sum(latency_ms::float8) AS latency_sum_ms,
        max(latency_ms::float8) AS latency_max_ms,
        sum(req_bytes::int8) AS req_bytes,
        sum(resp_bytes::int8) AS resp_bytes,
        sum(units::int8) AS units,
        sum(input_tokens::int8) AS input_tokens,
        sum(output_tokens::int8) AS output_tokens,
        max(ts) AS last_ts
    FROM analytics_relay
    WHERE batch_id = ANY(%(batches)s)
    GROUP BY 1, {DIMS}, le
),
m AS MATERIALIZED (
    SELECT bucket, {DIMS}, {", ".join(f"sum({c}) AS {c}" for c in ROLLUP_COUNTERS)},
        max(latency_max_ms) AS latency_max_ms, max(last_ts) AS last_ts
    FROM g
    GROUP BY bucket, {DIMS}
),
h AS (SELECT bucket, {DIMS}, le, requests AS count FROM g),
r_minute AS ({_rollup_upsert("analytics_rollup_minute", "minute", _RECENT)}),
l_minute AS ({_latency_upsert("analytics_latency_minute", "minute", _RECENT)}),
r_late AS ({_rollup_upsert("analytics_rollup_hour", "hour", _LATE)}),
l_late AS ({_latency_upsert("analytics_latency_hour", "hour", _LATE)}),
s_late AS ({_summary_upsert("analytics_summary_hour", False, _LATE)}),
sl_late AS ({_summary_upsert("analytics_summary_latency_hour", True, _LATE)}),
dirty_hours AS (
    INSERT INTO analytics_dirty_hour (bucket)
    SELECT DISTINCT date_trunc('hour', bucket) FROM m {_RECENT} ORDER BY 1
    ON CONFLICT DO NOTHING RETURNING 1
),
dirty_days AS (
    INSERT INTO analytics_dirty_day (bucket)
    SELECT DISTINCT date_trunc('day', bucket) FROM m {_LATE} ORDER BY 1
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT key_id, max(last_ts),
    (SELECT count(*) FROM r_minute) + (SELECT count(*) FROM l_minute)
      + (SELECT count(*) FROM r_late) + (SELECT count(*) FROM l_late)
      + (SELECT count(*) FROM s_late) + (SELECT count(*) FROM sl_late)
      + (SELECT count(*) FROM dirty_hours) + (SELECT count(*) FROM dirty_days)
FROM m GROUP BY key_id
"""


def _recompute(table_from: str, table_to: str, grain: str, latency: bool) -> str:
    """Replace the rows of the claimed buckets in table_to with the sums of table_from's rows inside them."""
    columns, select = _measures(latency)
    group = f"{DIMS}, le" if latency else DIMS
    return f"""
    DELETE FROM {table_to} WHERE bucket = ANY(%(buckets)s);
    INSERT INTO {table_to} (bucket, {DIMS}, {columns})
    SELECT date_trunc('{grain}', bucket), {DIMS}, {select}
    FROM {table_from}
    WHERE bucket >= %(low)s AND bucket < %(high)s AND date_trunc('{grain}', bucket) = ANY(%(buckets)s)
    GROUP BY 1, {group}
    """


def _summarize_hours(table_from: str, table_to: str, latency: bool) -> str:
    """Replace the claimed hours of a summary table with every cube of the (just recomputed) hour rollups."""
    columns, select = _measures(latency)
    le = ", le" if latency else ""
    return f"""
    DELETE FROM {table_to} WHERE bucket = ANY(%(buckets)s);
    INSERT INTO {table_to} ({SUMMARY_DIMS}, {columns})
    SELECT {grouped_columns()}, bucket, team_id, {select}
    FROM {table_from}
    WHERE bucket = ANY(%(buckets)s)
    GROUP BY bucket, team_id{le}, {grouping_sets()}
    """


def _summarize_days(table_from: str, table_to: str, latency: bool) -> str:
    """Replace the claimed days of a summary table with the sums of its hours (cube by cube)."""
    columns, select = _measures(latency)
    le = ", le" if latency else ""
    return f"""
    DELETE FROM {table_to} WHERE bucket = ANY(%(buckets)s);
    INSERT INTO {table_to} ({SUMMARY_KEY}, {columns})
    SELECT cube, team_id, date_trunc('day', bucket), endpoint_id, key_id, service, method, region, {select}
    FROM {table_from}
    WHERE bucket >= %(low)s AND bucket < %(high)s AND date_trunc('day', bucket) = ANY(%(buckets)s)
    GROUP BY cube, team_id, 3, endpoint_id, key_id, service, method, region{le}
    """


COMPACT_HOURS = [
    _recompute("analytics_rollup_minute", "analytics_rollup_hour", "hour", latency=False),
    _recompute("analytics_latency_minute", "analytics_latency_hour", "hour", latency=True),
    _summarize_hours("analytics_rollup_hour", "analytics_summary_hour", latency=False),
    _summarize_hours("analytics_latency_hour", "analytics_summary_latency_hour", latency=True),
]
COMPACT_DAYS = [
    _recompute("analytics_rollup_hour", "analytics_rollup_day", "day", latency=False),
    _recompute("analytics_latency_hour", "analytics_latency_day", "day", latency=True),
    _summarize_days("analytics_summary_hour", "analytics_summary_day", latency=False),
    _summarize_days("analytics_summary_latency_hour", "analytics_summary_latency_day", latency=True),
]


def minute_floor(now: datetime | None = None) -> datetime:
    """The oldest instant the minute tables hold (start of the oldest kept day)."""
    now = now or datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=settings.MINUTE_ROLLUP_RETENTION_DAYS - 1
    )


@dataclass
class CompactResult:
    hours: int = 0
    days: int = 0


# The open hour and day change with every run; recomputing them is throttled (closed ones go at once). The open
# hour is what the default views read (its day is read from hours: analytics.selectors._spans), so it is
# recomputed right after each aggregation run, at most every OPEN_HOUR_EVERY seconds, and after a compaction that
# took t seconds not again before OPEN_SHARE × t (compaction keeps to a fraction of a worker however large the
# hour grows). The open day serves only the day-grain charts.
OPEN_HOUR_EVERY = 2
OPEN_DAY_EVERY = 60
OPEN_SHARE = 10


def compact_rollups(
    *, max_buckets: int = 48, before: datetime | None = None, include_open: bool = True
) -> CompactResult:
    """Recompute dirty hours from their minutes, then dirty days from their hours (replace, not add).

    A function of committed minute rows, so running it twice, or crashing half-way, is harmless. An
    aggregation run that adds to an hour while it is recomputed marks the hour dirty again (its insert
    waits for our claim to commit), so the next compaction includes it. `before` limits it to buckets
    before an instant (partition maintenance compacts a day before dropping its minutes). With
    include_open=False the current hour and day are recomputed at most every OPEN_HOUR_EVERY and OPEN_DAY_EVERY
    seconds (or OPEN_SHARE times what the last such compaction took, when that is longer).
    """
    result = CompactResult()
    now = datetime.now(UTC)
    for table, statements, grain, step in (
        ("analytics_dirty_hour", COMPACT_HOURS, "hour", timedelta(hours=1)),
        ("analytics_dirty_day", COMPACT_DAYS, "day", timedelta(days=1)),
    ):
        open_bucket = now.replace(minute=0, second=0, microsecond=0)
        if grain == "day":
            open_bucket = open_bucket.replace(hour=0)
        upper = before
        throttle, every = f"compact:open-{grain}", OPEN_HOUR_EVERY if grain == "hour" else OPEN_DAY_EVERY
        paced = not include_open and cache.add(throttle, 1, timeout=every)
        if not include_open and not paced:
            upper = min(upper, open_bucket) if upper else open_bucket
        started = time.perf_counter()
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                limit = "AND bucket < %(before)s" if upper else ""
                cursor.execute(
                    f"""
                    DELETE FROM {table} WHERE bucket IN (
                        SELECT bucket FROM {table} WHERE true {limit}
                        ORDER BY bucket LIMIT %(n)s FOR UPDATE SKIP LOCKED
                    ) RETURNING bucket
                    """,
                    {"n": max_buckets, "before": upper},
                )
                buckets = sorted(row[0] for row in cursor.fetchall())
                if not buckets:
                    break
                params = {"buckets": buckets, "low": buckets[0], "high": buckets[-1] + step}
                for statement in statements:
                    cursor.execute(statement, params)
                if grain == "hour":
                    days = sorted({b.replace(hour=0) for b in buckets})
                    cursor.execute(
                        "INSERT INTO analytics_dirty_day (bucket) SELECT unnest(%s::timestamptz[]) "
                        "ON CONFLICT DO NOTHING",
                        [days],
                    )
                    result.hours += len(buckets)
                else:
                    result.days += len(buckets)
        spent = time.perf_counter() - started
        if paced and spent * OPEN_SHARE > every:
            cache.set(throttle, 1, timeout=math.ceil(spent * OPEN_SHARE))
    return result


@dataclass
class RunResult:
    batches: int = 0
    records: int = 0
    upserted_rows: int = 0
    seconds: float = 0.0
    deadlocks: int = 0
    full: bool = False  # the run took as much as its budget allowed: more may be waiting


def _candidates(cursor: CursorWrapper, max_batches: int, max_records: int) -> tuple[list[int], bool]:
    """The oldest pending batches that fit the run's budget (at least one), and whether the budget is used up."""
    cursor.execute(
        "SELECT id, record_count FROM analytics_ingestbatch WHERE aggregated_at IS NULL ORDER BY id LIMIT %s",
        [max_batches],
    )
    rows = cursor.fetchall()
    chosen: list[int] = []
    records = 0
    for batch_id, count in rows:
        if chosen and records + count > max_records:
            return chosen, True
        chosen.append(batch_id)
        records += count
    return chosen, len(rows) == max_batches


def aggregate_once(*, max_batches: int = DEFAULT_MAX_BATCHES, max_records: int = DEFAULT_MAX_RECORDS) -> RunResult:
    """Aggregate pending batches (within the budget) in one transaction. Safe to run any number of times."""
    started = time.perf_counter()
    result = RunResult()
    ensure_all_partitions_today()
    with transaction.atomic():
        with connection.cursor() as cursor:
            candidates, result.full = _candidates(cursor, max_batches, max_records)
            if not candidates:
                return result
            cursor.execute(  # another run may have claimed some meanwhile: skip those
                """
                SELECT id, record_count FROM analytics_ingestbatch
                WHERE id = ANY(%s) AND aggregated_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED
                """,
                [candidates],
            )
            claimed = cursor.fetchall()
            if not claimed:
                return result
            batch_ids = [row[0] for row in claimed]
            cursor.execute(AGGREGATE_SQL, {"batches": batch_ids, "minute_floor": minute_floor()})
            last_used = cursor.fetchall()
            cursor.execute("UPDATE analytics_ingestbatch SET aggregated_at = now() WHERE id = ANY(%s)", [batch_ids])
        api_keys_mark_used(last_used={key_pk: last for key_pk, last, _n in last_used})
        touched = [key_pk for key_pk, _last, _n in last_used]
        transaction.on_commit(lambda: rollups_updated.send(sender=RunResult, key_pks=touched))
        result.batches = len(batch_ids)
        result.records = sum(row[1] for row in claimed)
        result.upserted_rows = last_used[0][2] if last_used else 0
    result.seconds = time.perf_counter() - started
    return result


def aggregate_pending(
    *,
    time_budget_seconds: float = 20.0,
    max_batches: int = DEFAULT_MAX_BATCHES,
    max_records: int = DEFAULT_MAX_RECORDS,
    drain: bool = True,
) -> RunResult:
    """Run aggregate_once until nothing is pending (for this run to claim) or the time budget is spent.

    With drain=False it stops after a run that was not full: what arrived meanwhile waits for the next
    run, so runs come at the pace of their trigger and each shares its upserts among more records.
    """
    total = RunResult()
    deadline = time.monotonic() + time_budget_seconds
    while time.monotonic() < deadline:
        try:
            run = aggregate_once(max_batches=max_batches, max_records=max_records)
        except OperationalError as error:
            if not isinstance(error.__cause__, DeadlockDetected):
                raise
            total.deadlocks += 1  # rolled back whole: its batches are still pending, try again
            time.sleep(0.05)
            continue
        if run.batches == 0:
            break
        total.batches += run.batches
        total.records += run.records
        total.upserted_rows += run.upserted_rows
        total.seconds += run.seconds
        if not drain and not run.full:
            break
    return total
