"""Plan changes as Stripe reports them: the plan is what the subscription's prices say (a Customer Portal switch
changes them, never the metadata), each change starts a plan segment rated at its own prices, fees are prorated as
Stripe prorates them, a canceled team stops being metered, and usage that reached Stripe too late is flagged."""

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest

from billing import rating, selectors, services
from billing.models import (
    BillingAccount,
    Invoice,
    MeterReport,
    MeterReportStatus,
    Plan,
    PlanSpan,
    PlanVersion,
)
from billing.tests.fixtures import aggregate, epoch, growth_subscription, relays
from endpoints.models import ConfigChange

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def customer(team_a, stripe_fake, stripe_prices):
    stripe_fake.add_customer(id="cus_team_a", metadata={"team_id": str(team_a.pk)})
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="free"), stripe_customer_id="cus_team_a")
    return "cus_team_a"


def portal_switch(fake, subscription, prices, *, at):
    """The event the Customer Portal's switch produces: the items' prices change (the fee item goes when the new plan
    has no fee), the metadata Checkout wrote stays, and previous_attributes holds the items as they were."""
    before = {"object": "list", "data": [dict(item) for item in subscription["items"]["data"]], "has_more": False,
              "url": subscription["items"]["url"]}  # fmt: skip
    kept = [item for item in subscription["items"]["data"] if item["price"]["id"] in prices]
    usage_item = next(item for item in subscription["items"]["data"] if item["price"]["id"].endswith("_usage"))
    for price in prices:
        if not any(item["price"]["id"] == price for item in kept):
            item = {**usage_item, "id": f"si_{price}", "price": {**usage_item["price"], "id": price}}
            kept.append(item)
    subscription["items"]["data"] = kept
    return fake.event("customer.subscription.updated", subscription, created=epoch(at),
                      previous_attributes={"items": before})  # fmt: skip


def test_a_portal_switch_moves_the_team_to_the_plan_of_its_prices_not_its_metadata(
    team_a, customer, stripe_fake, deliver, usage
):
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    subscription = growth_subscription(stripe_fake, customer, team_a, start_date=epoch(started))
    deliver(stripe_fake.event("customer.subscription.created", subscription, created=epoch(started)))
    assert BillingAccount.objects.get(team=team_a).plan_id == "growth"
    feed_before = ConfigChange.objects.count()

    switched = started + timedelta(hours=20, minutes=13, seconds=7)
    event = portal_switch(stripe_fake, subscription, ["price_payg_usage"], at=switched)
    assert event["data"]["object"]["metadata"]["plan"] == "growth"  # the Portal never touches it
    deliver(event)

    account = BillingAccount.objects.get(team=team_a)
    assert account.plan_id == "payg"
    assert [(span.plan_id, span.starts_at) for span in PlanSpan.objects.filter(team=team_a)] == [
        ("free", services.HISTORY_START),  # what the team was on before its first subscription
        ("growth", started),
        ("payg", switched),
    ]
    assert ConfigChange.objects.count() > feed_before  # the new plan's rate limit reaches the gateway
    period_start, period_end = rating.period_of(switched)
    spans = selectors.plan_segments(team=team_a, start=period_start, end=period_end)
    assert [span.plan.slug for span in spans][-2:] == ["growth", "payg"]
    assert spans[-1].start == switched
    assert spans[-1].usage_start == switched.replace(minute=0, second=0)


def test_spans_from_events_are_the_same_in_any_delivery_order(team_a, customer, stripe_fake, deliver):
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    subscription = growth_subscription(stripe_fake, customer, team_a, start_date=epoch(started))
    created = stripe_fake.event("customer.subscription.created", subscription, created=epoch(started))
    to_payg = portal_switch(stripe_fake, subscription, ["price_payg_usage"], at=started + timedelta(hours=5))
    back = portal_switch(stripe_fake, subscription, ["price_growth_fee", "price_growth_usage"],
                         at=started + timedelta(hours=9))  # fmt: skip
    for event in (back, to_payg, created):  # newest first
        deliver(event)
    assert [(span.plan_id, span.starts_at - started) for span in PlanSpan.objects.filter(team=team_a)][1:] == [
        ("growth", timedelta(0)),
        ("payg", timedelta(hours=5)),
        ("growth", timedelta(hours=9)),
    ]
    assert BillingAccount.objects.get(team=team_a).plan_id == "growth"  # what Stripe says now


def test_metadata_only_names_the_plan_when_no_price_is_known(team_a, customer, stripe_fake, deliver):
    subscription = stripe_fake.add_subscription(
        customer, price_ids=("price_unknown",), metadata={"team_id": str(team_a.pk), "plan": "payg"}
    )
    deliver(stripe_fake.event("customer.subscription.created", subscription))
    assert BillingAccount.objects.get(team=team_a).plan_id == "payg"


