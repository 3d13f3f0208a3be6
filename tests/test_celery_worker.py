import os
import subprocess
import sys
import time
import uuid

import pytest

from project.celery import app as celery_app
from project.models import WorkerHeartbeat
from project.tasks import worker_heartbeat
from tests.fixtures import BASE_DIR, database_url_for_current_test_db, subprocess_env


def test_celery_is_configured_for_safe_redelivery():
    conf = celery_app.conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit
    assert "project.tasks.worker_heartbeat" in celery_app.tasks


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_takes_a_task_from_redis_and_writes_to_the_database():
    assert celery_app.conf.broker_url.startswith("redis"), "this test is about the Redis broker"
    queue = f"test-{uuid.uuid4().hex[:12]}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "project", "worker", "--pool", "solo", "--queues", queue,
         "--hostname", f"{queue}@test", "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=database_url_for_current_test_db(), REDIS_URL=os.environ["REDIS_URL"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        worker_heartbeat.apply_async(queue=queue)  # published before or while the worker starts: it waits in Redis
        deadline = time.monotonic() + 60
        while not WorkerHeartbeat.objects.filter(hostname=f"{queue}@test").exists():
            assert worker.poll() is None, worker.stdout.read().decode() if worker.stdout else "worker died"
            assert time.monotonic() < deadline, "the worker did not run the task within 60 s"
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(30)
    assert WorkerHeartbeat.objects.get(hostname=f"{queue}@test").beat_at is not None
