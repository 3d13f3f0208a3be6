"""Upgrade (up to Stripe Checkout) → plan changes on the webhook → cost to date → open an invoice → export
CSV → a failed payment's webhook puts the overdue banner up. Stripe is faked at the HTTP boundary."""

import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from accounts.models import Team, User
from accounts.services import team_create
from billing import selectors, tasks
from billing.models import BillingAccount, StripeEvent
from billing.tests.fixtures import WEBHOOK_SECRET
from billing.tests.stripe_fake import sign
from project.demo import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TEAM_NAME
from project.templatetags.ui import usd
from tests.fixtures import seed_demo, seed_usage


def webhook(page, live_server, event):
    """Stripe delivers an event over HTTP; then a worker runs the task it queued (here, in-process)."""
    body = json.dumps(event)
    response = page.request.post(
        live_server.url + "/billing/stripe/webhook",
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(body.encode(), WEBHOOK_SECRET)},
    )
    assert response.status == 200, response.text()
    tasks.process_event(StripeEvent.objects.get(stripe_id=event["id"]).pk)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_billing_journey(browser_pages, live_server, stripe_fake, stripe_prices, tmp_path):
    seed_demo()
    demo = User.objects.get(email=DEMO_EMAIL)
    acme = Team.objects.get(name=DEMO_TEAM_NAME)
    seed_usage(acme, days=1, rate_per_minute=6)
    side = team_create(name="Side project", owner=demo)
    light = browser_pages("light")
    page = light.page
    stub = "<!doctype html><title>Stripe Checkout</title><h1>Checkout</h1>"  # no network here: Stripe's page
    page.route(re.compile(r"https://checkout\.stripe\.com/.*"),
               lambda route: route.fulfill(status=200, content_type="text/html", body=stub))  # fmt: skip
    light.visit("/accounts/login/", "login")
    page.get_by_label("Email").fill(DEMO_EMAIL)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.locator("main").get_by_role("button", name="Sign In").click()
    expect(page.locator(".card-value").first).to_be_visible()

    # Upgrade the side project: the plans page → Stripe Checkout.
    light.visit(f"/t/{side.slug}/billing/", "side-project-billing-free")
    page.get_by_role("button", name="Upgrade").click()
    expect(page.get_by_role("heading", name="Plans")).to_be_visible()
    light.snap("plans")
    page.get_by_role("button", name="Upgrade to Growth").click()
    page.wait_for_url(re.compile(r"https://checkout\.stripe\.com/c/pay/cs_"))
    (session,) = stripe_fake.checkout_sessions.values()
    assert session["metadata"] == {"team_id": str(side.pk), "plan": "growth"}
    customer = BillingAccount.objects.get(team=side).stripe_customer_id
    light.snap("stripe-checkout-stub")

    # Stripe confirms: the subscription webhook moves the team to Growth.
    card = stripe_fake.add_payment_method(customer, brand="mastercard", last4="4444", exp_month=3, exp_year=2030)
    subscription = stripe_fake.add_subscription(customer, price_ids=("price_growth_fee", "price_growth_usage"),
                                                metadata={"team_id": str(side.pk), "plan": "growth"},
                                                default_payment_method=card["id"])  # fmt: skip
    stripe_fake.update(session["id"], status="complete", subscription=subscription["id"])
    webhook(page, live_server, stripe_fake.event("checkout.session.completed", session))
    light.visit(f"/t/{side.slug}/billing/?checkout=success", "side-project-on-growth")
    expect(page.locator(".card-value").first).to_have_text("Growth")
    expect(page.get_by_text("Mastercard ending 4444")).to_be_visible()

    # A failed payment: the banner goes up on every team page for the owner.
    period_end = datetime.now(UTC).replace(microsecond=0)
    lines = [{"amount": 4900, "description": "Growth", "price": "price_growth_fee"}]
    invoice = stripe_fake.add_invoice(customer, status="open", attempt_count=1, lines=lines,
                                      period_start=int((period_end - timedelta(days=30)).timestamp()),
                                      period_end=int(period_end.timestamp()))  # fmt: skip
    webhook(page, live_server, stripe_fake.event("invoice.payment_failed", invoice, created=int(time.time())))
    light.visit(f"/t/{side.slug}/", "overdue-banner")
    banner = page.get_by_role("alert")
    expect(banner).to_contain_text("Payment failed.")
    expect(banner).to_contain_text("$49.00 unpaid")
    pay = banner.get_by_role("button", name="Pay the invoice")
    expect(pay).to_have_attribute("href", invoice["hosted_invoice_url"])

    # The demo team: cost to date, then its invoices.
    light.visit(f"/t/{acme.slug}/billing/", "acme-billing")
    cost = selectors.cost_to_date(team=acme)
    expect(page.get_by_test_id("cost-to-date")).to_have_text(usd(cost.total))
    page.get_by_role("link", name="All invoices →").click()
    expect(page.get_by_role("heading", name="Invoices")).to_be_visible()
    light.snap("invoices")
    paid = acme.invoices.filter(status="paid").order_by("-created").first()
    page.get_by_role("link", name=paid.number).click()
    expect(page.get_by_text("Adds up to the invoice's subtotal of $49.00")).to_be_visible()
    light.snap("invoice-detail")

    # Export the invoices as CSV.
    page.go_back()
    with page.expect_download() as download:
        page.get_by_role("button", name="Export invoices (CSV)").click()
    path = tmp_path / "invoices.csv"
    download.value.save_as(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("number,status,period_start,period_end")
    assert len(lines) == 1 + acme.invoices.count()

    # The same pages in dark mode.
    dark = browser_pages("dark")
    dark.page.emulate_media(color_scheme="dark")
    dark.page.context.add_cookies(page.context.cookies())
    dark.visit(f"/t/{acme.slug}/billing/", "acme-billing-dark")
    dark.visit(f"/t/{acme.slug}/billing/plans/", "plans-dark")
