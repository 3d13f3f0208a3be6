import math
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, connection, connections

from analytics import aggregation, histogram, partitions, selectors
from analytics.models import IngestBatch, RollupDay, RollupHour, RollupMinute
from analytics.selectors import usage_totals
from analytics.tasks import aggregate_pending as aggregate_task
from analytics.tasks import compact_rollups as compact_task
from analytics.tasks import maintain_partitions

pytestmark = pytest.mark.django_db


def totals(model, **filters):
    from django.db.models import Sum

    return model.objects.filter(**filters).aggregate(requests=Sum("requests"), units=Sum("units"))


def aggregate():
    """An aggregation run, then compaction of the hours and days it touched (as beat does)."""
    run = aggregation.aggregate_once()
    aggregation.compact_rollups()
    return run


def window(usage, days=2):
    return {"start": usage.now - timedelta(days=days), "end": usage.now + timedelta(hours=1)}


def test_rollups_hold_exactly_what_was_ingested(usage, team_a):
    records = [
        usage.record(0, status=200, latency_ms=12.0, units=26, req_bytes=100, resp_bytes=1000),
        usage.record(1, status=429, error_class="user", latency_ms=1.5, units=0, req_bytes=100, resp_bytes=50),
        usage.record(2, status=502, error_class="upstream", latency_ms=3000.0, units=26, req_bytes=100, resp_bytes=60),
        usage.record(3, status=503, error_class="gateway", latency_ms=2.0, units=0, req_bytes=100, resp_bytes=10),
        usage.record(4, status=304, latency_ms=8.0, units=10, req_bytes=100, resp_bytes=0, method="eth_getBalance"),
        usage.record(5, key=usage.llm_key, service="llama-3.1-8b-instruct", method="chat.completions", latency_ms=850.0,
                     units=900, input_tokens=600, output_tokens=300, region="us-east-1"),
    ]  # fmt: skip
    assert usage.post(records).status_code == 202
    run = aggregate()
    assert (run.batches, run.records) == (1, 6)
    for model in (RollupMinute, RollupHour, RollupDay):
        assert totals(model, team_id=team_a.pk) == {"requests": 6, "units": 962}, model
    t = usage_totals(team=team_a, **window(usage))
    assert (t.requests, t.successes, t.errors_user, t.errors_upstream, t.errors_gateway) == (6, 3, 1, 1, 1)
    assert (t.status_2xx, t.status_3xx, t.status_4xx, t.status_5xx) == (2, 1, 1, 2)
    assert (t.req_bytes, t.resp_bytes, t.input_tokens, t.output_tokens) == (800, 1120 + 900, 600, 300)
    assert t.latency_max_ms == 3000.0
    assert t.latency_sum_ms == pytest.approx(12 + 1.5 + 3000 + 2 + 8 + 850)
    assert t.success_rate == pytest.approx(3 / 5)  # the user error leaves the denominator (Grove's definition)
    by_method = {
        row["method"]: row["requests"] for row in selectors.usage_breakdown(team=team_a, by="method", **window(usage))
    }
    assert by_method == {"eth_call": 4, "eth_getBalance": 1, "chat.completions": 1}
    usage.key.refresh_from_db()
    assert usage.key.last_used_at == max(datetime.fromisoformat(r["ts"]) for r in records[:5])


def test_a_duplicate_batch_and_a_second_run_count_nothing_twice(usage, team_a):
    records = [usage.record(n) for n in range(40)]
    usage.post(records, key="dup")
    usage.post(records, key="dup")
    aggregate()
    second = aggregate()
    aggregate_task()  # the Celery task's code, run again
    compact_task()
    assert second.batches == 0
    assert totals(RollupMinute, team_id=team_a.pk)["requests"] == 40
    assert totals(RollupDay, team_id=team_a.pk)["requests"] == 40


@pytest.mark.django_db(transaction=True)
def test_a_failure_after_the_upsert_but_before_commit_leaves_no_trace(usage, team_a):
    usage.post([usage.record(n) for n in range(30)])
    with connection.cursor() as cursor:  # a real database failure at the last step: marking the batch
        cursor.execute(
            """
            CREATE FUNCTION fail_mark() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'injected failure after the rollup upsert'; END $$;
            CREATE TRIGGER fail_mark BEFORE UPDATE ON analytics_ingestbatch FOR EACH ROW EXECUTE FUNCTION fail_mark();
            """
        )
    try:
        with pytest.raises(DatabaseError, match="injected failure"):
            aggregation.aggregate_once()
        assert totals(RollupMinute, team_id=team_a.pk)["requests"] is None
        assert IngestBatch.objects.get().aggregated_at is None
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER fail_mark ON analytics_ingestbatch; DROP FUNCTION fail_mark();")
    aggregate()
    assert totals(RollupMinute, team_id=team_a.pk)["requests"] == 30
    assert totals(RollupHour, team_id=team_a.pk)["requests"] == 30


