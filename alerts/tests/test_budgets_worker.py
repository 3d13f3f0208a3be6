"""Exactly once through the real Celery task code and a real worker: the aggregation task delivered twice (as a
redelivery does) and two workers' runs at once fire each threshold once, and a late record re-aggregated into the
period fires nothing again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest

from alerts.models import Budget, BudgetFiring
from alerts.services import period_of
from alerts.tests.test_budgets import CALL, _push
from analytics.models import IngestBatch
from analytics.tasks import aggregate_pending
from project.celery import app as celery_app
from tests.fixtures import BASE_DIR, database_url_for_current_test_db, subprocess_env
from webhooks.models import WebhookEvent


def _worker(queue: str, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "project", "worker", "--pool", "solo", "--queues", queue,
         "--hostname", f"{name}@test", "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=database_url_for_current_test_db(), REDIS_URL=os.environ["REDIS_URL"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def _batches_pending() -> bool:
    return IngestBatch.objects.filter(aggregated_at__isnull=True).exists()


def _wait(condition, workers, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for worker in workers:
            assert worker.poll() is None, worker.stdout.read().decode() if worker.stdout else "worker died"
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_redelivered_and_concurrent_aggregation_tasks_fire_each_threshold_once(usage, team_a, owner_a):
    assert celery_app.conf.broker_url.startswith("redis")
    budget = Budget.objects.create(team=team_a, scope="team", name="Month", amount=4 * CALL, thresholds=[50, 100])
    queue = f"test-{uuid.uuid4().hex[:12]}"
    workers = [_worker(queue, f"{queue}-{n}") for n in range(2)]
    try:
        _push(usage, 2)
        for _ in range(2):  # the same task twice: a redelivery after a lost ack looks just like this
            aggregate_pending.apply_async(queue=queue)
        _wait(lambda: BudgetFiring.objects.filter(budget=budget).exists(), workers, "the 50 % firing")

        _push(usage, 1)
        _push(usage, 1)
        for _ in range(4):  # two workers, four runs racing over two batches
            aggregate_pending.apply_async(queue=queue)
        _wait(lambda: BudgetFiring.objects.filter(budget=budget, threshold=100).exists(), workers, "the 100 % firing")

        # A late record (an hour old, same period) re-aggregated into the ledger: past 100 % already, nothing new.
        period_start, _end = period_of("month", usage.now)
        late_ts = max(usage.now - timedelta(hours=1), period_start + timedelta(minutes=1))
        late = usage.record(0, ts=late_ts.isoformat().replace("+00:00", "Z"))
        assert usage.post([late]).status_code == 202
        for _ in range(2):
            aggregate_pending.apply_async(queue=queue)
        _wait(lambda: not _batches_pending(), workers, "the late batch aggregated")
        time.sleep(1)  # anything still to fire would have by now (evaluation runs right after the commit)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    thresholds = sorted(BudgetFiring.objects.filter(budget=budget).values_list("threshold", flat=True))
    assert thresholds == [50, 100]
    types = sorted(WebhookEvent.objects.filter(team=team_a).values_list("type", flat=True))
    assert types == ["budget.exceeded", "budget.threshold_crossed", "budget.threshold_crossed"]
