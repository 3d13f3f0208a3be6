from __future__ import annotations

from celery import Task, shared_task

from project.services import worker_heartbeat_record


@shared_task(bind=True)
def worker_heartbeat(self: Task[[], None]) -> None:
    """Record that a worker is alive and consuming; safe to run any number of times."""
    worker_heartbeat_record(hostname=self.request.hostname or "unknown")