@pytest.mark.django_db(transaction=True)
def test_a_batch_held_by_another_run_is_left_to_it_and_nothing_is_skipped(usage, team_a):
    usage.post([usage.record(n) for n in range(5)])
    held = IngestBatch.objects.get()
    usage.post([usage.record(n) for n in range(7)])
    other = connections.create_connection("default")  # another run, in the middle of claiming `held`
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            cursor.execute("SELECT id FROM analytics_ingestbatch WHERE id = %s FOR UPDATE", [held.pk])
        first = aggregation.aggregate_once()
        assert (first.batches, first.records) == (1, 7)  # it skipped the held batch instead of waiting or doubling
        other.rollback()  # the other run died; its batch is pending again
    finally:
        other.close()
    assert aggregation.aggregate_once().records == 5
    assert totals(RollupMinute, team_id=team_a.pk)["requests"] == 12


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_count_every_record_once(usage, team_a):
    for _ in range(12):
        usage.post(
            [usage.record(n, method=random.choice(["eth_call", "eth_getBalance", "eth_getLogs"])) for n in range(200)]
        )
    errors = []

    def run():
        try:
            aggregation.aggregate_pending(max_batches=2)
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert not IngestBatch.objects.filter(aggregated_at__isnull=True).exists()
    aggregation.compact_rollups()
    for model in (RollupMinute, RollupHour, RollupDay):
        assert totals(model, team_id=team_a.pk)["requests"] == 2400


def test_late_records_land_in_their_own_buckets(usage, team_a):
    three_days = (usage.now - timedelta(days=3)).replace(minute=17, second=5)
    twenty_days = (usage.now - timedelta(days=20)).replace(minute=3, second=0)
    records = [usage.record(1, ts=three_days.isoformat()), usage.record(2, ts=twenty_days.isoformat())]
    assert usage.post(records).status_code == 202
    aggregate()
    minute = set(RollupMinute.objects.filter(team_id=team_a.pk).values_list("bucket", flat=True))
    hours = set(RollupHour.objects.filter(team_id=team_a.pk).values_list("bucket", flat=True))
    days = set(RollupDay.objects.filter(team_id=team_a.pk).values_list("bucket", flat=True))
    assert minute == {three_days.replace(second=0)}  # 20 days is past the minute rollups' 7-day window
    assert hours == {three_days.replace(minute=0, second=0), twenty_days.replace(minute=0, second=0)}
    assert days == {d.replace(hour=0, minute=0, second=0) for d in (three_days, twenty_days)}
    with connection.cursor() as cursor:  # the 20-day-old relay sits in the DEFAULT partition (past raw retention)
        cursor.execute("SELECT count(*) FROM analytics_relay_default")
        assert cursor.fetchone()[0] == 1


# --- percentiles ---------------------------------------------------------------------------------


def exact_percentile(values, q):
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


DISTRIBUTIONS = {
    "lognormal": lambda rng: rng.lognormvariate(3.5, 0.8),
    "bimodal": lambda rng: rng.gauss(15, 2) if rng.random() < 0.8 else rng.gauss(900, 120),
    "heavy tail": lambda rng: rng.paretovariate(1.2) * 5,
    "sub-millisecond": lambda rng: rng.uniform(0.15, 0.9),
}


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_percentiles_are_within_5_percent_of_the_exact_values(usage, team_a, name):
    rng = random.Random(42)
    values = [max(0.11, round(DISTRIBUTIONS[name](rng), 3)) for _ in range(3000)]
    usage.post([usage.record(n, latency_ms=v) for n, v in enumerate(values)])
    aggregate()
    t = usage_totals(team=team_a, quantiles=(0.5, 0.9, 0.99), **window(usage))
    for q in (0.5, 0.9, 0.99):
        exact = exact_percentile(values, q)
        assert t.percentiles[q] == pytest.approx(exact, rel=0.05), (name, q, exact, t.percentiles[q])


def test_the_histogram_bucket_formula_agrees_with_sql():
    samples = [0.05, 0.1, 0.1001, 0.5, 1, 1.0905, 7.3, 99.9, 1000, 65_000]
    with connection.cursor() as cursor:
        for value in samples:
            cursor.execute(f"SELECT {histogram.SQL_BUCKET} FROM (SELECT %s::real AS latency_ms) x", [value])  # noqa: S608
            assert abs(cursor.fetchone()[0] - histogram.bucket_of(value)) <= 1, value  # float rounding at edges


# --- partitions and retention -----------------------------------------------------------------


