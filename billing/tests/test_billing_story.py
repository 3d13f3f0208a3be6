"""The billing period, end to end, against Stripe's subscription billing as the fake engine plays it.

One story per paid plan: the team subscribes mid-month, uses the API across the period's end (with records that
arrive late, once inside an hour already reported and once after the period's last hour went out), switches plans
in the Customer Portal mid-period, and pays the invoice that closes the period. At the end, four accounts of the
same money agree to the cent: the meter ledger, the meter events Stripe received, the invoice lines Stripe computed
from them, and the billing pages; and reconciliation finds nothing to flag.

Time: the story runs in the recent past (its period ends on the last 1st of a month at least three hours ago), so
usage goes through the real ingestion; every step Gatehouse or Stripe takes runs at its moment (time_machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing import rating, selectors, services, stripe_client, tasks
from billing.models import BillingAccount, Invoice, InvoiceStatus, MeterReport, MeterReportStatus, PlanSpan, PlanVersion
from billing.tests.fixtures import aggregate, relays
from billing.tests.stripe_billing import BillingEngine
from endpoints.models import Endpoint
from project.templatetags.ui import usd

pytestmark = pytest.mark.django_db

# Each plan's prices for Team A, small enough that a few hundred relays cross allowances and tiers.
PRICES = {
    "growth": {"monthly_fee": "49.00", "included_units": 2_000,
               "tiers": [{"up_to": 3_000, "per_million": "5000"}, {"up_to": None, "per_million": "4000"}]},
    "payg": {"monthly_fee": "0", "included_units": 0,
             "tiers": [{"up_to": 1_500, "per_million": "3000"}, {"up_to": None, "per_million": "2500"}]},
    "enterprise": {"monthly_fee": "2000.00", "included_units": 3_000,
                   "tiers": [{"up_to": None, "per_million": "1500"}]},
}  # fmt: skip
STORIES = [("payg", "growth"), ("growth", "payg"), ("enterprise", "growth")]


@contextmanager
def at(moment: datetime) -> Iterator[None]:
    with time_machine.travel(moment, tick=False):
        yield


def cents(amount: Decimal) -> int:
    return int(amount * 100)


@pytest.fixture
def engine(stripe_fake, team_a):
    """Team A's own prices on every paid plan, with their Stripe prices in the fake."""
    billing = BillingEngine(stripe_fake)
    for slug, prices in PRICES.items():
        version = PlanVersion.objects.create(
            plan_id=slug, team=team_a, effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            stripe_fee_price_id=f"price_{slug}_a_fee" if prices["monthly_fee"] != "0" else "",
            stripe_usage_price_id=f"price_{slug}_a_usage", **prices,
        )  # fmt: skip
        billing.add_prices_of(version)
    return billing


def prices_of(slug: str) -> list[str]:
    return [price for price in (f"price_{slug}_a_fee", f"price_{slug}_a_usage") if slug != "payg" or "fee" not in price]


