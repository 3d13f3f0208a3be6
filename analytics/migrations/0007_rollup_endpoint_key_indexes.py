"""Endpoint and key indexes on the full hour and day rollups.

An endpoint or key page asking for its top methods or regions needs dimensions no summary cube keeps
together (analytics.summaries), so it reads the full rollups; without these indexes that meant every
row of the team in the range (bench/dashboard.py: ~200 ms for 90 days, 40 ms with them).
Built CONCURRENTLY: the rollups are written all the time.
"""

from django.db import migrations

TABLES = ("analytics_rollup_hour", "analytics_rollup_day", "analytics_latency_hour", "analytics_latency_day")


def forward() -> list[str]:
    return [
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {table}_{column} ON {table} (team_id, {column}_id, bucket)"
        for table in TABLES
        for column in ("endpoint", "key")
    ]


def backward() -> list[str]:
    return [f"DROP INDEX CONCURRENTLY IF EXISTS {table}_{column}" for table in TABLES for column in ("endpoint", "key")]


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("analytics", "0006_summary_models")]

    operations = [migrations.RunSQL(sql, reverse) for sql, reverse in zip(forward(), backward(), strict=True)]
