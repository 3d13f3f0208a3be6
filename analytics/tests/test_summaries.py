"""Summaries (cubes) always equal the full rollups summed over the dimensions they leave out."""

import importlib
import random
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics import aggregation, selectors, summaries
from analytics.models import ROLLUP_COUNTERS
from analytics.selectors import UsageFilter
from endpoints.services import api_key_create, endpoint_create

pytestmark = pytest.mark.django_db

COUNTERS = ", ".join(f"sum({c})" for c in ROLLUP_COUNTERS) + ", max(latency_max_ms)"


def cube_rows(table, grain_table, cube, latency):
    """(rows of the summary table for a cube, the same computed from the full rollups), both sorted."""
    dims = [d for d in summaries.BITS if d in cube]
    columns = ["team_id", "bucket"] + [summaries.COLUMNS[d] for d in dims] + (["le"] if latency else [])
    values = "sum(count)" if latency else COUNTERS
    group = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {group}, {values} FROM {table} WHERE cube = %s GROUP BY {group} ORDER BY {group}",  # noqa: S608
            [summaries.cube_id(cube)],
        )
        stored = cursor.fetchall()
        cursor.execute(f"SELECT {group}, {values} FROM {grain_table} GROUP BY {group} ORDER BY {group}")  # noqa: S608
        expected = cursor.fetchall()
    return stored, expected


def assert_summaries_match_the_rollups():
    for grain in ("hour", "day"):
        for cube in summaries.CUBES:
            for table, full, latency in (
                (f"analytics_summary_{grain}", f"analytics_rollup_{grain}", False),
                (f"analytics_summary_latency_{grain}", f"analytics_latency_{grain}", True),
            ):
                stored, expected = cube_rows(table, full, cube, latency)
                assert expected, f"no {grain} rollups to compare"
                assert stored == expected, f"{table} cube {sorted(cube)} differs from {full}"


@pytest.fixture
def varied(usage, team_a, owner_a):
    """Relays over two endpoints, three keys, services, methods and regions, some past the minute window."""
    other = endpoint_create(team=team_a, name="Indexer", services=["base", "arbitrum"], actor=owner_a)
    other_key, _ = api_key_create(endpoint=other, name="indexer", actor=owner_a)
    keys = [(usage.key, ["eth-mainnet", "base"]), (other_key, ["base", "arbitrum"])]
    rng = random.Random(5)

    def batch(count, *, max_age):
        records = []
        for n in range(count):
            key, services = rng.choice(keys)
            ts = usage.now - timedelta(seconds=rng.randrange(int(max_age.total_seconds())))
            status = rng.choice([200, 200, 200, 429, 502])
            error = {429: "user", 502: "upstream"}.get(status)
            records.append(usage.record(n, key=key, ts=ts.isoformat(), service=rng.choice(services),
                                        method=rng.choice(["eth_call", "eth_getLogs", "eth_blockNumber"]),
                                        region=rng.choice(["eu-west-1", "us-east-1"]), status=status,
                                        error_class=error, latency_ms=rng.lognormvariate(3, 1),
                                        units=rng.choice([10, 26, 75])))  # fmt: skip
        assert usage.post(records).status_code == 202

    return batch


def test_every_cube_equals_the_rollups_summed_over_what_it_leaves_out(varied):
    varied(400, max_age=timedelta(days=3))
    varied(100, max_age=timedelta(days=30))  # partly older than the minute tables: the additive path
    aggregation.aggregate_pending()
    aggregation.compact_rollups()
    assert_summaries_match_the_rollups()


def test_late_relays_after_compaction_are_added_to_the_summaries_too(varied):
    varied(200, max_age=timedelta(days=20))
    aggregation.aggregate_pending()
    aggregation.compact_rollups()
    varied(150, max_age=timedelta(days=20))  # mostly into hours that were compacted already
    aggregation.aggregate_pending()
    aggregation.compact_rollups()
    assert_summaries_match_the_rollups()


def test_compacting_twice_changes_nothing(varied):
    varied(200, max_age=timedelta(days=2))
    aggregation.aggregate_pending()
    aggregation.compact_rollups()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), sum(requests) FROM analytics_summary_day")
        before = cursor.fetchone()
        cursor.execute("INSERT INTO analytics_dirty_hour SELECT DISTINCT bucket FROM analytics_rollup_hour")
    aggregation.compact_rollups()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), sum(requests) FROM analytics_summary_day")
        assert cursor.fetchone() == before
    assert_summaries_match_the_rollups()


