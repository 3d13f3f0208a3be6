"""Freshness: what an aggregation run adds reaches the hour rollups the default views read at once, and reads over
whole days take the current day from its hours (its day rows are recomputed only every OPEN_DAY_EVERY seconds).
bench/freshness.py measures it end to end on the real stack."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.db import connection

from analytics import aggregation, selectors, tasks

pytestmark = pytest.mark.django_db


def hour_requests(team) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(requests), 0) FROM analytics_rollup_hour WHERE team_id = %s", [team.pk])
        return cursor.fetchone()[0]


def push(usage, count: int) -> datetime:
    at = datetime.now(UTC)
    stamp = at.isoformat().replace("+00:00", "Z")
    assert usage.post([usage.record(n, ts=stamp) for n in range(count)]).status_code == 202
    return at


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def test_the_aggregation_task_recomputes_the_hours_it_touched_the_open_one_paced(usage, team_a):
    at = push(usage, 5)
    tasks.aggregate_pending()
    assert hour_requests(team_a) == 5  # before: the open hour waited for beat's compaction, up to a minute
    day = selectors.usage_totals(team=team_a, start=at - timedelta(hours=24), end=at + timedelta(hours=1))
    assert day.requests == 5

    push(usage, 3)
    tasks.aggregate_pending()  # within OPEN_HOUR_EVERY of the last: the minutes have it, the open hour waits
    if hour_of(datetime.now(UTC)) != hour_of(at):
        pytest.skip("the hour turned during the test: a closed hour is recomputed at once")
    assert hour_requests(team_a) == 5
    cache.delete("compact:open-hour")  # the pace has passed
    aggregation.compact_rollups(include_open=False)
    assert hour_requests(team_a) == 8


def test_a_slow_recomputation_of_the_open_hour_spaces_out_the_next(usage, team_a, monkeypatch):
    monkeypatch.setattr(aggregation, "OPEN_SHARE", 100_000)  # any compaction now "costs" far more than the pace
    push(usage, 2)
    aggregation.aggregate_pending()
    aggregation.compact_rollups(include_open=False)
    key = cache.make_and_validate_key("compact:open-hour")
    ttl = cache._cache.get_client(key).ttl(key)
    assert ttl > aggregation.OPEN_HOUR_EVERY

    monkeypatch.setattr(aggregation, "OPEN_SHARE", 1)
    cache.delete("compact:open-hour")
    aggregation.compact_rollups(include_open=False)
    assert 0 < cache._cache.get_client(key).ttl(key) <= aggregation.OPEN_HOUR_EVERY


def test_reads_over_whole_days_take_the_current_day_from_its_hours(usage, team_a):
    at = push(usage, 4)
    aggregation.aggregate_pending()
    aggregation.compact_rollups()
    today = at.replace(hour=0, minute=0, second=0, microsecond=0)
    with connection.cursor() as cursor:  # today's day rows behind its hours, as between their paced recomputations
        for table in ("analytics_rollup_day", "analytics_summary_day"):
            cursor.execute(f"UPDATE {table} SET requests = 0, units = 0 WHERE bucket = %s", [today])  # noqa: S608
    if datetime.now(UTC) >= today + timedelta(days=1):
        pytest.skip("the day turned during the test")
    start, end = today - timedelta(days=2), today + timedelta(days=3)  # whole days around today
    assert [g for g, _s, _e in selectors._spans("hour", start, end)] == ["day", "hour"]
    assert selectors.usage_totals(team=team_a, start=start, end=end, grain="hour").requests == 4
    rows = selectors.usage_by(team=team_a, start=start, end=end, by=("service",), fields=("requests", "units"))
    assert sum(row["requests"] for row in rows) == 4
    assert selectors.usage_breakdown(team=team_a, start=start, end=end, by="method")[0]["requests"] == 4
