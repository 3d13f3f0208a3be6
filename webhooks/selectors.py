"""Reads for webhooks. Every read of team data takes the team explicitly."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from accounts.models import Team
from webhooks.models import (
    OPEN_STATUSES,
    WEBHOOK_TEST,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

# The sweep re-queues a delivery only this long after it was due: its own countdown task normally runs first.
SWEEP_GRACE = timedelta(seconds=60)
SWEEP_BATCH = 500


def endpoint_list(*, team: Team) -> QuerySet[WebhookEndpoint]:
    """The team's endpoints, oldest first, with their count of failed deliveries in the last 24 hours."""
    since = timezone.now() - timedelta(hours=24)
    return (
        WebhookEndpoint.objects.filter(team=team)
        .select_related("created_by")
        .annotate(
            recent_failures=Count(
                "deliveries", filter=Q(deliveries__status=DeliveryStatus.FAILED, deliveries__created_at__gte=since)
            ),
            open_deliveries=Count("deliveries", filter=Q(deliveries__status__in=OPEN_STATUSES)),
        )
        .order_by("created_at", "id")
    )


def endpoint_get(*, team: Team, endpoint_id: int) -> WebhookEndpoint:
    """One endpoint of the team; WebhookEndpoint.DoesNotExist otherwise (another team's is 'not found')."""
    return WebhookEndpoint.objects.get(team=team, pk=endpoint_id)


def delivery_list(*, team: Team, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """The endpoint's delivery log, newest first, with each delivery's event and attempts (three queries a page)."""
    return (
        WebhookDelivery.objects.filter(endpoint__team=team, endpoint=endpoint)
        .select_related("event")
        .prefetch_related(Prefetch("attempt_log", queryset=WebhookAttempt.objects.order_by("number")))
        .order_by("-created_at", "-id")
    )


def delivery_get(*, team: Team, delivery_id: int) -> WebhookDelivery:
    return WebhookDelivery.objects.select_related("endpoint", "event").get(endpoint__team=team, pk=delivery_id)


def deliveries_due(*, now: datetime | None = None) -> list[int]:
    """Open deliveries whose attempt is overdue (their queued task was lost): ids, oldest due first."""
    now = now or timezone.now()
    due = WebhookDelivery.objects.filter(status__in=OPEN_STATUSES, next_attempt_at__lte=now - SWEEP_GRACE)
    return list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:SWEEP_BATCH])


def test_sends_since(*, endpoint: WebhookEndpoint, since: datetime) -> int:
    """How many test events the endpoint was sent since `since` (they are throttled)."""
    return WebhookDelivery.objects.filter(endpoint=endpoint, event__type=WEBHOOK_TEST, created_at__gte=since).count()
