"""Stripe, replaced at the HTTP boundary: the exact requests for customers, Checkout, the Portal; retries,
timeouts, transactions; and what every page does when payments are not connected."""

import re

import pytest
from django.db import transaction

from billing import services, stripe_client
from billing.models import BillingAccount, Plan

pytestmark = pytest.mark.django_db


def checkout(client, team, plan="growth"):
    return client.post(f"/t/{team.slug}/billing/checkout", {"plan": plan})


def test_upgrade_creates_the_customer_once_and_a_subscription_checkout(
    client_for, owner_a, team_a, stripe_fake, stripe_prices
):
    client = client_for(owner_a)
    response = checkout(client, team_a)
    session = next(iter(stripe_fake.checkout_sessions.values()))
    assert response.status_code == 302
    assert response["Location"] == f"https://checkout.stripe.com/c/pay/{session['id']}"
    customer_call, session_call = stripe_fake.calls
    assert (customer_call.method, customer_call.path) == ("POST", "/v1/customers")
    assert customer_call.idempotency_key == f"testserver-customer-{team_a.pk}"  # namespaced per installation
    assert customer_call.params == {"name": team_a.name, "email": owner_a.email, "metadata[team_id]": str(team_a.pk),
                                    "metadata[installation]": "testserver"}  # fmt: skip
    customer = BillingAccount.objects.get(team=team_a).stripe_customer_id
    assert customer == next(iter(stripe_fake.customers))
    assert session_call.method == "POST"
    assert session_call.path == "/v1/checkout/sessions"
    assert re.fullmatch(rf"testserver-checkout-{team_a.pk}-[0-9a-f]{{32}}", session_call.idempotency_key)
    assert session_call.params == {
        "mode": "subscription",
        "customer": customer,
        "client_reference_id": str(team_a.pk),
        "line_items[0][price]": "price_growth_fee",
        "line_items[0][quantity]": "1",
        "line_items[1][price]": "price_growth_usage",
        "success_url": f"http://testserver/t/{team_a.slug}/billing/?checkout=success",
        "cancel_url": f"http://testserver/t/{team_a.slug}/billing/plans/?checkout=cancelled",
        "metadata[team_id]": str(team_a.pk),
        "metadata[plan]": "growth",
        "subscription_data[metadata][team_id]": str(team_a.pk),
        "subscription_data[metadata][plan]": "growth",
        # Stripe's periods are Gatehouse's: calendar months from the 1st at 00:00:00 UTC, the rest of this one prorated.
        "subscription_data[billing_cycle_anchor_config][day_of_month]": "1",
        "subscription_data[billing_cycle_anchor_config][hour]": "0",
        "subscription_data[billing_cycle_anchor_config][minute]": "0",
        "subscription_data[billing_cycle_anchor_config][second]": "0",
        "subscription_data[proration_behavior]": "create_prorations",
        "subscription_data[billing_mode][type]": "flexible",
    }
    # The plan changes only when Stripe says so (webhook), not on the redirect.
    assert BillingAccount.objects.get(team=team_a).plan_id == "free"
    # A second attempt reuses the customer.
    stripe_fake.reset_calls()
    checkout(client, team_a, plan="payg")
    assert [(c.method, c.path) for c in stripe_fake.calls] == [("POST", "/v1/checkout/sessions")]
    assert stripe_fake.calls[0].params["line_items[0][price]"] == "price_payg_usage"
    assert "line_items[1][price]" not in stripe_fake.calls[0].params  # no monthly fee on pay as you go


def test_the_portal_opens_for_the_teams_customer_only(client_for, owner_a, team_a, stripe_fake, member_of):
    client = client_for(owner_a)
    response = client.post(f"/t/{team_a.slug}/billing/portal", follow=True)
    assert "no payment method to manage yet" in response.content.decode()
    assert stripe_fake.calls == []
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="growth"), stripe_customer_id="cus_a")
    stripe_fake.add_customer(id="cus_a")
    response = client.post(f"/t/{team_a.slug}/billing/portal")
    (call,) = stripe_fake.calls
    assert (call.method, call.path) == ("POST", "/v1/billing_portal/sessions")
    assert call.params == {"customer": "cus_a", "return_url": f"http://testserver/t/{team_a.slug}/billing/"}
    assert call.idempotency_key.startswith("testserver-portal-")
    assert response["Location"].startswith("https://billing.stripe.com/p/session/")
    # Finance manages the payment method too; a developer cannot.
    assert client_for(member_of("finance")).post(f"/t/{team_a.slug}/billing/portal").status_code == 302
    assert client_for(member_of("developer")).post(f"/t/{team_a.slug}/billing/portal").status_code == 403


