"""Outgoing webhooks: a team's receiving endpoints, the events we emit, and one delivery per event and endpoint.

An event is stored once, with a stable id (`evt_…`) that every attempt carries, so a receiver can drop duplicates;
each delivery keeps its own status and its attempts, which are the endpoint's delivery log.
"""

from __future__ import annotations

import secrets

from django.contrib.postgres.fields import ArrayField
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from accounts.models import Team, User

SECRET_PREFIX = "ghw_"  # noqa: S105 - a public prefix, not a secret
EVENT_ID_PREFIX = "evt_"

# Event types: what upper apps (alerts, billing, endpoints) emit through webhooks.services.event_emit.
BUDGET_THRESHOLD_CROSSED = "budget.threshold_crossed"
BUDGET_EXCEEDED = "budget.exceeded"
BUDGET_FORECAST = "budget.forecast"
TRAFFIC_STOPPED = "traffic.stopped"
TRAFFIC_RESUMED = "traffic.resumed"
ALERT_FIRING = "alert.firing"
ALERT_RESOLVED = "alert.resolved"
INVOICE_PAYMENT_FAILED = "invoice.payment_failed"
KEY_EXPIRING = "key.expiring"
WEBHOOK_TEST = "webhook.test"  # sent to one endpoint on request; nobody subscribes to it

# The types an endpoint may subscribe to, with what each means (the form's checkboxes, the docs).
EVENT_TYPES: dict[str, str] = {
    BUDGET_THRESHOLD_CROSSED: "A budget passed one of its thresholds (e.g. 80 %)",
    BUDGET_EXCEEDED: "A budget was used up",
    BUDGET_FORECAST: "A budget is forecast to run out before the period ends",
    TRAFFIC_STOPPED: "Keys were suspended: traffic stopped (a cap, a budget, an unpaid invoice)",
    TRAFFIC_RESUMED: "Suspended keys work again",
    ALERT_FIRING: "An alert started firing",
    ALERT_RESOLVED: "An alert resolved",
    INVOICE_PAYMENT_FAILED: "An invoice payment failed",
    KEY_EXPIRING: "An API key expires soon",
}
ALL_EVENT_TYPES = frozenset({*EVENT_TYPES, WEBHOOK_TEST})


def new_event_id() -> str:
    return EVENT_ID_PREFIX + secrets.token_hex(12)


class WebhookFormat(models.TextChoices):
    GATEHOUSE = "gatehouse", "Gatehouse JSON"
    SLACK = "slack", 'Slack-compatible ({"text": …})'


class WebhookEndpoint(models.Model):
    """A URL of the team's that receives signed events. The signing secret is stored as it is — the sender must know
    it to sign, like Stripe's whsec_ — and shown to the user only once, when created or rotated."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = ArrayField(
        models.CharField(max_length=64), default=list, blank=True, help_text="Empty: every event type."
    )
    format = models.CharField(max_length=16, choices=WebhookFormat.choices, default=WebhookFormat.GATEHOUSE)
    secret = models.CharField(max_length=80)
    # After a rotation the old secret signs too (a second v1 signature) until this time, so receivers can switch.
    previous_secret = models.CharField(max_length=80, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.url

    @property
    def secret_hint(self) -> str:
        """The public start of the secret (ghw_3f9a12bc), for lists: enough to tell two apart, useless to sign."""
        return self.secret[: len(SECRET_PREFIX) + 8]

    def signing_secrets(self) -> list[str]:
        """The secrets that sign right now: the current one, and the previous one during its overlap."""
        overlap = (
            self.previous_secret
            and self.previous_secret_expires_at
            and self.previous_secret_expires_at > (timezone.now())
        )
        return [self.secret, self.previous_secret] if overlap else [self.secret]


class WebhookEvent(models.Model):
    """Something that happened to a team, stored once; every delivery of it carries the same `event_id`."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhook_events")
    event_id = models.CharField(max_length=40, unique=True, default=new_event_id)
    type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict, encoder=DjangoJSONEncoder)  # Decimal amounts become strings, not floats
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["team", "-created_at"], name="webhooks_event_team_created")]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # queued, not tried yet
    RETRYING = "retrying", "Retrying"  # tried and failed; tried again at next_attempt_at
    DELIVERED = "delivered", "Delivered"  # a 2xx answer: never sent again
    FAILED = "failed", "Failed"  # gave up (24 hours after the event, or the endpoint was disabled or deleted)


OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


class WebhookDelivery(models.Model):
    """One event to one endpoint: where it stands, and the outcome of its latest attempt."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "endpoint"], name="webhooks_delivery_once")]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="webhooks_delivery_log"),
            models.Index(
                fields=["next_attempt_at"],
                name="webhooks_delivery_due",
                condition=models.Q(status__in=["pending", "retrying"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"

    @property
    def error_note(self) -> str:
        """last_error, unless it only repeats the response's status code (shown beside it)."""
        return "" if self.last_error == f"HTTP {self.response_status}" else self.last_error


class WebhookAttempt(models.Model):
    """One try of a delivery: the delivery log's rows (attempt 1: 500, attempt 2: 500, attempt 3: 200)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhooks_attempt_once")]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"

    @property
    def error_note(self) -> str:
        """The error, unless it only repeats the response's status code (shown beside it)."""
        return "" if self.error == f"HTTP {self.response_status}" else self.error
