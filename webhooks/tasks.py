"""Webhook tasks: each takes ids, calls one service, and is safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task

from webhooks import selectors
from webhooks.delivery import delivery_attempt

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def deliver(delivery_id: int) -> str | None:
    """Try one delivery (queued on commit by the services); a failure schedules the next try with its backoff."""
    outcome = delivery_attempt(delivery_id=delivery_id)
    if outcome is None:
        return None
    if outcome.retry_in is not None:
        try:
            deliver.apply_async((delivery_id,), countdown=outcome.retry_in)
        except Exception:  # the outcome is recorded with its next_attempt_at: the sweep (deliver_due) retries it
            logger.exception("could not schedule the retry of webhook delivery %s", delivery_id)
    return outcome.status


@shared_task(ignore_result=True)
def deliver_due() -> int:
    """Queue deliveries whose attempt is overdue — their task was lost (a broker restart, a dead worker) — every
    minute by beat. A duplicate of a task still queued is harmless: the attempt claims the row first."""
    due = selectors.deliveries_due()
    for delivery_id in due:
        deliver.delay(delivery_id)
    return len(due)
