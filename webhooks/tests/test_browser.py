"""The Webhooks pages in Chromium: add a webhook, copy its secret, send a test event to a real receiver, read the
delivery log, delete with a confirmation; screenshots at desktop and phone widths, and the accessibility audit the
other pages pass (axe-core, no sideways scrolling, visible focus) in light and dark."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import Membership, Role
from project.demo import DEMO_PASSWORD
from tests.browser.test_accessibility import _assert_none, _audit_pages
from tests.fixtures import PASSWORD
from webhooks import tasks
from webhooks.models import (
    ALERT_FIRING,
    BUDGET_EXCEEDED,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from webhooks.tests.receiver import receiving

DESKTOP = {"width": 1360, "height": 900}
PHONE = {"width": 390, "height": 844}


def _seed_log(endpoint: WebhookEndpoint) -> None:
    """A few past deliveries: one that failed for good, one retrying, one delivered after two failures."""
    now = timezone.now()
    outcomes = [
        (ALERT_FIRING, DeliveryStatus.FAILED, [(502, "Bad gateway"), (502, "Bad gateway"), (None, "")]),
        (BUDGET_EXCEEDED, DeliveryStatus.RETRYING, [(500, '{"error":"database is locked"}')]),
        (BUDGET_EXCEEDED, DeliveryStatus.DELIVERED, [(500, "boom"), (503, "maintenance"), (200, "ok")]),
    ]
    for hours, (event_type, status, attempts) in enumerate(outcomes, start=1):
        event = WebhookEvent.objects.create(
            team=endpoint.team, type=event_type, payload={}, created_at=now - timedelta(hours=hours)
        )
        last_status, last_excerpt = attempts[-1]
        delivery = WebhookDelivery.objects.create(
            event=event,
            endpoint=endpoint,
            status=status,
            attempts=len(attempts),
            created_at=event.created_at,
            last_attempt_at=event.created_at,
            next_attempt_at=now + timedelta(minutes=10) if status == DeliveryStatus.RETRYING else None,
            response_status=last_status,
            response_excerpt=last_excerpt,
            duration_ms=143,
            last_error=""
            if status == DeliveryStatus.DELIVERED
            else (f"HTTP {last_status}" if last_status else "could not connect: connection refused"),
        )
        for number, (code, excerpt) in enumerate(attempts, start=1):
            WebhookAttempt.objects.create(
                delivery=delivery,
                number=number,
                started_at=event.created_at + timedelta(seconds=30 * number),
                response_status=code,
                response_excerpt=excerpt,
                duration_ms=120 + number,
                error="" if code == 200 else (f"HTTP {code}" if code else "could not connect: connection refused"),
            )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_webhook_journey(browser_pages, owner_a, team_a, monkeypatch):
    # The broker is this process: a queued delivery runs at once (on commit), retries are only recorded.
    monkeypatch.setattr(tasks.deliver, "delay", lambda delivery_id: tasks.deliver(delivery_id))
    monkeypatch.setattr(tasks.deliver, "apply_async", lambda *args, **kwargs: None)
    checked = browser_pages("owner")
    page = checked.page
    page.set_viewport_size(DESKTOP)
    checked.visit("/accounts/login/", "login")
    page.get_by_label("Email").fill(owner_a.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.locator("main").get_by_role("button", name="Sign In").click()

    page.get_by_role("navigation", name="Team").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_text("No webhooks yet.")).to_be_visible()
    checked.snap("webhooks-empty-desktop")

    with receiving() as receiver:
        page.get_by_label("Endpoint URL").fill(receiver.url("/hooks/gatehouse"))
        page.get_by_label("Description").fill("Ops alerts")
        page.get_by_label("A budget was used up").check()
        page.get_by_label("An alert started firing").check()
        page.get_by_label("Slack-compatible").check()
        page.get_by_role("button", name="Add webhook").click()
        expect(page.get_by_text("Webhook added — copy its signing secret now")).to_be_visible()
        secret = page.get_by_label("Signing secret").input_value()
        endpoint = WebhookEndpoint.objects.get()
        assert secret == endpoint.secret
        assert endpoint.event_types == [BUDGET_EXCEEDED, ALERT_FIRING]
        checked.snap("webhook-created-desktop")
        page.set_viewport_size(PHONE)
        checked.snap("webhook-created-phone")
        page.set_viewport_size(DESKTOP)

        page.get_by_role("link", name="Open the webhook").click()
        _seed_log(endpoint)
        page.get_by_role("button", name="Send test event").click()
        expect(page.get_by_text("queued: it appears below once sent")).to_be_visible()
        assert len(receiver.requests) == 1
        assert receiver.requests[0].headers["gatehouse-event-type"] == "webhook.test"
    expect(page.locator("tbody tr").first.get_by_text("delivered")).to_be_visible()
    page.locator("tbody tr").nth(3).get_by_text("3 attempts").click()  # open one attempt log
    checked.snap("webhook-log-desktop")
    page.set_viewport_size(PHONE)
    checked.snap("webhook-log-phone")
    page.set_viewport_size(DESKTOP)

    # A failed delivery is resent (to a receiver that is gone by now: it fails again, and says why).
    page.get_by_role("button", name="Resend").click()
    expect(page.get_by_text("Resending evt_")).to_be_visible()

    # The list, with its states, at both widths.
    page.get_by_role("link", name="Webhooks", exact=True).first.click()
    expect(page.get_by_role("link", name=endpoint.url)).to_be_visible()
    checked.snap("webhooks-list-desktop")
    page.set_viewport_size(PHONE)
    checked.snap("webhooks-list-phone")
    page.set_viewport_size(DESKTOP)

    # Delete asks first; dismissing keeps it, accepting deletes it.
    page.get_by_role("link", name=endpoint.url).click()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete webhook").click()
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete webhook").click()
    expect(page.get_by_text(f"Deleted the webhook to {endpoint.url}.")).to_be_visible()
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", [Role.ADMIN, Role.FINANCE])
def test_the_webhook_pages_are_accessible(browser_pages, team_a, make_user, make_endpoint, role):
    user = make_user(f"{role}-a11y@a.example", password=DEMO_PASSWORD)
    Membership.objects.create(team=team_a, user=user, role=role)
    endpoint, _secret = make_endpoint("http://127.0.0.1:9/hooks/gatehouse", description="Ops alerts")
    make_endpoint("http://127.0.0.1:9/finance", event_types=[BUDGET_EXCEEDED])
    _seed_log(endpoint)
    paths = [f"/t/{team_a.slug}/webhooks/", f"/t/{team_a.slug}/webhooks/{endpoint.pk}/"]
    _assert_none(_audit_pages(browser_pages, paths, email=user.email, label=f"webhooks-{role}"))
