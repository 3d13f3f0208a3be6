"""Webhooks: verified on the raw body, stored once, processed by the task from a fresh read of Stripe, so
duplicates and any delivery order end in the same state."""

import json
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from billing import selectors
from billing.models import BillingAccount, EventStatus, Invoice, Plan, StripeEvent
from billing.tests.fixtures import WEBHOOK_SECRET, epoch, growth_subscription, post_event
from billing.tests.stripe_fake import sign

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer(team_a, stripe_fake, stripe_prices):
    """Team A on Free with a Stripe customer (as after its first Checkout)."""
    stripe_fake.add_customer(id="cus_team_a", metadata={"team_id": str(team_a.pk)})
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="free"), stripe_customer_id="cus_team_a")
    return "cus_team_a"


def test_a_subscription_event_moves_the_team_to_its_plan(client, team_a, customer, stripe_fake, deliver):
    subscription = growth_subscription(stripe_fake, customer, team_a)
    event = stripe_fake.event("customer.subscription.created", subscription)
    stored = deliver(event)
    assert stored.status == EventStatus.PROCESSED
    account = BillingAccount.objects.get(team=team_a)
    assert (account.plan_id, account.subscription_status, account.stripe_subscription_id) == (
        "growth",
        "active",
        subscription["id"],
    )
    assert account.card_summary == "Visa ending 4242, expires 08/2031"
    assert account.current_period_end == datetime.fromtimestamp(
        subscription["items"]["data"][0]["current_period_end"], tz=UTC
    )
    # The object was read fresh from Stripe, with its card.
    (read,) = stripe_fake.calls_to("GET", "/v1/subscriptions/")
    assert read.path == f"/v1/subscriptions/{subscription['id']}"
    assert read.params == {"expand[0]": "default_payment_method"}


def test_checkout_completion_applies_the_subscription_it_created(
    client, client_for, owner_a, team_a, customer, stripe_fake, deliver
):
    client_for(owner_a).post(f"/t/{team_a.slug}/billing/checkout", {"plan": "growth"})
    (session,) = stripe_fake.checkout_sessions.values()
    subscription = growth_subscription(stripe_fake, customer, team_a)
    stripe_fake.update(session["id"], status="complete", subscription=subscription["id"])  # the customer paid
    stripe_fake.reset_calls()
    deliver(stripe_fake.event("checkout.session.completed", session))
    assert BillingAccount.objects.get(team=team_a).plan_id == "growth"
    assert [c.path for c in stripe_fake.calls if c.method == "GET"] == [
        f"/v1/checkout/sessions/{session['id']}",
        f"/v1/subscriptions/{subscription['id']}",
    ]


def test_a_cancelled_subscription_returns_the_team_to_free(client, team_a, customer, stripe_fake, deliver):
    subscription = growth_subscription(stripe_fake, customer, team_a)
    deliver(stripe_fake.event("customer.subscription.created", subscription))
    stripe_fake.update(subscription["id"], status="canceled", canceled_at=int(time.time()))
    deliver(stripe_fake.event("customer.subscription.deleted", subscription))
    account = BillingAccount.objects.get(team=team_a)
    assert (account.plan_id, account.subscription_status) == ("free", "canceled")


def invoice_lines(period_start, period_end):
    period = {"start": epoch(period_start), "end": epoch(period_end)}
    return [
        {"amount": 4900, "description": "Growth (Nov 2026)", "quantity": 1, "price": "price_growth_fee",
         "period": period},
        {"amount": 1234, "description": "Units over the allowance", "quantity": 17_628_571,
         "price": "price_growth_usage", "period": period},
    ]  # fmt: skip


