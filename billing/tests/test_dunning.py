"""Dunning: a failed payment warns owners, admins and finance (banner and email), stops the team's keys after
the grace period through the config feed, and restores them as soon as the invoice is paid. The Free
plan's allowance stops keys the same way until the next period or an upgrade."""

import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail

from billing import selectors, services
from billing.models import BillingAccount, Invoice, Plan, PlanVersion
from billing.tests.fixtures import aggregate, growth_subscription, post_event, relays
from endpoints.models import TeamSuspension
from endpoints.services import gateway_credential_create, team_suspend

pytestmark = pytest.mark.django_db


@pytest.fixture
def growth_team(team_a, stripe_fake, stripe_prices, deliver):
    """Team A on Growth through Stripe, with an owner, an admin, finance, a developer and a viewer."""
    stripe_fake.add_customer(id="cus_team_a")
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="free"), stripe_customer_id="cus_team_a")
    deliver(stripe_fake.event("customer.subscription.created", growth_subscription(stripe_fake, "cus_team_a", team_a)))
    assert BillingAccount.objects.get(team=team_a).plan_id == "growth"
    return team_a


def config_feed_suspension(client, team, key):
    """What the gateway's config feed says about one of the team's keys now (the gateway's own view)."""
    _credential, secret = gateway_credential_create(name=f"check-{datetime.now(UTC).timestamp()}")
    response = client.get("/api/gateway/v1/config", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)  # the snapshot is streamed
    body = gzip.decompress(body) if response.get("Content-Encoding") == "gzip" else body
    return {k["key_id"]: k for k in json.loads(body)["keys"]}[key.key_id]


def test_a_failed_payment_warns_stops_keys_after_the_grace_period_and_payment_restores_them(
    growth_team, usage, stripe_fake, deliver, client, client_for, owner_a, member_of, settings
):
    admin, finance, developer = member_of("admin"), member_of("finance"), member_of("developer")
    lines = [{"amount": 8400, "description": "Growth", "price": "price_growth_fee"}]
    invoice = stripe_fake.add_invoice("cus_team_a", status="open", attempt_count=1, lines=lines)
    failed = deliver(stripe_fake.event("invoice.payment_failed", invoice))
    mirrored = Invoice.objects.get(stripe_id=invoice["id"])
    assert mirrored.payment_failed_at == failed.created
    assert mirrored.overdue

    # Owners, admins and finance get an email and see the banner; developers do not.
    assert sorted(m.to[0] for m in mail.outbox) == sorted([owner_a.email, admin.email, finance.email])
    assert "$84.00" in mail.outbox[0].subject
    assert invoice["hosted_invoice_url"] in mail.outbox[0].body
    for user in (owner_a, admin, finance):
        page = client_for(user).get(f"/t/{growth_team.slug}/").content.decode()
        assert "Payment failed." in page
        assert "$84.00 unpaid" in page
    assert "Payment failed" not in client_for(developer).get(f"/t/{growth_team.slug}/").content.decode()

    # Inside the grace period the keys keep working; after it they stop, through the config feed.
    grace = timedelta(days=settings.BILLING_GRACE_DAYS)
    assert (
        services.enforce_team(team=growth_team, now=mirrored.payment_failed_at + grace - timedelta(minutes=1)) is None
    )
    assert not TeamSuspension.objects.filter(team=growth_team).exists()
    assert services.enforce_team(team=growth_team, now=mirrored.payment_failed_at + grace) == services.PAYMENT_OVERDUE
    assert TeamSuspension.objects.get(team=growth_team).reason == services.PAYMENT_OVERDUE
    feed_key = config_feed_suspension(client, growth_team, usage.key)
    assert (feed_key["status"], feed_key["status_reason"]) == ("suspended", services.PAYMENT_OVERDUE)
    page = client_for(owner_a).get(f"/t/{growth_team.slug}/").content.decode()
    assert "API keys are stopped" in page

    # Paid: the webhook's processing restores the keys at once (no waiting for the next minute's sweep).
    stripe_fake.update(invoice["id"], status="paid")
    deliver(stripe_fake.event("invoice.paid", invoice))
    assert not TeamSuspension.objects.filter(team=growth_team).exists()
    assert not Invoice.objects.get(stripe_id=invoice["id"]).overdue
    feed_key = config_feed_suspension(client, growth_team, usage.key)
    assert feed_key["status"] == "active"
    assert "Payment failed" not in client_for(owner_a).get(f"/t/{growth_team.slug}/").content.decode()