@pytest.mark.parametrize(("first", "second"), STORIES, ids=[f"{a}-then-{b}" for a, b in STORIES])
def test_a_period_with_a_mid_month_start_a_portal_switch_and_late_usage_adds_up_everywhere(
    first, second, engine, stripe_fake, team_a, owner_a, usage, client_for, deliver
):
    now = datetime.now(UTC)
    period_end = rating.period_of(now - timedelta(hours=3))[0]  # the period closed by the last 1st, ≥ 3 hours ago
    period_start = rating.previous_period(period_end)[0]
    started = period_end - timedelta(days=3) + timedelta(hours=7, minutes=23, seconds=15)
    switched = period_end - timedelta(days=2) + timedelta(hours=15, minutes=37, seconds=12)
    owner = client_for(owner_a)
    llm = {"key": usage.llm_key, "service": "llama-3.1-8b-instruct", "method": "chat.completions"}

    def report(moment: datetime) -> None:
        with at(moment):
            tasks.report_usage()

    # 1. The team subscribes mid-month: through Checkout, or (Enterprise) the operator makes the subscription.
    with at(started - timedelta(minutes=1)):
        if first == "enterprise":
            customer = services.customer_ensure(team=team_a)
        else:
            response = owner.post(f"/t/{team_a.slug}/billing/checkout", {"plan": first})
            assert response.status_code == 302
            assert response["Location"].startswith("https://checkout.stripe.com/")
            (session_id,) = stripe_fake.checkout_sessions
            customer = stripe_fake.checkout_sessions[session_id]["customer"]
    card = stripe_fake.add_payment_method(customer)
    if first == "enterprise":
        subscription, events = engine.subscribe(
            customer, prices_of(first), at=started, metadata={"team_id": str(team_a.pk)},
            anchor_config={"day_of_month": "1", "hour": "0", "minute": "0", "second": "0"}, payment_method=card["id"],
        )  # fmt: skip
    else:
        events = engine.complete_checkout(session_id, at=started, payment_method=card["id"])
        subscription = stripe_fake.subscriptions[stripe_fake.checkout_sessions[session_id]["subscription"]]
    with at(started + timedelta(seconds=5)):
        for event in events:
            deliver(event)
    account = BillingAccount.objects.get(team=team_a)
    assert (account.plan_id, account.stripe_subscription_id) == (first, subscription["id"])
    assert account.metered_through == started.replace(minute=0, second=0, microsecond=0)
    first_invoice = Invoice.objects.get(team=team_a, period_start=started, period_end=started)
    assert selectors.invoice_breakdown(team=team_a, invoice=first_invoice).difference == 0  # the prorated fee

    # 2. Usage: some before the start in its hour (that hour is the new plan's, as the meter event's time says),
    # then hour after hour, with one LLM hour of fractional units.
    first_hour = started.replace(minute=0, second=0, microsecond=0)
    relays(usage, 30, at=started - timedelta(minutes=10))
    relays(usage, 60, at=started + timedelta(minutes=10))
    relays(usage, 7, at=first_hour + timedelta(hours=3, minutes=5), input_tokens=1_234, output_tokens=567, **llm)
    aggregate()
    report(first_hour + timedelta(hours=4, minutes=5))
    # A record for an hour already reported arrives: carried when the next hour closes, by a row for that hour.
    relays(usage, 9, at=first_hour + timedelta(hours=3, minutes=40))
    aggregate()
    report(first_hour + timedelta(hours=4, minutes=20))  # nothing closed since: nothing to do
    report(first_hour + timedelta(hours=5, minutes=5))
    relays(usage, 45, at=switched - timedelta(hours=2))
    aggregate()
    report(switched.replace(minute=5, second=0))  # the hour before the switch reaches Stripe before the switch

    # 3. The Portal switch, mid-hour: the hour it happens in is the new plan's.
    relays(usage, 25, at=switched - timedelta(minutes=10))
    relays(usage, 35, at=switched + timedelta(minutes=10))
    (updated,) = engine.portal_switch(subscription["id"], prices_of(second), at=switched)
    with at(switched + timedelta(seconds=3)):
        deliver(updated)
    account.refresh_from_db()
    assert account.plan_id == second
    assert PlanSpan.objects.filter(team=team_a, starts_at=switched, plan_id=second).exists()

    # 4. Across the period's end: the last hour reported minutes after it closes, a late record after that.
    relays(usage, 70, at=period_end - timedelta(minutes=30))
    relays(usage, 50, at=period_end + timedelta(minutes=20))
    relays(usage, 4, at=period_end - timedelta(minutes=40), input_tokens=2_000, output_tokens=901, **llm)
    aggregate()
    invoice_id, created = engine.close_period(subscription["id"])
    with at(period_end + timedelta(seconds=30)):
        for event in created:
            deliver(event)
    report(period_end + timedelta(minutes=6))
    relays(usage, 11, at=period_end - timedelta(minutes=10))  # 23:50's records, arriving at 00:20
    aggregate()
    report(period_end + timedelta(minutes=21))
    finalized_at = period_end + timedelta(hours=1)
    with at(finalized_at + timedelta(seconds=5)):
        for event in engine.finalize(invoice_id, at=finalized_at):
            deliver(event)
    with at(finalized_at + timedelta(minutes=5)):
        for event in engine.pay(invoice_id, at=finalized_at + timedelta(minutes=5)):
            deliver(event)
    report(period_end + timedelta(hours=2, minutes=5))

    # The ledger: every row sent once, each segment's rows adding up to its rated units.
    rows = list(MeterReport.objects.filter(team=team_a).order_by("timestamp"))
    assert rows
    assert all(row.status in (MeterReportStatus.SENT, MeterReportStatus.SKIPPED) for row in rows)
    spans = selectors.plan_segments(team=team_a, start=period_start, end=period_end)
    assert [(span.plan.slug, span.start) for span in spans] == [("free", period_start), (first, started),
                                                                 (second, switched)]  # fmt: skip
    segments = {span.start: span for span in spans[1:]}
    for start, span in segments.items():
        exact = selectors.billable_units_total(team=team_a, start=span.usage_start, end=span.usage_end)
        assert sum(row.units for row in rows if row.segment_start == start) == rating.round_units(exact) > 0
    assert rows[0].timestamp == started  # the hour of the start is billed from the start, at the new plan
    carrier = next(row for row in rows if row.hour == first_hour + timedelta(hours=4))  # an hour with no usage…
    assert carrier.units > 0  # …carries the late record of the hour before
    assert any(row.timestamp == period_end - timedelta(hours=1, seconds=-1) for row in rows)  # 23:50's, after 00:00
    # Stripe's meter holds exactly the ledger: one event per row, at its time.
    events = {event["identifier"]: event for event in stripe_fake.meter_events}
    assert len(events) == len(stripe_fake.meter_events) == sum(1 for row in rows if row.units)
    for row in rows:
        if row.units:
            event = events[row.identifier]
            assert (event["timestamp"], int(event["payload"]["value"])) == (int(row.timestamp.timestamp()), row.units)

    # The invoice Stripe computed agrees with ours line for line, and it is paid.
    invoice = Invoice.objects.get(stripe_id=invoice_id)
    assert invoice.status == InvoiceStatus.PAID
    assert (invoice.period_start, invoice.period_end) == (started, period_end)
    breakdown = selectors.invoice_breakdown(team=team_a, invoice=invoice)
    assert breakdown.difference == 0
    assert [segment.plan.slug for segment in breakdown.segments] == [first, second]
    lines = {line.price_id: line for line in invoice.lines.all() if line.quantity != 1 or "usage" in line.price_id}
    for segment in breakdown.segments:
        usage_line = next(line for line in invoice.lines.all() if line.price_id == f"price_{segment.plan.slug}_a_usage")
        assert usage_line.quantity == segment.rating.units
        assert usage_line.amount == cents(segment.rating.usage_amount) > 0
    fee_lines = sorted(line.amount for line in invoice.lines.all() if line.price_id.endswith("_fee"))
    assert fee_lines == sorted(cents(line.amount) for line in breakdown.fees)
    assert len(lines) >= 2
    page = owner.get(f"/t/{team_a.slug}/billing/invoices/{invoice.pk}/").content.decode()
    assert f"Adds up to the invoice's subtotal of {usd(invoice.dollars('subtotal'))}" in page

    # The billing page for the period now running: the second plan's fee (the same line Stripe charged in
    # advance) and the usage since the 1st.
    with at(period_end + timedelta(hours=2, minutes=10)):
        cost = selectors.cost_to_date(team=team_a)
        home = owner.get(f"/t/{team_a.slug}/billing/").content.decode()
    assert [line.amount for line in cost.fees] == [line.amount for line in breakdown.fees if line.at == period_end]
    assert f'data-testid="period-total">{usd(cost.total)}<' in home
    assert cost.usage_total >= 0
    assert cost.rating.units > 0

    # Reconciliation: every day Stripe's meter, our ledger and our usage agree, and the invoice missed nothing.
    with at(period_end + timedelta(hours=3)):
        for day in range((period_end - started.replace(hour=0, minute=0, second=0)).days):
            row = services.reconcile_day(team=team_a, day=started + timedelta(days=day))
            assert row is not None
            assert row.matches, (row.day, row.ours, row.reported, row.stripe, row.error)
            assert row.ours > 0
    invoice.refresh_from_db()
    assert invoice.missed_units == 0
    assert services.invoice_check(invoice=invoice) == 0
    assert stripe_fake.contract_errors == []
    assert Endpoint.objects.filter(team=team_a).exists()  # (the usage fixture's endpoint carried it all)
    assert stripe_client.configured()