def test_invoice_events_mirror_the_invoice_and_its_lines(client, team_a, customer, stripe_fake, deliver):
    start = datetime(2026, 10, 1, tzinfo=UTC)
    end = datetime(2026, 11, 1, tzinfo=UTC)
    lines = invoice_lines(start, end) * 6  # 12 lines: more than Stripe embeds, the rest are paged in
    invoice = stripe_fake.add_invoice(customer, status="open", lines=lines, period_start=epoch(start),
                                      period_end=epoch(end), due_date=epoch(end + timedelta(days=7)))  # fmt: skip
    deliver(stripe_fake.event("invoice.finalized", invoice))
    mirrored = Invoice.objects.get(stripe_id=invoice["id"])
    assert (mirrored.team, mirrored.status, mirrored.total, mirrored.amount_remaining) == (team_a, "open", 36804, 36804)
    assert (mirrored.period_start, mirrored.period_end) == (start, end)
    assert mirrored.plan_id == "growth"  # from the lines' prices
    assert mirrored.lines.count() == 12
    assert sorted(set(mirrored.lines.values_list("price_id", flat=True))) == ["price_growth_fee", "price_growth_usage"]
    assert mirrored.hosted_invoice_url == invoice["hosted_invoice_url"]
    stripe_fake.update(invoice["id"], status="paid")
    deliver(stripe_fake.event("invoice.paid", invoice))
    mirrored.refresh_from_db()
    assert (mirrored.status, mirrored.amount_paid, mirrored.amount_remaining) == ("paid", 36804, 0)
    assert mirrored.paid_at is not None
    assert mirrored.lines.count() == 12  # replaced, not added


@pytest.mark.parametrize(
    ("secret", "age", "reason"),
    [("whsec_wrong", 0, "signature"), ("whsec_test_gatehouse", 301, "timestamp too old")],
)
def test_a_bad_signature_or_a_stale_timestamp_is_refused_and_nothing_is_stored(
    client, customer, stripe_fake, secret, age, reason
):
    event = stripe_fake.event("invoice.paid", stripe_fake.add_invoice(customer, status="paid"))
    response = post_event(client, event, secret=secret, at=int(time.time()) - age)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_signature"
    assert not StripeEvent.objects.exists()
    assert not Invoice.objects.exists()
    assert stripe_fake.calls == []


def test_a_webhook_without_a_signature_or_with_a_tampered_body_is_refused(client, customer, stripe_fake):
    event = stripe_fake.event("invoice.paid", stripe_fake.add_invoice(customer, status="paid"))
    assert client.post("/billing/stripe/webhook", event, content_type="application/json").status_code == 400
    body = json.dumps(event).encode()
    header = sign(body, WEBHOOK_SECRET)
    tampered = body.replace(b'"paid"', b'"void"', 1)
    assert tampered != body
    response = client.post("/billing/stripe/webhook", tampered, content_type="application/json",
                           HTTP_STRIPE_SIGNATURE=header)  # fmt: skip
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_duplicate_delivery_changes_nothing(client, team_a, customer, stripe_fake, deliver):
    period = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    invoice = stripe_fake.add_invoice(customer, status="paid", lines=invoice_lines(*period))
    event = stripe_fake.event("invoice.paid", invoice)
    deliver(event)
    before = list(Invoice.objects.values())
    calls = len(stripe_fake.calls)
    response = post_event(client, event)
    assert response.json() == {"received": event["id"], "duplicate": True, "status": "processed"}
    assert StripeEvent.objects.count() == 1
    assert list(Invoice.objects.values()) == before
    assert len(stripe_fake.calls) == calls  # not even read again


def test_events_of_types_we_do_not_handle_are_stored_and_ignored(client, customer, stripe_fake):
    response = post_event(client, stripe_fake.event("customer.created", stripe_fake.get(customer)))
    assert response.status_code == 200
    assert StripeEvent.objects.get().status == EventStatus.IGNORED


def snapshot(team):
    account = BillingAccount.objects.get(team=team)
    invoices = list(
        Invoice.objects.filter(team=team)
        .order_by("stripe_id")
        .values_list("stripe_id", "status", "amount_remaining", "payment_failed_at", "plan_id")
    )
    return (account.plan_id, account.subscription_status, account.card_last4), invoices


