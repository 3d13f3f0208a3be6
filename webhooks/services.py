"""Writes for outgoing webhooks: endpoints (create, change, delete, rotate the secret), events and deliveries.

Upper apps (alerts, billing, endpoints) call `event_emit`; it is safe inside their transaction: deliveries are
queued only once it commits, and a rollback leaves no event and sends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Team, User
from accounts.services import audit_record
from project import outgoing
from project.errors import ServiceError
from project.secrets import prefixed_secret
from webhooks import selectors, tasks
from webhooks.models import (
    ALL_EVENT_TYPES,
    EVENT_TYPES,
    SECRET_PREFIX,
    WEBHOOK_TEST,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookFormat,
)

logger = logging.getLogger(__name__)

MAX_ENDPOINTS_PER_TEAM = 20
MAX_URL_LENGTH = 2000
# After a rotation the old secret keeps signing (a second v1) this long, so receivers can switch without a gap.
ROTATION_OVERLAP = timedelta(hours=24)
# Test events are sent on a click: at most this many per endpoint per minute, so the button is no traffic cannon.
TEST_SENDS_PER_MINUTE = 5


# --- validation ------------------------------------------------------------------------------


def _clean_url(url: str) -> str:
    """A URL we will send to, or ServiceError(field="url"): https (http only where loopback is allowed, for local
    development), and a host that resolves to public addresses only — checked again before every attempt."""
    url = (url or "").strip()
    if not url:
        raise ServiceError("url_required", "Enter the URL that receives the events.", field="url")
    if len(url) > MAX_URL_LENGTH:
        raise ServiceError("url_too_long", f"Use a URL of at most {MAX_URL_LENGTH} characters.", field="url")
    try:
        target = outgoing.parse_url(url)
    except ValueError as error:
        raise ServiceError("url_invalid", str(error), field="url") from None
    if target.scheme != "https" and not settings.OUTGOING_ALLOW_LOOPBACK:
        raise ServiceError("url_not_https", "Use an https:// URL: events are sent over TLS only.", field="url")
    try:
        outgoing.check_url(url)
    except outgoing.OutgoingRefused as refused:
        raise ServiceError(
            "url_refused",
            f"{refused.host} points at a {refused.reason} address ({refused.address}); webhooks go to public "
            "addresses only.",
            field="url",
        ) from None
    except outgoing.OutgoingError as error:
        raise ServiceError("url_unresolvable", f"{error}: check the host name.", field="url") from None
    return url


def _clean_event_types(event_types: Iterable[str]) -> list[str]:
    chosen = set(event_types)
    unknown = sorted(chosen - set(EVENT_TYPES))
    if unknown:
        raise ServiceError("unknown_event_type", f"Unknown event type: {', '.join(unknown)}.", field="event_types")
    return [event_type for event_type in EVENT_TYPES if event_type in chosen]  # the catalogue's order


def _clean_format(format: str) -> str:  # noqa: A002 - the field's name; shadows nothing used here
    if format not in WebhookFormat.values:
        raise ServiceError("unknown_format", f"Unknown format: {format!r}.", field="format")
    return format


def _clean_description(description: str) -> str:
    description = (description or "").strip()
    if len(description) > 200:
        raise ServiceError("description_too_long", "Keep the description to 200 characters.", field="description")
    return description


def _summary(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": list(endpoint.event_types),
        "format": endpoint.format,
        "enabled": endpoint.enabled,
    }


# --- endpoints -------------------------------------------------------------------------------


def webhook_endpoint_create(
    *,
    team: Team,
    url: str,
    event_types: Iterable[str],
    format: str = WebhookFormat.GATEHOUSE,  # noqa: A002 - the field's name; shadows nothing used here
    description: str = "",
    actor: User,
) -> tuple[WebhookEndpoint, str]:
    """Add a receiving URL to the team. Returns the endpoint and its signing secret, which is shown only now."""
    fields = {
        "url": _clean_url(url),
        "event_types": _clean_event_types(event_types),
        "format": _clean_format(format),
        "description": _clean_description(description),
    }
    # Validated (DNS included) before the transaction opens; then one creation at a time per team, for the count.
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=team.pk).first()
        if WebhookEndpoint.objects.filter(team=team).count() >= MAX_ENDPOINTS_PER_TEAM:
            raise ServiceError(
                "limit_reached", f"A team can have {MAX_ENDPOINTS_PER_TEAM} webhook endpoints; delete one first."
            )
        secret, _public = prefixed_secret(SECRET_PREFIX)
        endpoint = WebhookEndpoint.objects.create(team=team, secret=secret, created_by=actor, **fields)
        audit_record(action="webhook.created", actor=actor, team=team, target=endpoint, after=_summary(endpoint))
    return endpoint, secret


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    actor: User,
    url: str | None = None,
    event_types: Iterable[str] | None = None,
    format: str | None = None,  # noqa: A002 - the field's name; shadows nothing used here
    description: str | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change what is given (None: unchanged); saved and audited only if something changes. Disabling stops
    deliveries (open ones fail at their next attempt) until the endpoint is enabled again."""
    before = _summary(endpoint)
    if url is not None and url.strip() != endpoint.url:
        endpoint.url = _clean_url(url)
    if event_types is not None:
        endpoint.event_types = _clean_event_types(event_types)
    if format is not None:
        endpoint.format = _clean_format(format)
    if description is not None:
        endpoint.description = _clean_description(description)
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        endpoint.disabled_reason = "" if enabled else f"Disabled by {actor.email}"[:200]
    after = _summary(endpoint)
    changed = [field for field in after if after[field] != before[field]]
    if not changed:
        return endpoint
    with transaction.atomic():  # after validation, which may resolve a host name
        endpoint.save(update_fields=[*changed, "disabled_reason"])
        audit_record(
            action="webhook.updated",
            actor=actor,
            team=endpoint.team,
            target=endpoint,
            before={field: before[field] for field in changed},
            after={field: after[field] for field in changed},
        )
    return endpoint


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: User) -> None:
    """Remove the endpoint and its delivery log; a delivery in flight finds it gone and stops."""
    audit_record(action="webhook.deleted", actor=actor, team=endpoint.team, target=endpoint, before=_summary(endpoint))
    endpoint.delete()


