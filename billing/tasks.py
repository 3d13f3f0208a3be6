"""Billing tasks: each takes ids, calls one service, and is safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task

from billing import selectors, services, stripe_client

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def process_event(event_id: int) -> str | None:
    """Apply one stored Stripe event (queued on commit by the webhook view)."""
    event = services.event_process(event_id=event_id)
    return event.status if event else None


@shared_task(ignore_result=True)
def sweep_events() -> int:
    """Queue events whose processing never ran (a lost task) or failed (with backoff), every 5 minutes."""
    due = selectors.events_due()
    for event in due:
        process_event.delay(event.pk)
    return len(due)


@shared_task(ignore_result=True)
def enforce_all() -> int:
    """Suspend or restore keys for overdue invoices and used-up Free allowances (every minute)."""
    return services.enforce_all()


@shared_task(ignore_result=True)
def report_usage() -> dict[str, int]:
    """Record closed hours in the meter ledger and send them to Stripe (every 5 minutes: an hour goes out minutes
    after it closes, so a period's last hour reaches Stripe well within the hour before it finalizes the invoice)."""
    totals = {"recorded": 0, "sent": 0, "failed": 0}
    if not stripe_client.configured():
        return totals
    for team in selectors.metered_teams():
        try:
            totals["recorded"] += services.meter_record(team=team)
            sent, failed = services.meter_send(team=team)
        except Exception:
            logger.exception("usage report failed for team %s", team.pk)
            totals["failed"] += 1
            continue
        totals["sent"] += sent
        totals["failed"] += failed
    return totals


@shared_task(ignore_result=True)
def reconcile() -> dict[str, int]:
    """Yesterday's billable units: ours against what Stripe's meter summed (nightly)."""
    if not stripe_client.configured():
        return {"checked": 0, "differences": 0, "missed_invoices": 0}
    result = services.reconcile()
    return {"checked": result.checked, "differences": result.differences, "missed_invoices": result.missed_invoices}
