"""A failed invoice payment emits the `invoice.payment_failed` webhook event, once per failure, with the email:
neither a redelivered Stripe event nor a second failure event of the same unpaid invoice emits it again."""

from datetime import timedelta

import pytest
from django.core import mail

from billing.models import BillingAccount, Invoice, Plan
from billing.tests.fixtures import post_event
from webhooks import tasks as webhook_tasks
from webhooks.models import INVOICE_PAYMENT_FAILED, WebhookDelivery, WebhookEvent
from webhooks.services import webhook_endpoint_create

pytestmark = pytest.mark.django_db

LINES = [{"amount": 8400, "description": "Growth", "price": "price_growth_fee"}]


@pytest.fixture
def customer(team_a, stripe_fake, stripe_prices):
    stripe_fake.add_customer(id="cus_team_a", metadata={"team_id": str(team_a.pk)})
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="growth"), stripe_customer_id="cus_team_a")
    return "cus_team_a"


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """Delivery ids sent to the broker (nothing leaves the test)."""
    ids: list[int] = []
    monkeypatch.setattr(webhook_tasks.deliver, "delay", ids.append)
    return ids


@pytest.fixture
def receiver(team_a, owner_a):
    endpoint, _secret = webhook_endpoint_create(
        team=team_a, url="http://127.0.0.1:9/hook", event_types=[INVOICE_PAYMENT_FAILED], actor=owner_a
    )
    return endpoint


def test_a_failed_payment_emits_one_event_and_a_redelivery_none(
    client, team_a, customer, stripe_fake, deliver, receiver, queued, settings
):
    invoice = stripe_fake.add_invoice(customer, status="open", attempt_count=1, lines=LINES)
    event = stripe_fake.event("invoice.payment_failed", invoice)
    stored = deliver(event)
    mirrored = Invoice.objects.get(stripe_id=invoice["id"])
    assert mirrored.hosted_invoice_url
    keys_stop_at = stored.created + timedelta(days=settings.BILLING_GRACE_DAYS)

    emitted = WebhookEvent.objects.get(team=team_a)
    assert emitted.type == INVOICE_PAYMENT_FAILED
    assert emitted.payload == {
        "invoice": {
            "id": invoice["id"],
            "number": invoice["number"],
            "amount_due": "84.00",
            "currency": "usd",
            "hosted_invoice_url": mirrored.hosted_invoice_url,
            "attempt_count": 1,
        },
        "reason": "payment_failed",
        "keys_stop_at": keys_stop_at.isoformat(),
        "summary": f"The payment of invoice {invoice['number']} (84.00 USD) failed. Pay it before "
        f"{keys_stop_at:%Y-%m-%d %H:%M} UTC, or the team's API keys stop.",
    }
    delivery = WebhookDelivery.objects.get(event=emitted)
    assert (delivery.endpoint, queued) == (receiver, [delivery.pk])
    assert len(mail.outbox) == 1  # the owner's email, decided in the same place

    # Stripe sends the same event again: stored once, nothing emitted, nothing queued.
    response = post_event(client, event)
    assert response.json() == {"received": event["id"], "duplicate": True, "status": "processed"}
    # A later failure event of the same, still unpaid invoice is the same failure.
    stripe_fake.update(invoice["id"], attempt_count=2)
    deliver(stripe_fake.event("invoice.payment_action_required", invoice))
    assert WebhookEvent.objects.filter(type=INVOICE_PAYMENT_FAILED).count() == 1
    assert WebhookDelivery.objects.count() == 1
    assert queued == [delivery.pk]
    assert len(mail.outbox) == 1


def test_a_payment_needing_confirmation_says_so(team_a, customer, stripe_fake, deliver, queued):
    invoice = stripe_fake.add_invoice(customer, status="open", attempt_count=1, lines=LINES)
    deliver(stripe_fake.event("invoice.payment_action_required", invoice))
    payload = WebhookEvent.objects.get(team=team_a, type=INVOICE_PAYMENT_FAILED).payload
    assert payload["reason"] == "payment_action_required"
    assert payload["summary"].startswith(
        f"The payment of invoice {invoice['number']} (84.00 USD) needs your confirmation (e.g. 3-D Secure)."
    )
    assert queued == []  # no endpoint subscribed


def test_invoice_events_that_are_not_a_failure_emit_nothing(team_a, customer, stripe_fake, deliver, queued):
    invoice = stripe_fake.add_invoice(customer, status="open", attempt_count=0, lines=LINES)
    deliver(stripe_fake.event("invoice.finalized", invoice))
    stripe_fake.update(invoice["id"], status="paid")
    deliver(stripe_fake.event("invoice.paid", invoice))
    assert not WebhookEvent.objects.exists()