def test_a_query_reads_the_smallest_cube_that_has_its_dimensions():
    assert summaries.cube_for([]) == summaries.cube_id(())
    assert summaries.cube_for(["team"]) == summaries.cube_id(())
    assert summaries.cube_for(["method"]) == summaries.cube_id({"service", "method"})
    assert summaries.cube_for(["endpoint"]) == summaries.cube_id({"endpoint", "service"})
    assert summaries.cube_for(["key", "service"]) == summaries.cube_id({"endpoint", "key", "service"})
    assert summaries.cube_for(["key", "method"]) is None  # only the full rollups have both
    with pytest.raises(ValueError, match="unknown"):
        summaries.cube_for(["colour"])


def test_selectors_give_the_same_answers_from_a_cube_as_from_the_full_rollups(varied, usage, team_a):
    varied(300, max_age=timedelta(days=2))
    aggregation.aggregate_pending()
    aggregation.compact_rollups()
    start, end = usage.now - timedelta(days=3), usage.now + timedelta(hours=1)
    for grain in ("hour", "day"):
        with CaptureQueriesContext(connection) as queries:
            from_cube = selectors.usage_breakdown(team=team_a, start=start, end=end, by="method", grain=grain)
        assert "analytics_summary_" in queries.captured_queries[0]["sql"]
        # A key filter with a method breakdown has no cube: the same figures, from the full rollups.
        every_key = UsageFilter(key_ids=tuple(team_a.api_keys.values_list("pk", flat=True)))
        with CaptureQueriesContext(connection) as queries:
            from_full = selectors.usage_breakdown(
                team=team_a, start=start, end=end, by="method", grain=grain, filters=every_key
            )
        assert "analytics_summary_" not in queries.captured_queries[0]["sql"]
        assert from_cube == from_full
        assert sum(row["requests"] for row in from_cube) == 300
        cube_totals = selectors.usage_totals(team=team_a, start=start, end=end, grain=grain)
        full_totals = selectors.usage_totals(team=team_a, start=start, end=end, grain=grain, filters=every_key)
        assert cube_totals == full_totals


def test_the_migration_builds_the_cubes_this_module_defines():
    migration = importlib.import_module("analytics.migrations.0005_summaries")
    assert summaries.grouping_sets() == migration.SETS
    assert summaries.grouped_columns() == migration.GROUPED
    # The partial indexes serve endpoint and key filters: their cube ids must be the cubes with those dimensions.
    assert summaries.cube_for(["endpoint"]) == 11
    assert summaries.cube_for(["key"]) == 3
    assert summaries.cube_for([]) == 31
    assert summaries.cube_for(["service"]) == 27


def test_hour_totals_over_days_read_whole_days_from_the_day_rows_and_agree_with_the_hours(varied, usage, team_a):
    varied(400, max_age=timedelta(days=5))
    aggregation.aggregate_pending()
    aggregation.compact_rollups()
    start = (usage.now - timedelta(days=4)).replace(hour=13, minute=0, second=0)  # mid-day to mid-day
    end = (usage.now - timedelta(days=1)).replace(hour=7, minute=0, second=0)
    assert [g for g, _s, _e in selectors._spans("hour", start, end)] == ["hour", "day", "hour"]
    with CaptureQueriesContext(connection) as queries:
        totals = selectors.usage_totals(team=team_a, start=start, end=end, grain="hour", quantiles=(0.5, 0.99))
    assert len(queries.captured_queries) == 2
    assert "analytics_summary_day" in queries.captured_queries[0]["sql"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(requests), sum(units), sum(errors_upstream), max(latency_max_ms) FROM analytics_rollup_hour "
            "WHERE team_id = %s AND bucket >= %s AND bucket < %s",
            [team_a.pk, start, end],
        )
        expected = cursor.fetchone()
        cursor.execute(
            "SELECT le, sum(count)::bigint FROM analytics_latency_hour "
            "WHERE team_id = %s AND bucket >= %s AND bucket < %s GROUP BY le",
            [team_a.pk, start, end],
        )
        histogram_rows = cursor.fetchall()
    assert expected[0] > 0
    assert (totals.requests, totals.units, totals.errors_upstream, totals.latency_max_ms) == expected
    from analytics import histogram

    assert totals.percentiles == histogram.percentiles(histogram_rows, (0.5, 0.99))
    # Short or day-aligned windows stay in one table.
    assert selectors._spans("hour", start, start + timedelta(hours=5)) == [("hour", start, start + timedelta(hours=5))]
    assert selectors._spans("day", start, end) == [("day", start, end)]
