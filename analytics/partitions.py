"""Daily range partitions for the raw relay log and the minute rollups: create ahead, drop whole days.

Retention never deletes rows one by one from a daily table: a day older than the window is
dropped with its partition. Relays older than the oldest daily partition (late records inside
the 35-day acceptance window) land in the raw log's DEFAULT partition, trimmed by DELETE.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction

logger = logging.getLogger(__name__)

# table → (storage options, has a DEFAULT partition)
DAILY_TABLES: dict[str, tuple[str, bool]] = {
    "analytics_relay": ("", True),
    "analytics_rollup_minute": ("WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02)", False),
    "analytics_latency_minute": ("WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02)", False),
}
DAYS_AHEAD = 3
_ensured: dict[str, date] = {}


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def retention_days(table: str) -> int:
    return settings.RAW_RETENTION_DAYS if table == "analytics_relay" else settings.MINUTE_ROLLUP_RETENTION_DAYS


def existing_days(table: str) -> set[date]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT child.relname FROM pg_inherits
            JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
            JOIN pg_class child ON child.oid = pg_inherits.inhrelid
            WHERE parent.relname = %s
            """,
            [table],
        )
        names = [row[0] for row in cursor.fetchall()]
    prefix = f"{table}_p"
    return {datetime.strptime(name[len(prefix) :], "%Y%m%d").date() for name in names if name.startswith(prefix)}


def ensure_partitions(table: str, today: date | None = None) -> list[str]:
    """Create the daily partitions up to DAYS_AHEAD days ahead.

    Going back, only on a table with no daily partition yet (the first migration): the DEFAULT
    partition may already hold rows of older days, and PostgreSQL refuses a partition whose
    range has rows in DEFAULT — so raising the retention later widens the window going forward.
    """
    today = today or datetime.now(UTC).date()
    storage, _default = DAILY_TABLES[table]
    have = existing_days(table)
    created = []
    first = today - timedelta(days=retention_days(table) - 1)
    if have:
        first = max(first, min(have))
    day = first
    while day <= today + timedelta(days=DAYS_AHEAD):
        if day not in have:
            name = partition_name(table, day)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} "
                    f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}') {storage}"
                )
            created.append(name)
        day += timedelta(days=1)
    return created


def ensure_all_partitions_today() -> None:
    """Once per process per day: make sure today's and the next days' partitions exist (cheap afterwards).

    A failure here is logged, not raised: relays without their day's partition still land in the
    raw log's DEFAULT partition, and the hourly maintenance task tries again.
    """
    today = datetime.now(UTC).date()
    for table in DAILY_TABLES:
        if _ensured.get(table) != today:
            try:
                with transaction.atomic():
                    ensure_partitions(table, today)
            except DatabaseError:
                logger.exception("could not create partitions of %s", table)
                continue
            _ensured[table] = today


def drop_expired_partitions(today: date | None = None) -> list[str]:
    """Drop daily partitions older than each table's retention; trim the raw log's DEFAULT partition."""
    today = today or datetime.now(UTC).date()
    dropped = []
    for table, (_storage, has_default) in DAILY_TABLES.items():
        keep_from = today - timedelta(days=retention_days(table) - 1)
        for day in sorted(existing_days(table)):
            if day < keep_from:
                name = partition_name(table, day)
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP TABLE IF EXISTS {name}")
                dropped.append(name)
        if has_default:
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {table}_default WHERE ts < %s", [keep_from])  # noqa: S608
    return dropped
