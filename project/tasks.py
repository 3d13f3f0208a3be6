from celery import shared_task

from project.services import worker_heartbeat_record


@shared_task(bind=True)
def worker_heartbeat(self) -> None:  # type: ignore[no-untyped-def]
    """Record that a worker is alive and consuming; safe to run any number of times."""
    worker_heartbeat_record(hostname=self.request.hostname or "unknown")