def test_the_same_events_in_any_order_end_in_the_same_state(client, team_a, customer, stripe_fake, deliver):
    """A month of events — subscribe, an invoice finalised, its payment failing, then paid; a second invoice
    failing and still unpaid — delivered in six shuffled orders after Stripe reached its final state."""
    subscription = growth_subscription(stripe_fake, customer, team_a)
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    paid = stripe_fake.add_invoice(customer, status="paid", lines=invoice_lines(start, end), attempt_count=2)
    unpaid = stripe_fake.add_invoice(customer, status="open", lines=invoice_lines(end, end + timedelta(days=30)),
                                     attempt_count=1)  # fmt: skip
    base = int(time.time()) - 3600
    script = [
        ("customer.subscription.created", subscription, 0),
        ("invoice.finalized", paid, 10),
        ("invoice.payment_failed", paid, 20),
        ("invoice.paid", paid, 30),
        ("invoice.payment_succeeded", paid, 30),
        ("invoice.finalized", unpaid, 40),
        ("invoice.payment_failed", unpaid, 50),
        ("invoice.payment_action_required", unpaid, 60),
    ]
    states = []
    for order in range(6):
        BillingAccount.objects.filter(team=team_a).update(plan="free", subscription_status="none", card_last4="",
                                                          subscription_synced_at=None)  # fmt: skip
        Invoice.objects.all().delete()
        events = [stripe_fake.event(kind, obj, created=base + at) for kind, obj, at in script]
        random.Random(order).shuffle(events)
        for event in events:
            assert deliver(event).status == EventStatus.PROCESSED
        states.append(snapshot(team_a))
    assert all(state == states[0] for state in states)
    (plan, status, last4), invoices = states[0]
    assert (plan, status, last4) == ("growth", "active", "4242")
    failed_at = datetime.fromtimestamp(base + 50, tz=UTC)  # the earliest failure of the unpaid invoice
    assert invoices == sorted([(paid["id"], "paid", 0, None, "growth"),
                               (unpaid["id"], "open", unpaid["amount_remaining"], failed_at, "growth")])  # fmt: skip


def test_a_failed_event_is_listed_for_the_operator_and_can_be_retried(
    client, client_for, admin_user, owner_a, team_a, stripe_fake, stripe_prices, deliver
):
    stripe_fake.add_customer(id="cus_unknown")
    invoice = stripe_fake.add_invoice("cus_unknown", status="open")
    stored = deliver(stripe_fake.event("invoice.finalized", invoice))
    assert stored.status == EventStatus.FAILED
    assert "No team has the Stripe customer cus_unknown" in stored.error
    operator = client_for(admin_user)
    page = operator.get("/operator/billing/").content.decode()
    assert stored.stripe_id in page
    assert "No team has the Stripe customer" in page
    assert client_for(owner_a).get("/operator/billing/").status_code == 403  # staff only
    # The operator links the customer to its team, then retries.
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="growth"), stripe_customer_id="cus_unknown")
    response = operator.post(f"/operator/billing/events/{stored.pk}/retry", follow=True)
    assert f"invoice.finalized {stored.stripe_id} processed" in response.content.decode()
    stored.refresh_from_db()
    assert (stored.status, stored.attempts) == (EventStatus.PROCESSED, 2)
    assert Invoice.objects.get(stripe_id=invoice["id"]).team == team_a
    assert client_for(owner_a).post(f"/operator/billing/events/{stored.pk}/retry").status_code == 403


def test_the_sweeper_retries_lost_events_and_failed_ones_with_backoff(customer):
    now = datetime.now(UTC)

    def event(name, minutes_ago, **fields):
        stored = StripeEvent.objects.create(stripe_id=name, type="invoice.paid", created=now, payload={}, **fields)
        StripeEvent.objects.filter(pk=stored.pk).update(received_at=now - timedelta(minutes=minutes_ago))
        return name

    lost = event("evt_lost", 5)  # its task never ran
    fresh = event("evt_fresh", 1)  # its task is probably running now
    retry = event("evt_failed_once", 5, status=EventStatus.FAILED, attempts=1)  # due after 2 minutes
    waiting = event("evt_failed_thrice", 5, status=EventStatus.FAILED, attempts=3)  # due after 8 minutes
    given_up = event("evt_given_up", 500, status=EventStatus.FAILED, attempts=6)
    done = event("evt_done", 5, status=EventStatus.PROCESSED, attempts=1)
    due = {e.stripe_id for e in selectors.events_due(now=now)}
    assert due == {lost, retry}
    assert not due & {fresh, waiting, given_up, done}
