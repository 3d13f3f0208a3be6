"""The webhook services' rules that the pages do not reach: limits, validation per field, no-op updates."""

from __future__ import annotations

import pytest

from accounts.models import AuditEvent
from project.errors import ServiceError
from webhooks import services, tasks
from webhooks.models import (
    ALERT_FIRING,
    BUDGET_EXCEEDED,
    KEY_EXPIRING,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

pytestmark = pytest.mark.django_db

URL = "http://127.0.0.1:9/hook"


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"url": "  "}, "url_required", "url"),
        ({"url": "https://example.com/" + "a" * 2000}, "url_too_long", "url"),
        ({"url": "https://exa mple.com/"}, "url_unresolvable", "url"),
        ({"event_types": ["budget.exceeded", "nope"]}, "unknown_event_type", "event_types"),
        ({"format": "xml"}, "unknown_format", "format"),
        ({"description": "d" * 201}, "description_too_long", "description"),
    ],
)
def test_each_refusal_names_its_field(fields, code, field, team_a, owner_a):
    arguments = {"team": team_a, "url": URL, "event_types": [], "actor": owner_a, **fields}
    with pytest.raises(ServiceError) as refused:
        services.webhook_endpoint_create(**arguments)
    assert (refused.value.code, refused.value.field) == (code, field)
    assert WebhookEndpoint.objects.count() == 0


def test_event_types_are_kept_once_in_the_catalogues_order(team_a, owner_a):
    endpoint, _ = services.webhook_endpoint_create(
        team=team_a, url=URL, event_types=[KEY_EXPIRING, BUDGET_EXCEEDED, KEY_EXPIRING], actor=owner_a
    )
    assert endpoint.event_types == [BUDGET_EXCEEDED, KEY_EXPIRING]


def test_a_team_has_at_most_so_many_endpoints(team_a, owner_a, team_b, outsider_b, monkeypatch):
    monkeypatch.setattr(services, "MAX_ENDPOINTS_PER_TEAM", 2)
    for _ in range(2):
        services.webhook_endpoint_create(team=team_a, url=URL, event_types=[], actor=owner_a)
    with pytest.raises(ServiceError, match="A team can have 2 webhook endpoints"):
        services.webhook_endpoint_create(team=team_a, url=URL, event_types=[], actor=owner_a)
    services.webhook_endpoint_create(team=team_b, url=URL, event_types=[], actor=outsider_b)  # per team


def test_an_update_that_changes_nothing_is_not_audited(team_a, owner_a):
    endpoint, _ = services.webhook_endpoint_create(team=team_a, url=URL, event_types=[ALERT_FIRING], actor=owner_a)
    services.webhook_endpoint_update(
        endpoint=endpoint, actor=owner_a, url=URL, event_types=[ALERT_FIRING], enabled=True, description=""
    )
    assert not AuditEvent.objects.filter(action="webhook.updated").exists()


def test_resending_to_a_disabled_endpoint_is_refused(team_a, owner_a):
    endpoint, _ = services.webhook_endpoint_create(team=team_a, url=URL, event_types=[], actor=owner_a)
    event = WebhookEvent.objects.create(team=team_a, type=BUDGET_EXCEEDED)
    delivery = WebhookDelivery.objects.create(event=event, endpoint=endpoint, status=DeliveryStatus.FAILED)
    services.webhook_endpoint_update(endpoint=endpoint, actor=owner_a, enabled=False)
    with pytest.raises(ServiceError, match="Enable the endpoint before resending"):
        services.delivery_resend(delivery=delivery, actor=owner_a)


def test_a_broker_outage_after_commit_is_logged_and_left_to_the_sweep(
    team_a, owner_a, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    services.webhook_endpoint_create(team=team_a, url=URL, event_types=[], actor=owner_a)

    def broker_down(_delivery_id):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(tasks.deliver, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        event = services.event_emit(team=team_a, type=BUDGET_EXCEEDED, payload={})
    delivery = WebhookDelivery.objects.get(event=event)
    assert delivery.status == DeliveryStatus.PENDING  # committed; deliver_due sends it
    assert f"could not queue webhook delivery {delivery.pk}" in caplog.text


def test_an_unexpected_error_while_sending_is_recorded_and_retried(
    queue, team_a, owner_a, monkeypatch, django_capture_on_commit_callbacks
):
    from project import outgoing

    services.webhook_endpoint_create(team=team_a, url=URL, event_types=[], actor=owner_a)
    with django_capture_on_commit_callbacks(execute=True):
        services.event_emit(team=team_a, type=BUDGET_EXCEEDED, payload={})

    def bug(*_args, **_kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(outgoing, "post", bug)
    assert tasks.deliver(queue.delayed[0]) == DeliveryStatus.RETRYING
    assert WebhookDelivery.objects.get().last_error == "internal error: KeyError"


def test_models_describe_themselves(team_a, owner_a):
    endpoint, _ = services.webhook_endpoint_create(team=team_a, url=URL, event_types=[], actor=owner_a)
    event = WebhookEvent.objects.create(team=team_a, type=BUDGET_EXCEEDED)
    delivery = WebhookDelivery.objects.create(event=event, endpoint=endpoint)
    attempt = delivery.attempt_log.create(number=1, started_at=event.created_at, response_status=204)
    assert str(endpoint) == URL
    assert str(event) == f"budget.exceeded {event.event_id}"
    assert str(delivery) == f"{event.pk} → {endpoint.pk} (pending)"
    assert str(attempt) == f"attempt 1 of delivery {delivery.pk}"


def test_a_lost_retry_schedule_is_logged_and_left_to_the_sweep(
    queue, team_a, owner_a, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    services.webhook_endpoint_create(team=team_a, url=URL, event_types=[], actor=owner_a)  # port 9: refused
    with django_capture_on_commit_callbacks(execute=True):
        services.event_emit(team=team_a, type=BUDGET_EXCEEDED, payload={})

    def broker_down(*_args, **_kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(tasks.deliver, "apply_async", broker_down)
    assert tasks.deliver(queue.delayed[0]) == DeliveryStatus.RETRYING
    assert "could not schedule the retry of webhook delivery" in caplog.text
    assert WebhookDelivery.objects.get().next_attempt_at is not None
