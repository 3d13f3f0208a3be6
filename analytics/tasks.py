from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import connection
from django.utils import timezone

from analytics import aggregation, partitions

logger = logging.getLogger(__name__)
# Quarantined records are kept as long as the gateway may still send a record (35 days), for the operator to look at.
QUARANTINE_RETENTION = timedelta(days=35)


@shared_task(ignore_result=True)
def aggregate_pending() -> dict[str, float]:
    """Roll up the committed batches not yet aggregated. Queued on commit (debounced) and by beat, both paced by
    AGGREGATION_INTERVAL_SECONDS; a run that fills its budget goes on, so a backlog still drains at once."""
    result = aggregation.aggregate_pending(time_budget_seconds=20.0, drain=False)
    if result.batches:  # the hours it touched, the open one included (paced): the default views read them
        aggregation.compact_rollups(include_open=False)
        logger.info(
            "aggregated %s batches (%s records) in %.2f s",
            result.batches,
            result.records,
            result.seconds,
            extra={"batches": result.batches, "records": result.records},
        )
    return {"batches": result.batches, "records": result.records}


@shared_task(ignore_result=True)
def compact_rollups() -> dict[str, int]:
    """Recompute dirty hours and days from the minute rollups (after each aggregation run, and every 15 s by beat)."""
    result = aggregation.compact_rollups(include_open=False)
    return {"hours": result.hours, "days": result.days}


@shared_task(ignore_result=True)
def maintain_partitions() -> dict[str, list[str]]:
    """Create the coming days' partitions; drop those past retention; trim hour rollups past theirs."""
    created = [name for table in partitions.DAILY_TABLES for name in partitions.ensure_partitions(table)]
    # Minutes about to be dropped must be in their hours first.
    aggregation.compact_rollups(before=aggregation.minute_floor())
    dropped = partitions.drop_expired_partitions()
    from analytics.models import QuarantinedRecord

    QuarantinedRecord.objects.filter(received_at__lt=timezone.now() - QUARANTINE_RETENTION).delete()
    cutoff = timezone.now() - timedelta(days=settings.HOUR_ROLLUP_RETENTION_DAYS)
    with connection.cursor() as cursor:
        for table in ("analytics_rollup_hour", "analytics_latency_hour", "analytics_summary_hour",
                      "analytics_summary_latency_hour"):  # fmt: skip
            cursor.execute(f"DELETE FROM {table} WHERE bucket < %s", [cutoff])  # noqa: S608 - constant names
    if created or dropped:
        logger.info("partitions created %s, dropped %s", created, dropped)
    return {"created": created, "dropped": dropped}
