from django.db import models


class WorkerHeartbeat(models.Model):
    """Last time a Celery worker ran the heartbeat task; /readyz reports its age."""

    hostname = models.CharField(max_length=255, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"