@transaction.atomic
def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor: User) -> tuple[WebhookEndpoint, str]:
    """A new signing secret, shown only now; the old one keeps signing too for ROTATION_OVERLAP."""
    secret, _public = prefixed_secret(SECRET_PREFIX)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = timezone.now() + ROTATION_OVERLAP
    endpoint.secret = secret
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    audit_record(
        action="webhook.secret_rotated",
        actor=actor,
        team=endpoint.team,
        target=endpoint,
        after={"previous_secret_valid_until": endpoint.previous_secret_expires_at.isoformat()},
    )
    return endpoint, secret


# --- events and deliveries ------------------------------------------------------------------


def _queue(delivery_ids: list[int]) -> None:
    """Queue the deliveries once the surrounding transaction commits (nothing if it rolls back)."""

    def send() -> None:
        for delivery_id in delivery_ids:
            try:
                tasks.deliver.delay(delivery_id)
            except Exception:  # the change is committed; the sweep (deliver_due) sends it within minutes
                logger.exception("could not queue webhook delivery %s", delivery_id)

    if delivery_ids:
        transaction.on_commit(send)


@transaction.atomic
def event_emit(*, team: Team, type: str, payload: dict[str, Any]) -> WebhookEvent:  # noqa: A002 - the event's name
    """Record that `type` happened to `team` and deliver it to every enabled endpoint subscribed to it (after the
    caller's transaction commits). `payload` is the event's `data`: JSON values (Decimal, datetime are written as
    strings); a `summary` string in it is what Slack-format endpoints show."""
    if type not in ALL_EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type!r}: add it to webhooks.models.EVENT_TYPES")
    if not isinstance(payload, dict):
        raise TypeError("a webhook payload is a dict")
    event = WebhookEvent.objects.create(team=team, type=type, payload=payload)
    endpoints = WebhookEndpoint.objects.filter(team=team, enabled=True).filter(
        Q(event_types=[]) | Q(event_types__contains=[type])
    )
    if type == WEBHOOK_TEST:
        endpoints = endpoints.none()  # a test goes to the one endpoint asked for (webhook_test_send)
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(event=event, endpoint=endpoint, next_attempt_at=now) for endpoint in endpoints]
    )
    _queue([delivery.pk for delivery in deliveries])
    return event


@transaction.atomic
def webhook_test_send(*, endpoint: WebhookEndpoint, actor: User) -> WebhookDelivery:
    """Send a `webhook.test` event to this one endpoint (signed and retried like any other)."""
    if not endpoint.enabled:
        raise ServiceError("endpoint_disabled", "Enable the endpoint before sending it a test event.", status=409)
    if selectors.test_sends_since(endpoint=endpoint, since=timezone.now() - timedelta(minutes=1)) >= (
        TEST_SENDS_PER_MINUTE
    ):
        raise ServiceError("too_many_tests", "That is enough test events for a minute; try again shortly.", status=429)
    event = WebhookEvent.objects.create(
        team=endpoint.team,
        type=WEBHOOK_TEST,
        payload={
            "summary": "A test event from Gatehouse: this endpoint receives events.",
            "endpoint": {"id": endpoint.pk, "url": endpoint.url},
        },
    )
    delivery = WebhookDelivery.objects.create(event=event, endpoint=endpoint, next_attempt_at=timezone.now())
    audit_record(
        action="webhook.test_sent", actor=actor, team=endpoint.team, target=endpoint, after={"event": event.event_id}
    )
    _queue([delivery.pk])
    return delivery


@transaction.atomic
def delivery_resend(*, delivery: WebhookDelivery, actor: User) -> WebhookDelivery:
    """Send a failed delivery again, now (the same event, the same id). A delivered one is never sent again, and
    one still retrying has its next attempt scheduled already."""
    locked = WebhookDelivery.objects.select_for_update().select_related("endpoint", "event").get(pk=delivery.pk)
    if locked.status == DeliveryStatus.DELIVERED:
        raise ServiceError("already_delivered", "This event was delivered; it is not sent twice.", status=409)
    if locked.status != DeliveryStatus.FAILED:
        raise ServiceError("not_failed", "This delivery is still being retried.", status=409)
    if not locked.endpoint.enabled:
        raise ServiceError("endpoint_disabled", "Enable the endpoint before resending to it.", status=409)
    locked.status = DeliveryStatus.PENDING
    locked.next_attempt_at = timezone.now()
    locked.save(update_fields=["status", "next_attempt_at"])
    audit_record(
        action="webhook.delivery_resent",
        actor=actor,
        team=locked.endpoint.team,
        target=locked.endpoint,
        after={"event": locked.event.event_id, "type": locked.event.type},
    )
    _queue([locked.pk])
    return locked