def test_a_payment_needing_confirmation_says_so(growth_team, stripe_fake, deliver, client_for, owner_a):
    invoice = stripe_fake.add_invoice("cus_team_a", status="open", attempt_count=1,
                                      lines=[{"amount": 4900, "price": "price_growth_fee"}])  # fmt: skip
    deliver(stripe_fake.event("invoice.payment_action_required", invoice))
    assert "asks you to confirm" in mail.outbox[0].body
    assert "asks for confirmation" in client_for(owner_a).get(f"/t/{growth_team.slug}/billing/").content.decode()


def test_the_grace_period_is_configurable(growth_team, stripe_fake, deliver, settings):
    settings.BILLING_GRACE_DAYS = 0
    invoice = stripe_fake.add_invoice("cus_team_a", status="open", attempt_count=1,
                                      lines=[{"amount": 4900, "price": "price_growth_fee"}])  # fmt: skip
    deliver(stripe_fake.event("invoice.payment_failed", invoice))  # enforcement runs on commit
    assert TeamSuspension.objects.get(team=growth_team).reason == services.PAYMENT_OVERDUE


def test_enforcement_leaves_an_operator_suspension_alone(growth_team, stripe_fake, deliver):
    team_suspend(team=growth_team, reason="Abuse report #42")
    assert services.enforce_team(team=growth_team) == "Abuse report #42"
    assert TeamSuspension.objects.get(team=growth_team).reason == "Abuse report #42"


def test_the_beat_task_finds_overdue_teams(growth_team, stripe_fake, deliver):
    invoice = stripe_fake.add_invoice("cus_team_a", status="open", attempt_count=1,
                                      lines=[{"amount": 4900, "price": "price_growth_fee"}])  # fmt: skip
    deliver(stripe_fake.event("invoice.payment_failed", invoice))
    Invoice.objects.update(payment_failed_at=datetime.now(UTC) - timedelta(days=30))
    services.enforce_all()
    assert TeamSuspension.objects.get(team=growth_team).reason == services.PAYMENT_OVERDUE


# --- the Free plan's allowance ----------------------------------------------------------------------


@pytest.fixture
def small_free_allowance(db):
    """The Free plan with an allowance of 1,000 units (its first version, as the operator could set it)."""
    PlanVersion.objects.filter(plan_id="free").update(included_units=1_000)


def test_the_free_allowance_stops_keys_until_the_next_period_or_an_upgrade(
    small_free_allowance, usage, team_a, client_for, member_of, stripe_fake, stripe_prices, deliver
):
    from billing import rating

    per_relay = selectors.service_catalog()["eth-mainnet"].compute_units_for("eth_call")
    below = 1_000 // per_relay
    relays(usage, below)
    aggregate()
    services.enforce_all()
    assert not TeamSuspension.objects.filter(team=team_a).exists()
    relays(usage, 1)  # the relay that reaches the allowance
    aggregate()
    services.enforce_all()
    assert TeamSuspension.objects.get(team=team_a).reason == services.FREE_ALLOWANCE_USED
    page = client_for(member_of("developer")).get(f"/t/{team_a.slug}/").content.decode()
    assert "allowance is used up" in page  # everyone sees why the keys stopped

    # The next period starts from zero.
    next_month = rating.period_of(datetime.now(UTC))[1] + timedelta(hours=1)
    assert services.enforce_team(team=team_a, now=next_month) is None
    assert not TeamSuspension.objects.filter(team=team_a).exists()

    # Or an upgrade lifts it at once.
    services.enforce_team(team=team_a)
    assert TeamSuspension.objects.filter(team=team_a).exists()
    stripe_fake.add_customer(id="cus_team_a")
    BillingAccount.objects.update_or_create(team=team_a, defaults={"stripe_customer_id": "cus_team_a",
                                                                   "plan": Plan.objects.get(slug="free")})  # fmt: skip
    deliver(stripe_fake.event("customer.subscription.created", growth_subscription(stripe_fake, "cus_team_a", team_a)))
    assert not TeamSuspension.objects.filter(team=team_a).exists()


def test_a_bad_webhook_never_lifts_a_suspension(growth_team, stripe_fake, client):
    team_suspend(team=growth_team, reason=services.PAYMENT_OVERDUE)
    invoice = stripe_fake.add_invoice("cus_team_a", status="paid")
    response = post_event(client, stripe_fake.event("invoice.paid", invoice), secret="whsec_forged")
    assert response.status_code == 400
    assert TeamSuspension.objects.filter(team=growth_team).exists()
