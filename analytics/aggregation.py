"""Aggregation: committed batches → minute, hour and day rollups and latency histograms, exactly once.

One run claims pending batches (FOR UPDATE SKIP LOCKED), adds their records into every rollup
with one INSERT … SELECT … ON CONFLICT DO UPDATE statement (a single scan of the raw rows), marks
the batches aggregated and updates keys' last-used time — all in one transaction. So a run that
crashes half-way changes nothing, a run repeated or redelivered finds nothing left to add, and a
batch is never skipped: runs pick batches by their flag, not by a watermark, so a batch that
commits late is simply picked up by the next run. Runs are serialised by an advisory lock (the
upserts of two runs would otherwise risk deadlocks); scaling out means sharding batches by team.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from analytics.histogram import SQL_BUCKET
from analytics.partitions import ensure_all_partitions_today
from endpoints.services import api_keys_mark_used

AGGREGATION_LOCK = 0x67617465_61676772  # "gateaggr"
DEFAULT_MAX_BATCHES = 40  # ≤ 200k records per transaction at 5,000 per batch
DIMS = "team_id, endpoint_id, key_id, service, method, region"
CONFLICT = f"bucket, {DIMS}"
COUNTERS = ("requests", "successes", "errors_user", "errors_upstream", "errors_gateway", "status_2xx", "status_3xx",
            "status_4xx", "status_5xx", "latency_sum_ms", "req_bytes", "resp_bytes", "units", "input_tokens",
            "output_tokens")  # fmt: skip


def _rollup_upsert(table: str, grain: str, where: str = "") -> str:
    """Add the minute groups of `m` into a rollup table at `grain` (minute / hour / day)."""
    sums = ", ".join(f"sum({c})" for c in COUNTERS)
    updates = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in COUNTERS)
    return f"""
    INSERT INTO {table} (bucket, {DIMS}, {", ".join(COUNTERS)}, latency_max_ms)
    SELECT date_trunc('{grain}', bucket), {DIMS}, {sums}, max(latency_max_ms)
    FROM m {where}
    GROUP BY 1, {DIMS}
    ORDER BY 1, {DIMS}
    ON CONFLICT ({CONFLICT}) DO UPDATE SET {updates},
        latency_max_ms = GREATEST({table}.latency_max_ms, EXCLUDED.latency_max_ms)
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


_MINUTE_FLOOR = "WHERE bucket >= %(minute_floor)s"

AGGREGATE_SQL = f"""
WITH raw AS MATERIALIZED (
    SELECT * FROM analytics_relay WHERE batch_id = ANY(%(batches)s)
),
m AS MATERIALIZED (
    SELECT date_trunc('minute', ts) AS bucket, {DIMS},
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
    FROM raw
    GROUP BY 1, {DIMS}
),
h AS MATERIALIZED (
    SELECT date_trunc('minute', ts) AS bucket, {DIMS}, {SQL_BUCKET} AS le, count(*) AS count
    FROM raw
    GROUP BY 1, {DIMS}, le
),
r_minute AS ({_rollup_upsert("analytics_rollup_minute", "minute", _MINUTE_FLOOR)}),
r_hour AS ({_rollup_upsert("analytics_rollup_hour", "hour")}),
r_day AS ({_rollup_upsert("analytics_rollup_day", "day")}),
l_minute AS ({_latency_upsert("analytics_latency_minute", "minute", _MINUTE_FLOOR)}),
l_hour AS ({_latency_upsert("analytics_latency_hour", "hour")}),
l_day AS ({_latency_upsert("analytics_latency_day", "day")})
SELECT key_id, max(last_ts),
    (SELECT count(*) FROM r_minute) + (SELECT count(*) FROM r_hour) + (SELECT count(*) FROM r_day)
      + (SELECT count(*) FROM l_minute) + (SELECT count(*) FROM l_hour) + (SELECT count(*) FROM l_day)
FROM m GROUP BY key_id
"""


@dataclass
class RunResult:
    batches: int = 0
    records: int = 0
    upserted_rows: int = 0
    seconds: float = 0.0
    skipped_locked: bool = False


def aggregate_once(*, max_batches: int = DEFAULT_MAX_BATCHES) -> RunResult:
    """Aggregate up to max_batches pending batches in one transaction. Safe to run any number of times."""
    started = time.perf_counter()
    result = RunResult()
    ensure_all_partitions_today()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [AGGREGATION_LOCK])
            if not cursor.fetchone()[0]:
                result.skipped_locked = True  # another run is at work; it (or the next one) takes these batches
                return result
            cursor.execute(
                """
                SELECT id, record_count FROM analytics_ingestbatch
                WHERE aggregated_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
                """,
                [max_batches],
            )
            claimed = cursor.fetchall()
            if not claimed:
                return result
            batch_ids = [row[0] for row in claimed]
            minute_floor = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
                days=settings.MINUTE_ROLLUP_RETENTION_DAYS - 1
            )
            cursor.execute(AGGREGATE_SQL, {"batches": batch_ids, "minute_floor": minute_floor})
            last_used = cursor.fetchall()
            cursor.execute("UPDATE analytics_ingestbatch SET aggregated_at = now() WHERE id = ANY(%s)", [batch_ids])
        api_keys_mark_used(last_used={key_pk: last for key_pk, last, _n in last_used})
        result.batches = len(batch_ids)
        result.records = sum(row[1] for row in claimed)
        result.upserted_rows = last_used[0][2] if last_used else 0
    result.seconds = time.perf_counter() - started
    return result


def aggregate_pending(*, time_budget_seconds: float = 20.0, max_batches: int = DEFAULT_MAX_BATCHES) -> RunResult:
    """Run aggregate_once until nothing is pending or the time budget is spent."""
    total = RunResult()
    deadline = time.monotonic() + time_budget_seconds
    while time.monotonic() < deadline:
        run = aggregate_once(max_batches=max_batches)
        if run.skipped_locked:
            total.skipped_locked = True
            break
        if run.batches == 0:
            break
        total.batches += run.batches
        total.records += run.records
        total.upserted_rows += run.upserted_rows
        total.seconds += run.seconds
    return total
