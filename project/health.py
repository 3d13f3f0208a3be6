"""Readiness checks shared by /readyz and the operator metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import connections
from django.utils import timezone

from project.celery import app as celery_app
from project.models import WorkerHeartbeat


@dataclass
class Check:
    ok: bool
    error: str = ""
    detail: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {"ok": self.ok, **self.detail}
        if self.error:
            result["error"] = self.error
        return result


def check_database() -> Check:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"
        connections["default"].close()
        return Check(ok=False, error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}")
    return Check(ok=True)


def check_broker() -> Check:
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
    except Exception as exc:
        return Check(ok=False, error=f"{type(exc).__name__}: {exc}")
    return Check(ok=True, detail={"transport": celery_app.conf.broker_url.split(":", 1)[0]})


def worker_heartbeat_age_seconds() -> float | None:
    """Seconds since any worker last ran the heartbeat task, or None if none ever has."""
    latest = WorkerHeartbeat.objects.order_by("-beat_at").values_list("beat_at", flat=True).first()
    if latest is None:
        return None
    return round((timezone.now() - latest).total_seconds(), 1)