def test_transient_failures_are_retried_with_the_same_idempotency_key(team_a, stripe_fake):
    stripe_fake.fail_next("POST", "/v1/customers", status=500)
    stripe_fake.timeout_next("POST", "/v1/customers", after_processing=True)  # the answer is lost on the way back
    customer = services.customer_ensure(team=team_a)
    calls = stripe_fake.calls_to("POST", "/v1/customers")
    assert len(calls) == 3
    assert {c.idempotency_key for c in calls} == {f"testserver-customer-{team_a.pk}"}
    assert list(stripe_fake.customers) == [customer]  # one customer, however many attempts


def test_a_lasting_outage_is_an_error_the_page_explains(client_for, owner_a, team_a, stripe_fake, stripe_prices):
    stripe_fake.fail_next("POST", "/v1/customers", status=503, times=10)
    client = client_for(owner_a)
    response = checkout(client, team_a)
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Stripe could not start the checkout" in page
    assert len(stripe_fake.calls) == 3  # the first try and two retries
    assert BillingAccount.objects.get(team=team_a).stripe_customer_id == ""


def test_requests_have_a_timeout_and_retries(stripe_settings):
    client = stripe_client._stripe()
    assert client._requestor._client._timeout == stripe_settings.STRIPE_TIMEOUT_SECONDS
    assert client._requestor._options.max_network_retries == stripe_settings.STRIPE_MAX_RETRIES


def test_stripe_is_never_called_inside_a_database_transaction(team_a, stripe_fake):
    with pytest.raises(RuntimeError, match="inside a database transaction"), transaction.atomic():
        services.customer_ensure(team=team_a)
    assert stripe_fake.calls == []


def test_choosing_an_unknown_or_unsold_plan_is_refused(client_for, owner_a, team_a, stripe_fake):
    client = client_for(owner_a)
    page = client.get(checkout(client, team_a, plan="enterprise")["Location"]).content.decode()
    assert "Choose one of the plans" in page
    page = client.get(checkout(client, team_a, plan="growth")["Location"]).content.decode()
    assert "has no Stripe price yet" in page  # the operator has not entered the prices
    assert stripe_fake.calls == []


def test_only_owners_and_admins_change_the_plan(client_for, member_of, team_a, stripe_fake, stripe_prices):
    assert checkout(client_for(member_of("finance")), team_a).status_code == 403
    assert checkout(client_for(member_of("admin")), team_a).status_code == 302
    assert checkout(client_for(member_of("viewer")), team_a).status_code == 403


# --- no Stripe configured ----------------------------------------------------------------------------


def test_without_stripe_every_billing_page_works_and_says_payments_are_not_connected(
    client_for, owner_a, team_a, settings
):
    settings.STRIPE_SECRET_KEY = ""
    client = client_for(owner_a)
    for path in ("billing/", "billing/plans/", "billing/invoices/"):
        response = client.get(f"/t/{team_a.slug}/{path}")
        assert response.status_code == 200, path
        assert "Payments are not connected" in response.content.decode(), path
    page = client.get(checkout(client, team_a)["Location"]).content.decode()
    assert "Payments are not connected on this installation" in page
    assert not BillingAccount.objects.filter(team=team_a).exclude(stripe_customer_id="").exists()


def test_a_team_with_a_subscription_switches_plans_in_the_portal_not_a_second_checkout(
    client_for, owner_a, team_a, stripe_fake, stripe_prices
):
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="growth"), stripe_customer_id="cus_a",
                                  stripe_subscription_id="sub_a", subscription_status="active")  # fmt: skip
    client = client_for(owner_a)
    page = client.get(checkout(client, team_a, plan="payg")["Location"]).content.decode()
    assert "already has a subscription: switch plans in the billing portal" in page
    assert stripe_fake.calls == []
    plans = client.get(f"/t/{team_a.slug}/billing/plans/").content.decode()
    assert "Switch in the billing portal" in plans
    assert 'name="plan"' not in plans


def test_the_vendored_stripe_examples_are_stripes_own():
    """The fake builds its answers from a copy of ../shared/stripe/fixtures3.json kept beside it."""
    from pathlib import Path

    from billing.tests.stripe_fake import FIXTURES_PATH

    shared = Path(__file__).resolve().parents[3] / "shared" / "stripe" / "fixtures3.json"
    if not shared.exists():
        pytest.skip("no ../shared checkout beside this repository")
    assert FIXTURES_PATH.read_bytes() == shared.read_bytes()
