"""A real Celery worker process is killed in the middle of an aggregation: nothing is lost, nothing doubles."""

import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest
from django.db import connection
from django.db.models import Sum

from analytics.aggregation import compact_rollups
from analytics.models import IngestBatch, RollupDay, RollupMinute
from analytics.tasks import aggregate_pending
from tests.fixtures import BASE_DIR, database_url_for_current_test_db, subprocess_env


def _sleeping_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
        return cursor.fetchone()[0]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_aggregation_counts_every_record_once(usage, team_a):
    assert usage.post([usage.record(n) for n in range(20)]).status_code == 202
    with connection.cursor() as cursor:
        # The first attempt to mark the batch sleeps inside the aggregation's transaction (after the
        # rollup upsert); sequences ignore rollbacks, so later attempts go straight through.
        cursor.execute(
            """
            CREATE SEQUENCE crash_once;
            CREATE FUNCTION crash_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF nextval('crash_once') = 1 THEN PERFORM pg_sleep(4); END IF; RETURN NEW; END $$;
            CREATE TRIGGER crash_once BEFORE UPDATE ON analytics_ingestbatch FOR EACH ROW EXECUTE FUNCTION crash_once();
            """
        )
    queue = f"crash-{uuid.uuid4().hex[:10]}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "project", "worker", "--pool", "prefork", "--concurrency", "1",
         "--queues", queue, "--hostname", f"{queue}@test", "--without-mingle", "--without-gossip",
         "--loglevel", "WARNING"],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=database_url_for_current_test_db(), REDIS_URL=os.environ["REDIS_URL"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        aggregate_pending.apply_async(queue=queue)
        deadline = time.monotonic() + 60
        while _sleeping_backends() == 0:
            assert time.monotonic() < deadline, "the aggregation never reached the injected pause"
            time.sleep(0.1)
        children = psutil.Process(worker.pid).children()
        assert children, "no pool process to kill"
        for child in children:
            child.send_signal(signal.SIGKILL)  # the OOM killer, mid-transaction
        assert totals(team_a) == 0  # nothing committed by the killed attempt
        # Beat would queue a sweep every 2 s; do the same until the batch is in.
        while IngestBatch.objects.filter(aggregated_at__isnull=True).exists():
            assert time.monotonic() < deadline, "the batch was never aggregated after the crash"
            aggregate_pending.apply_async(queue=queue)
            time.sleep(2)
    finally:
        worker.terminate()
        worker.wait(30)
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER crash_once ON analytics_ingestbatch")
            cursor.execute("DROP FUNCTION crash_once(); DROP SEQUENCE crash_once;")
    assert totals(team_a) == 20
    compact_rollups()
    assert RollupDay.objects.filter(team_id=team_a.pk).aggregate(n=Sum("requests"))["n"] == 20


def totals(team) -> int:
    return RollupMinute.objects.filter(team_id=team.pk).aggregate(n=Sum("requests"))["n"] or 0
