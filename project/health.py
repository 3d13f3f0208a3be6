"""Readiness checks shared by /readyz and the operator metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
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


def ingestion_detail() -> dict[str, object]:
    from analytics.selectors import ingestion_health

    state = ingestion_health()
    return {
        "pending_batches": state.pending_batches,
        "oldest_unaggregated_batch_age_seconds": state.oldest_pending_age_seconds,
        "records_per_second_1m": state.records_per_second,
        # Ingestion keeps accepting while aggregation lags: this is information, not unreadiness.
        "aggregation_lagging": state.oldest_pending_age_seconds > settings.AGGREGATION_LAG_WARNING_SECONDS,
    }


def prometheus_text() -> str:
    """The operator's gauges, in the Prometheus text exposition format."""
    from analytics.selectors import ingestion_health
    from endpoints.models import GatewayCredential

    state = ingestion_health()
    now = timezone.now()
    lines = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    gauge("gatehouse_aggregation_lag_seconds", "Age of the oldest committed batch not yet in the rollups (0: none).",
          [("", state.oldest_pending_age_seconds)])  # fmt: skip
    gauge("gatehouse_pending_batches", "Committed batches not yet aggregated.", [("", state.pending_batches)])
    gauge("gatehouse_ingested_records_per_second", "Records accepted per second, averaged over the last minute.",
          [("", state.records_per_second)])  # fmt: skip
    age = worker_heartbeat_age_seconds()
    gauge("gatehouse_worker_heartbeat_age_seconds", "Seconds since a worker last ran the heartbeat task (-1: never).",
          [("", age if age is not None else -1)])  # fmt: skip
    seen = [
        (f'{{gateway="{name}"}}', round((now - last).total_seconds(), 1))
        for name, last in GatewayCredential.objects.filter(revoked_at__isnull=True, last_seen_at__isnull=False)
        .order_by("name")
        .values_list("name", "last_seen_at")
        if last is not None  # never None (filtered above): says so to the type checker
    ]
    gauge("gatehouse_gateway_last_seen_seconds", "Seconds since each gateway credential was last used.", seen)
    from analytics.selectors import quarantine_summary

    gauge("gatehouse_quarantined_records_7d", "Usage records set aside in the last 7 days (no key/endpoint/service).",
          [("", quarantine_summary().total)])  # fmt: skip
    return "\n".join(lines) + "\n"