def fee(amount, numerator, denominator):
    return (D(amount) * int(numerator) / int(denominator)).quantize(D("0.01"), ROUND_HALF_UP)


def test_fees_are_prorated_the_way_stripe_prorates_them(team_a, customer):
    """Free until the 10th (12:00), Growth until the 20th (06:30), then Pay as you go, then Growth again on the 25th:
    the prorated first fee, a credit of the unused part of what was charged, the new fee for the rest."""
    start, end = datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)
    growth, payg = Plan.objects.get(slug="growth"), Plan.objects.get(slug="payg")
    moments = [datetime(2026, 4, 10, 12, tzinfo=UTC), datetime(2026, 4, 20, 6, 30, tzinfo=UTC),
               datetime(2026, 4, 25, tzinfo=UTC)]  # fmt: skip
    for plan, moment in zip((growth, payg, growth), moments, strict=True):
        services.plan_span_record(team=team_a, plan=plan, at=moment)
    spans = selectors.plan_segments(team=team_a, start=start, end=end)
    lines = selectors.fee_lines(team=team_a, start=start, end=end, segments=spans)
    month = (end - start).total_seconds()
    first = fee("49", (end - moments[0]).total_seconds(), month)
    assert [(line.at, line.amount) for line in lines] == [
        (moments[0], first),  # 49 × 20.5 / 30 days
        (moments[1], -fee(first, (end - moments[1]).total_seconds(), (end - moments[0]).total_seconds())),
        (moments[2], fee("49", (end - moments[2]).total_seconds(), month)),
    ]
    # 49 × 20.5 / 30 days; 33.48 × 10 d 17.5 h / 20.5 d; 49 × 6 / 30 days
    assert lines[0].amount == D("33.48")
    assert lines[1].amount == D("-17.52")
    assert lines[2].amount == D("9.80")
    # The next period starts on Growth: its whole fee, in advance, on the invoice closing April.
    june = datetime(2026, 6, 1, tzinfo=UTC)
    may = selectors.plan_segments(team=team_a, start=end, end=june)
    next_lines = selectors.fee_lines(team=team_a, start=end, end=june, segments=may)
    assert [(line.at, line.amount) for line in next_lines] == [(end, D("49.00"))]


def test_each_segment_has_its_own_allowance_and_tiers(team_a, customer, usage):
    """Growth's 100M included units do not carry over into Pay as you go: each plan rates its own hours."""
    PlanVersion.objects.create(plan_id="growth", team=team_a, effective_from=datetime(2026, 1, 1, tzinfo=UTC),
                               monthly_fee=D("0"), included_units=1_000,
                               tiers=[{"up_to": None, "per_million": "1000"}])  # fmt: skip
    PlanVersion.objects.create(plan_id="payg", team=team_a, effective_from=datetime(2026, 1, 1, tzinfo=UTC),
                               tiers=[{"up_to": None, "per_million": "2000"}])  # fmt: skip
    now = datetime.now(UTC)
    switched = now - timedelta(hours=2, minutes=30)
    services.plan_span_record(team=team_a, plan=Plan.objects.get(slug="growth"), at=now - timedelta(hours=6))
    services.plan_span_record(team=team_a, plan=Plan.objects.get(slug="payg"), at=switched)
    relays(usage, 50, at=switched - timedelta(hours=1, minutes=15))  # on Growth
    relays(usage, 50, at=switched + timedelta(minutes=40))  # on Pay as you go
    aggregate()
    cost = selectors.cost_to_date(team=team_a, now=now)
    growth, payg = cost.segments[-2:]
    per_relay = selectors.service_catalog()["eth-mainnet"].compute_units_for("eth_call")
    assert growth.rating.units == payg.rating.units == 50 * per_relay
    assert growth.rating.usage_amount == ((50 * per_relay - 1_000) * D("0.001")).quantize(D("0.01"))
    assert payg.rating.usage_amount == (50 * per_relay * D("0.002")).quantize(D("0.01"))
    assert cost.total == growth.rating.usage_amount + payg.rating.usage_amount


