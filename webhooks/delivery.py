"""One attempt at a delivery, safe under redelivered and duplicated tasks.

An attempt first *claims* the delivery in a short transaction: it locks the row (select_for_update, skip_locked — a
second worker holding it means someone else is on it), checks that it is still open and due, counts the attempt and
moves `next_attempt_at` a lease ahead. The request is then sent with no transaction open (a slow receiver holds no
lock), and its outcome recorded. A duplicate task — Celery redelivers with acks_late, and Redis re-sends countdown
tasks longer than its visibility timeout — finds the row claimed (not due) or closed, and sends nothing. A worker
that dies mid-request leaves the row due again when the lease ends, and the sweep (tasks.deliver_due) picks it up.

Failures (no answer, a timeout, any status but 2xx — a redirect too) are retried with growing delays until
RETRY_WINDOW after the event; then the delivery is failed. A delivered row is never sent again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from project import outgoing
from webhooks.models import OPEN_STATUSES, DeliveryStatus, WebhookAttempt, WebhookDelivery
from webhooks.payloads import body_for, headers_for

logger = logging.getLogger(__name__)

# Seconds to wait after the 1st, 2nd, … failed attempt; the last one repeats until RETRY_WINDOW runs out.
BACKOFF = (30, 120, 600, 1800, 3600, 7200, 14400, 28800)
RETRY_WINDOW = timedelta(hours=24)
# A claimed attempt is due again after this long if its worker never recorded an outcome (it died mid-request).
# Longer than a request can take (outgoing: 5 s connect + 10 s read + 15 s body, three addresses at most).
CLAIM_LEASE = timedelta(minutes=5)
# A countdown task may run a little before its time (clocks of web and worker machines differ).
EARLY_TOLERANCE = timedelta(seconds=5)


def retry_delay(attempt: int) -> int:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    return BACKOFF[min(attempt, len(BACKOFF)) - 1]


@dataclass(frozen=True)
class Outcome:
    status: str
    attempt: int
    retry_in: int | None = None  # seconds until the next attempt, when one is scheduled


def _claim(delivery_id: int, now: datetime) -> WebhookDelivery | None:
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("event__team", "endpoint")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status not in OPEN_STATUSES:
            return None  # gone, closed, or another worker holds the lock right now
        if delivery.next_attempt_at and delivery.next_attempt_at > now + EARLY_TOLERANCE:
            return None  # not due: a duplicate of a task already running, or an early one
        if not delivery.endpoint.enabled:
            _close(delivery, DeliveryStatus.FAILED, error="the endpoint is disabled")
            return None
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.next_attempt_at = now + CLAIM_LEASE
        delivery.save(update_fields=["attempts", "last_attempt_at", "next_attempt_at"])
        return delivery


def _close(delivery: WebhookDelivery, status: str, *, error: str) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=status, next_attempt_at=None, last_error=error)


def delivery_attempt(*, delivery_id: int) -> Outcome | None:
    """Try delivery `delivery_id` once if it is open and due; None when there was nothing to do."""
    started = timezone.now()
    delivery = _claim(delivery_id, started)
    if delivery is None:
        return None
    event, endpoint, number = delivery.event, delivery.endpoint, delivery.attempts
    body = body_for(event, endpoint)
    response: outgoing.OutgoingResponse | None = None
    error = ""
    try:
        response = outgoing.post(endpoint.url, body, headers_for(event, endpoint, body))
    except outgoing.OutgoingError as failure:
        error = str(failure)[:200]
    except Exception as failure:  # a bug of ours must not leave the delivery claimed and silent
        logger.exception("webhook delivery %s failed unexpectedly", delivery_id)
        error = f"internal error: {type(failure).__name__}"
    duration_ms = response.duration_ms if response else round((timezone.now() - started).total_seconds() * 1000)
    if response is not None and not 200 <= response.status < 300:
        error = f"HTTP {response.status}" + (" (redirects are not followed)" if 300 <= response.status < 400 else "")

    finished = timezone.now()
    retry_in = None
    if response is not None and not error:
        status = DeliveryStatus.DELIVERED
        next_attempt_at = None
    elif finished + timedelta(seconds=retry_delay(number)) <= event.created_at + RETRY_WINDOW:
        status = DeliveryStatus.RETRYING
        retry_in = retry_delay(number)
        next_attempt_at = finished + timedelta(seconds=retry_in)
    else:
        status = DeliveryStatus.FAILED
        next_attempt_at = None
    excerpt = response.excerpt if response else ""
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=started,
            response_status=response.status if response else None,
            response_excerpt=excerpt,
            duration_ms=duration_ms,
            error=error,
        )
        # Only while the claim is still ours (the same attempt count): a lease that ran out was claimed anew.
        WebhookDelivery.objects.filter(pk=delivery.pk, attempts=number).update(
            status=status,
            next_attempt_at=next_attempt_at,
            response_status=response.status if response else None,
            response_excerpt=excerpt,
            duration_ms=duration_ms,
            last_error=error,
        )
    return Outcome(status=status, attempt=number, retry_in=retry_in)
