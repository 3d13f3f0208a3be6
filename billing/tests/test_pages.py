"""Billing pages for owners, admins and finance: cost to date (the same figure as the dashboard's card),
invoices with filters, pagination and CSV, and an invoice's usage breakdown that adds up to it."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing import rating, selectors
from billing.models import BillingAccount, Invoice, Plan, PlanVersion
from billing.tests.fixtures import aggregate, relays
from endpoints.services import api_key_create, endpoint_create
from project.templatetags.ui import usd
from tests.fixtures import make_invoice

pytestmark = pytest.mark.django_db


def csv_rows(response):
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def priced_usage(team_a, owner_a, usage):
    """Team A on Pay as you go at a custom $5,000 per million units (so a few relays cost dollars), with usage
    on two endpoints and two services this month."""
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="payg"))
    since = datetime(2026, 1, 1, tzinfo=UTC)
    tiers = [{"up_to": None, "per_million": "5000"}]
    PlanVersion.objects.create(
        plan_id="payg", team=team_a, effective_from=since, monthly_fee=Decimal("10"), tiers=tiers
    )
    indexer = endpoint_create(team=team_a, name="Indexer", services=["base"], actor=owner_a)
    indexer_key, _ = api_key_create(endpoint=indexer, name="indexer", actor=owner_a)
    relays(usage, 40)  # eth-mainnet eth_call on the Wallet endpoint
    relays(usage, 13, key=indexer_key, service="base", method="eth_getLogs")
    aggregate()
    return indexer


def test_the_billing_page_shows_cost_to_date_and_the_dashboard_card_agrees(client_for, owner_a, team_a, priced_usage):
    client = client_for(owner_a)
    # One instant for the test and the pages: the projection scales with the time elapsed in the period.
    with time_machine.travel(datetime.now(UTC), tick=False):
        cost = selectors.cost_to_date(team=team_a)
        assert cost.total > Decimal("10")  # the fee and real usage
        assert cost.total == cost.fee_total + cost.rating.usage_amount
        assert [line.amount for line in cost.fees] == [Decimal("10.00")]  # the month's fee, charged on the 1st
        page = client.get(f"/t/{team_a.slug}/billing/").content.decode()
        assert f'data-testid="cost-to-date">{usd(cost.total)}<' in page
        assert f'data-testid="projected">{usd(cost.projected_total)}<' in page
        assert f'data-testid="period-total">{usd(cost.total)}<' in page
        assert "Pay as you go monthly fee" in page
        for line in cost.rating.lines:
            assert line.name in page
        cards = client.get(f"/t/{team_a.slug}/usage/panels/cards", {"range": "24h"}).content.decode()
        assert f'hx-get="/t/{team_a.slug}/billing/cost-card"' in cards  # the dashboard loads billing's own card
        card = client.get(f"/t/{team_a.slug}/billing/cost-card").content.decode()
        assert f'data-testid="cost-card">{usd(cost.total)}<' in card


def test_money_is_for_owners_admins_and_finance_only(client_for, member_of, team_a, priced_usage):
    finance = client_for(member_of("finance"))
    assert finance.get(f"/t/{team_a.slug}/billing/").status_code == 200
    assert "billing/cost-card" in finance.get(f"/t/{team_a.slug}/usage/panels/cards").content.decode()
    assert 'data-testid="cost-card"' in finance.get(f"/t/{team_a.slug}/billing/cost-card").content.decode()
    assert finance.get(f"/t/{team_a.slug}/endpoints/").status_code == 403  # and nothing about keys
    for role in ("developer", "viewer"):
        client = client_for(member_of(role))
        assert client.get(f"/t/{team_a.slug}/billing/").status_code == 403
        assert client.get(f"/t/{team_a.slug}/billing/invoices/").status_code == 403
        assert "billing/cost-card" not in client.get(f"/t/{team_a.slug}/usage/panels/cards").content.decode()
        assert client.get(f"/t/{team_a.slug}/billing/cost-card").status_code == 403
        assert "Billing</a>" not in client.get(f"/t/{team_a.slug}/").content.decode()


def test_another_teams_invoices_are_404(client_for, owner_a, outsider_b, team_a, team_b):
    theirs = make_invoice(team_b)
    ours = make_invoice(team_a)
    client = client_for(owner_a)
    assert client.get(f"/t/{team_a.slug}/billing/invoices/{theirs.pk}/").status_code == 404
    assert client.get(f"/t/{team_b.slug}/billing/invoices/{theirs.pk}/").status_code == 404
    assert client_for(outsider_b).get(f"/t/{team_a.slug}/billing/invoices/{ours.pk}/").status_code == 404
    rows = csv_rows(client.get(f"/t/{team_a.slug}/billing/invoices/", {"format": "csv"}))
    assert [row[-2] for row in rows[1:]] == [ours.stripe_id]
    lines = csv_rows(client.get(f"/t/{team_a.slug}/billing/invoices/lines.csv", {"invoice": theirs.pk}))
    assert lines[1:] == []


def test_invoices_filter_paginate_and_export(client_for, owner_a, team_a, django_assert_max_num_queries):
    months = [datetime(2026, m, 1, tzinfo=UTC) for m in range(1, 11)]
    for n, start in enumerate(months):
        status = "open" if n == 9 else ("void" if n == 4 else "paid")
        make_invoice(team_a, status=status, period_start=start, lines=(("Growth", 4900), ("Overage", 100 * n)))
    for n in range(20):
        make_invoice(team_a, period_start=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=31 * n))
    client = client_for(owner_a)
    with django_assert_max_num_queries(12):
        page = client.get(f"/t/{team_a.slug}/billing/invoices/").content.decode()
    assert "Page 1 of 2 · 30 invoices" in page
    open_only = client.get(f"/t/{team_a.slug}/billing/invoices/", {"status": "open"}).content.decode()
    assert "1 invoices" in open_only
    assert "$58.00" in open_only  # 4900 + 900 cents
    between = {"since": "2026-03-01", "until": "2026-05-31"}
    rows = csv_rows(client.get(f"/t/{team_a.slug}/billing/invoices/", {**between, "format": "csv"}))
    assert rows[0][:4] == ["number", "status", "period_start", "period_end"]
    # Periods overlapping March–May: February's ends on 4 March, so it is in too.
    assert sorted(row[2] for row in rows[1:]) == ["2026-02-01", "2026-03-01", "2026-04-01", "2026-05-01"]
    assert {row[1] for row in rows[1:]} == {"paid", "void"}
    lines = csv_rows(client.get(f"/t/{team_a.slug}/billing/invoices/lines.csv", between))
    assert len(lines) == 1 + 4 * 2
    assert (
        sum(Decimal(row[4]) for row in lines[1:])
        == Decimal(str(sum(int(r[10].replace(".", "")) for r in rows[1:]))) / 100
    )
    bad = client.get(f"/t/{team_a.slug}/billing/invoices/", {"since": "2026-05-01", "until": "2026-01-01"})
    assert "The end date is before the start date." in bad.content.decode()


def test_an_invoices_usage_breakdown_adds_up_to_it(client_for, owner_a, team_a, priced_usage):
    start, end = rating.period_of(datetime.now(UTC))
    cost = selectors.period_cost(team=team_a, start=start, end=end, now=end)
    usage_cents = int(cost.usage_total * 100)
    # The invoice closing the month bills its usage and next month's fee in advance.
    lines = (("Pay as you go, monthly fee (next month)", 1000), ("Usage", usage_cents))
    invoice = make_invoice(team_a, status="open", period_start=start, period_end=end,
                           plan=Plan.objects.get(slug="payg"), lines=lines)  # fmt: skip
    breakdown = selectors.invoice_breakdown(team=team_a, invoice=invoice)
    assert breakdown.difference == 0
    assert [(line.at, line.amount) for line in breakdown.fees] == [(end, Decimal("10.00"))]
    (segment,) = breakdown.segments
    fees = sum(line.amount for line in breakdown.fees)
    assert fees + sum(line.amount for line in segment.rating.lines) == invoice.dollars("subtotal")
    assert fees + sum(share.amount for share in breakdown.endpoints) == invoice.dollars("subtotal")
    assert sum(share.units for share in breakdown.endpoints) == breakdown.units == cost.units
    assert [share.name for share in breakdown.endpoints] == ["Wallet", "Indexer"]  # 40 × 26 > 13 × 75 units
    page = client_for(owner_a).get(f"/t/{team_a.slug}/billing/invoices/{invoice.pk}/").content.decode()
    assert f"Adds up to the invoice's subtotal of {usd(invoice.dollars('subtotal'))}" in page
    assert "Indexer" in page
    assert "Ethereum Mainnet" in page


def test_a_breakdown_that_differs_from_the_invoice_says_by_how_much(client_for, owner_a, team_a, priced_usage):
    start, end = rating.period_of(datetime.now(UTC))
    payg = Plan.objects.get(slug="payg")
    invoice = make_invoice(team_a, status="paid", period_start=start, period_end=end, plan=payg, lines=(("Usage", 1),))
    page = client_for(owner_a).get(f"/t/{team_a.slug}/billing/invoices/{invoice.pk}/").content.decode()
    assert "differs from the invoice" in page
    breakdown = selectors.invoice_breakdown(team=team_a, invoice=invoice)
    assert usd(breakdown.difference) in page
    cost = selectors.period_cost(team=team_a, start=start, end=end, now=end)
    assert breakdown.difference == Decimal("0.01") - cost.usage_total - Decimal("10.00")  # usage, next month's fee


def test_the_plans_page_offers_checkout_only_where_it_can(client_for, owner_a, member_of, team_a, stripe_settings):
    page = client_for(owner_a).get(f"/t/{team_a.slug}/billing/plans/").content.decode()
    assert page.count('name="plan"') == 2  # Pay as you go and Growth; Free is current, Enterprise is by contact
    assert "Contact sales" in page
    assert re.search(r"Growth.*\$49\.00", page, re.S)
    finance_page = client_for(member_of("finance")).get(f"/t/{team_a.slug}/billing/plans/").content.decode()
    assert 'name="plan"' not in finance_page
    assert "Only the team's owner and admins can change the plan" in finance_page


def test_the_unpaid_invoice_keeps_the_team_from_being_deleted(team_a):
    assert not selectors.team_has_unpaid_invoices(team=team_a)
    invoice = make_invoice(team_a, status="open")
    assert selectors.team_has_unpaid_invoices(team=team_a)
    Invoice.objects.filter(pk=invoice.pk).update(status="paid", amount_remaining=0)
    assert not selectors.team_has_unpaid_invoices(team=team_a)
