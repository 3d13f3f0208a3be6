"""Budgets in money (usage charges rated as billing rates them) and the forecast alert ("at this pace you will use it
all up on <date>"). Usage goes through the real gateway API, ingestion and aggregation."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail

from alerts import services
from alerts.models import Budget, BudgetFiring
from alerts.tests.test_budgets import CALL, _aggregate, _push
from billing.models import BillingAccount, Plan, PlanVersion
from endpoints.services import api_key_create
from webhooks.models import WebhookEvent

PER_MILLION = Decimal(5000)  # a unit costs half a cent: a few relays cost dollars
INCLUDED = 2 * CALL


@pytest.fixture
def priced(team_a, usage):
    """Team A on Pay as you go at its own prices: 52 units included, then $5,000 per million units."""
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="payg"))
    PlanVersion.objects.create(
        plan_id="payg", team=team_a, effective_from=usage.now - timedelta(days=400), monthly_fee=Decimal(10),
        included_units=INCLUDED, tiers=[{"up_to": None, "per_million": str(PER_MILLION)}],
    )  # fmt: skip


def _charge(units: int) -> Decimal:
    return (Decimal(max(units - INCLUDED, 0)) * PER_MILLION / 1_000_000).quantize(Decimal("0.01"))


def test_a_money_budget_counts_usage_charges_and_a_key_its_share(
    usage, team_a, owner_a, priced, django_capture_on_commit_callbacks
):
    other, _secret = api_key_create(endpoint=usage.endpoint, name="other", actor=owner_a)
    team_budget = services.budget_create(
        team=team_a, actor=owner_a, scope="team", name="Spend", measure="money", amount=Decimal("1.00"),
        thresholds=[50, 100],
    )  # fmt: skip
    key_budget = services.budget_create(
        team=team_a, actor=owner_a, scope="key", key=usage.key, name="Key spend", measure="money", amount=5,
    )  # fmt: skip
    _push(usage, 6)
    _push(usage, 4, key=other)
    _aggregate(django_capture_on_commit_callbacks)

    team_standing, key_standing = services.standings([team_budget, key_budget])
    assert team_standing.used == _charge(10 * CALL) == Decimal("1.04")  # 208 units past the allowance
    assert key_standing.used == (Decimal("1.04") * 6 / 10).quantize(Decimal("0.01"))  # its share of the charge
    fired = BudgetFiring.objects.filter(budget=team_budget).order_by("threshold")
    assert list(fired.values_list("threshold", "used")) == [(50, Decimal("1.04")), (100, Decimal("1.04"))]
    assert not BudgetFiring.objects.filter(budget=key_budget).exists()
    assert "$1.04 of $1.00 used" in mail.outbox[0].body
    event = WebhookEvent.objects.filter(type="budget.exceeded").get()
    assert (event.payload["used"], event.payload["budget"]["measure"]) == ("1.04", "money")


def test_a_money_budget_runs_over_the_billing_month(team_a, owner_a, usage):
    with pytest.raises(services.BudgetError) as raised:
        services.budget_create(team=team_a, actor=owner_a, scope="key", key=usage.key, name="Daily spend",
                               measure="money", period="day", amount=1)  # fmt: skip
    assert set(raised.value.errors) == {"period"}


def _later(usage, start, end):
    """An instant after the usage with enough of the period behind it for a pace (1/24 of it) to count."""
    return max(usage.now + timedelta(minutes=1), start + (end - start) / 12)


def test_the_forecast_fires_once_a_period_with_the_date_the_pace_reaches_the_amount(
    usage, team_a, owner_a, django_capture_on_commit_callbacks
):
    _push(usage, 10)
    _aggregate(django_capture_on_commit_callbacks)
    start, end = services.period_of("month", usage.now)
    at = _later(usage, start, end)
    elapsed = at - start
    pace = Decimal(((end - start) / elapsed + 1) / 2)  # the amount is reached half-way between now and the end
    budget = services.budget_create(team=team_a, actor=owner_a, scope="team", name="Month", thresholds=[100],
                                    amount=(10 * CALL * pace).quantize(Decimal(1)))  # fmt: skip
    Budget.objects.filter(pk=budget.pk).update(forecast=True)  # asked for from `at` on (creating it evaluates now)
    budget.refresh_from_db()
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert len(services.budgets_evaluate(budgets=[budget], at=at)) == 1
        assert services.budgets_evaluate(budgets=[budget], at=at + timedelta(hours=1)) == []  # once a period
    expected = start + elapsed * float(budget.amount / (10 * CALL))
    (standing,) = services.standings([budget], at)
    assert abs(standing.forecast_at - expected) <= timedelta(minutes=2)
    (firing,) = BudgetFiring.objects.filter(budget=budget)
    assert (firing.kind, firing.threshold, firing.forecast_at) == ("forecast", 100, standing.forecast_at)
    assert "forecast to run out on" in mail.outbox[0].subject
    event = WebhookEvent.objects.get(type="budget.forecast")
    assert event.payload["forecast_at"] == standing.forecast_at.isoformat()

    quiet = services.budget_create(team=team_a, actor=owner_a, scope="team", name="No forecast", thresholds=[100],
                                   amount=budget.amount)  # fmt: skip
    assert services.budgets_evaluate(budgets=[quiet], at=at) == []  # only budgets that ask for it
    far = services.budget_create(team=team_a, actor=owner_a, scope="team", name="Far", forecast=True,
                                 amount=(10 * CALL * (end - start) / elapsed * 2))  # fmt: skip
    assert services.standings([far], at)[0].forecast_at is None  # this period's pace never reaches it


def test_a_money_forecast_rates_the_pace_with_the_allowance_and_the_prices(
    usage, team_a, owner_a, priced, django_capture_on_commit_callbacks
):
    _push(usage, 10)
    _aggregate(django_capture_on_commit_callbacks)
    start, end = services.period_of("month", usage.now)
    at = _later(usage, start, end)
    elapsed = at - start
    factor = Decimal(((end - start) / elapsed + 1) / 2)
    amount = _charge(int(10 * CALL * factor))
    budget = services.budget_create(team=team_a, actor=owner_a, scope="team", name="Spend", measure="money",
                                    amount=amount, forecast=True)  # fmt: skip
    # The charge reaches the amount when units * f - included = amount / price: not linear in the charge so far.
    needed = (amount * 1_000_000 / PER_MILLION + INCLUDED) / (10 * CALL)
    (standing,) = services.standings([budget], at)
    # Charges are whole cents of whole units: the forecast is as close as the time the pace takes to use 3 units.
    assert abs(standing.forecast_at - (start + elapsed * float(needed))) <= elapsed * 3 / (10 * CALL)


def test_no_forecast_before_a_pace_is_known(usage, team_a, owner_a):
    budget = services.budget_create(team=team_a, actor=owner_a, scope="team", name="Month", amount=10, forecast=True)
    start, end = services.period_of("month", usage.now)
    assert services._forecast(lambda f: 5 * f, budget.amount, start, end, start + (end - start) / 30) is None
    assert services._forecast(lambda f: 5 * f, budget.amount, start, end, start + (end - start) / 20) is not None