def test_a_canceled_team_is_metered_up_to_its_end_and_never_after(team_a, customer, stripe_fake, deliver, usage):
    now = datetime.now(UTC)
    started = now - timedelta(hours=8)
    subscription = growth_subscription(stripe_fake, customer, team_a, start_date=epoch(started))
    deliver(stripe_fake.event("customer.subscription.created", subscription, created=epoch(started)))
    ended = (now - timedelta(hours=3)).replace(minute=30, second=0, microsecond=0)
    stripe_fake.update(subscription["id"], status="canceled", canceled_at=epoch(ended), ended_at=epoch(ended))
    deliver(stripe_fake.event("customer.subscription.deleted", subscription, created=epoch(ended)))
    relays(usage, 10, at=ended - timedelta(hours=2))  # subscribed
    relays(usage, 10, at=ended + timedelta(hours=1))  # after the end: Free
    aggregate()
    assert team_a in selectors.metered_teams()  # its last paid hours are not all recorded yet
    services.meter_record(team=team_a, now=now)
    assert [row.hour for row in MeterReport.objects.filter(team=team_a)] == [
        (ended - timedelta(hours=2)).replace(minute=0)
    ]
    assert team_a not in selectors.metered_teams()
    assert services.meter_record(team=team_a, now=now + timedelta(hours=3)) == 0


def test_a_switch_learned_late_records_the_hours_again_under_the_new_plan(team_a, customer, usage):
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    services.plan_span_record(team=team_a, plan=Plan.objects.get(slug="growth"), at=hour - timedelta(hours=5))
    BillingAccount.objects.filter(team=team_a).update(plan="growth", stripe_subscription_id="sub_a",
                                                      subscription_status="active",
                                                      metered_through=hour - timedelta(hours=5))  # fmt: skip
    relays(usage, 10, at=hour - timedelta(hours=3, minutes=50))
    relays(usage, 10, at=hour - timedelta(hours=2, minutes=50))
    aggregate()
    services.meter_record(team=team_a, now=now)
    assert MeterReport.objects.filter(team=team_a, segment_start=hour - timedelta(hours=5)).count() == 2
    switched = hour - timedelta(hours=3, minutes=20)  # the webhook for this switch arrives only now
    services.plan_span_record(team=team_a, plan=Plan.objects.get(slug="payg"), at=switched)
    assert BillingAccount.objects.get(team=team_a).metered_through == switched.replace(minute=0)
    services.meter_record(team=team_a, now=now)
    rows = list(MeterReport.objects.filter(team=team_a))
    assert [(row.segment_start, row.timestamp) for row in rows] == [
        (switched, switched),  # its hour is the new plan's, from the switch
        (switched, hour - timedelta(hours=3)),
    ]


def test_usage_that_reached_stripe_after_its_invoice_finalized_is_flagged(
    team_a, customer, usage, client_for, make_user
):
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    BillingAccount.objects.filter(team=team_a).update(plan="payg", subscription_status="active",
                                                      stripe_subscription_id="sub_a", metered_through=hour)  # fmt: skip
    relays(usage, 10, at=hour + timedelta(minutes=5))
    aggregate()
    services.meter_record(team=team_a, now=now)
    (row,) = MeterReport.objects.filter(team=team_a)
    start, end = rating.period_of(hour)
    invoice = Invoice.objects.create(team=team_a, stripe_id="in_late", status="open", period_start=start,
                                     period_end=end, created=now, finalized_at=now - timedelta(minutes=1))  # fmt: skip
    assert services.invoice_check(invoice=invoice) == row.units  # never sent
    MeterReport.objects.filter(pk=row.pk).update(status=MeterReportStatus.SENT, sent_at=now)  # sent after it closed
    assert services.invoice_check(invoice=invoice) == row.units
    staff = make_user("ops@gatehouse.example")
    staff.is_staff = True
    staff.save()
    page = client_for(staff).get("/operator/billing/").content.decode()
    assert "Usage that missed its invoice" in page
    assert "in_late" in page
    MeterReport.objects.filter(pk=row.pk).update(sent_at=now - timedelta(minutes=2))  # in time
    assert services.invoice_check(invoice=invoice) == 0
    assert Invoice.objects.get(pk=invoice.pk).missed_units == 0


def test_the_free_allowance_counts_from_the_switch_to_free(team_a, customer, usage):
    now = datetime.now(UTC)
    services.plan_span_record(team=team_a, plan=Plan.objects.get(slug="payg"), at=now - timedelta(hours=5))
    relays(usage, 40, at=now - timedelta(hours=4))  # on Pay as you go: not the Free allowance's business
    aggregate()
    allowance = 40 * selectors.service_catalog()["eth-mainnet"].compute_units_for("eth_call")
    PlanVersion.objects.create(plan_id="free", team=team_a, effective_from=datetime(2026, 1, 1, tzinfo=UTC),
                               included_units=allowance)  # fmt: skip
    services.plan_span_record(team=team_a, plan=Plan.objects.get(slug="free"), at=now - timedelta(hours=2))
    BillingAccount.objects.filter(team=team_a).update(plan="free")
    assert services.enforce_team(team=team_a, now=now) is None
    relays(usage, 40, at=now - timedelta(minutes=30))
    aggregate()
    assert services.enforce_team(team=team_a, now=now) == services.FREE_ALLOWANCE_USED