def test_partitions_are_created_ahead_and_dropped_after_retention(settings):
    today = datetime.now(UTC).date()
    created = partitions.ensure_partitions("analytics_relay", today + timedelta(days=10))
    assert partitions.partition_name("analytics_relay", today + timedelta(days=13)) in created
    days = partitions.existing_days("analytics_relay")
    assert today + timedelta(days=13) in days
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO analytics_relay VALUES (%s, 1, 1, 1, 1, 'x', 's', 'm', 'r', 200, 0, 1, 1, 1, 1, 0, 0)",
            [datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)],
        )
    far_future = today + timedelta(days=settings.RAW_RETENTION_DAYS + 5)
    dropped = partitions.drop_expired_partitions(far_future)
    assert partitions.partition_name("analytics_relay", today + timedelta(days=1)) in dropped
    assert partitions.partition_name("analytics_rollup_minute", today) in dropped
    assert min(partitions.existing_days("analytics_relay")) >= far_future - timedelta(
        days=settings.RAW_RETENTION_DAYS - 1
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM analytics_relay")
        assert cursor.fetchone()[0] == 0  # the day's rows went with its partition


def test_maintenance_creates_todays_partitions_and_trims_old_hour_rollups(settings):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO analytics_rollup_hour VALUES (%s, 1, 1, 1, 's', 'm', 'r', 1,1,0,0,0,1,0,0,0,1,1,0,0,0,0,0)",
            [datetime.now(UTC) - timedelta(days=settings.HOUR_ROLLUP_RETENTION_DAYS + 2)],
        )
    maintain_partitions()
    today = datetime.now(UTC).date()
    for table in partitions.DAILY_TABLES:
        assert {today, today + timedelta(days=partitions.DAYS_AHEAD)} <= partitions.existing_days(table)
    assert RollupHour.objects.count() == 0


# --- lag and health ---------------------------------------------------------------------------------


def test_lag_is_reported_until_the_batch_is_aggregated(usage, client, admin_user):
    usage.post([usage.record(n) for n in range(9)])
    IngestBatch.objects.update(received_at=usage.now - timedelta(seconds=90))
    state = selectors.ingestion_health()
    assert state.pending_batches == 1
    assert state.oldest_pending_age_seconds >= 90
    assert client.get("/readyz").status_code == 200  # lagging aggregation does not stop ingestion
    client.force_login(admin_user)
    ready = client.get("/readyz").json()
    assert ready["ingestion"]["pending_batches"] == 1
    assert ready["ingestion"]["aggregation_lagging"] is True
    text = client.get("/metrics").content.decode()
    assert "# TYPE gatehouse_aggregation_lag_seconds gauge" in text
    lag = float(
        next(line.split()[1] for line in text.splitlines() if line.startswith("gatehouse_aggregation_lag_seconds"))
    )
    assert lag >= 90
    assert 'gatehouse_gateway_last_seen_seconds{gateway="eu-west-1"}' in text
    aggregation.aggregate_once()
    assert selectors.ingestion_health().pending_batches == 0


def test_metrics_need_the_token_or_a_staff_session(client, settings, usage):
    assert client.get("/metrics").status_code == 401
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")


def test_raising_the_retention_never_collides_with_rows_in_the_default_partition(settings):
    oldest = min(partitions.existing_days("analytics_relay"))
    with connection.cursor() as cursor:  # a late relay from before the oldest daily partition
        cursor.execute(
            "INSERT INTO analytics_relay VALUES (%s, 1, 1, 1, 1, 'late', 's', 'm', 'r', 200, 0, 1, 1, 1, 1, 0, 0)",
            [datetime.combine(oldest - timedelta(days=2), datetime.min.time(), tzinfo=UTC)],
        )
    settings.RAW_RETENTION_DAYS = 30
    partitions.ensure_partitions("analytics_relay")  # must not try to create the older days
    assert min(partitions.existing_days("analytics_relay")) == oldest


def test_a_run_reports_whether_it_used_up_its_budget(usage, team_a):
    for _ in range(3):
        assert usage.post([usage.record(n) for n in range(10)]).status_code == 202
    first = aggregation.aggregate_once(max_batches=2)
    assert (first.batches, first.full) == (2, True)  # two of three: more is waiting
    last = aggregation.aggregate_once(max_batches=2)
    assert (last.batches, last.full) == (1, False)
    for _ in range(2):
        usage.post([usage.record(n) for n in range(10)])
    by_records = aggregation.aggregate_once(max_records=15)
    assert (by_records.batches, by_records.full) == (1, True)  # the record budget ran out first


def test_paced_runs_still_drain_a_backlog_that_fills_them(usage, team_a):
    for _ in range(5):
        usage.post([usage.record(n) for n in range(10)])
    run = aggregation.aggregate_pending(max_batches=2, drain=False)
    assert (run.batches, run.records) == (5, 50)  # 2 + 2 (full, so on at once) + 1 (not full: stop)
    assert not IngestBatch.objects.filter(aggregated_at__isnull=True).exists()
