"""Rating: worked examples, properties (tiers, allowance, rounding), units from the catalog, price versions."""

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing import rating, selectors
from billing.models import BillingAccount, Plan, PlanVersion
from billing.rating import Prices, Tier, TierError, apportion, overage_amount, parse_tiers, rate
from billing.tests.fixtures import aggregate, relays

D = Decimal
GROWTH = Prices(D("49.00"), 100_000_000, (Tier(None, D("0.70")),))
PAYG = Prices(D("0"), 0, (Tier(1_000_000_000, D("1.00")), Tier(10_000_000_000, D("0.80")), Tier(None, D("0.60"))))
FREE = Prices(D("0"), 25_000_000, ())
M = 1_000_000

# (prices, units per service, expected total, expected per-service amounts)
WORKED = [
    ("growth, no usage: the fee", GROWTH, {}, "49.00", {}),
    ("growth, exactly the allowance", GROWTH, {"eth-mainnet": 100 * M}, "49.00", {"eth-mainnet": "0.00"}),
    ("growth, 50M over at $0.70", GROWTH, {"eth-mainnet": 150 * M}, "84.00", {"eth-mainnet": "35.00"}),
    ("growth, one unit over rounds to $0", GROWTH, {"eth-mainnet": 100 * M + 1}, "49.00", {"eth-mainnet": "0.00"}),
    ("growth, half a cent rounds up", GROWTH, {"eth-mainnet": 100 * M + 714_286}, "49.50", {"eth-mainnet": "0.50"}),
    ("growth, allowance shared in proportion", GROWTH, {"eth-mainnet": 150 * M, "base": 50 * M}, "119.00",
     {"eth-mainnet": "52.50", "base": "17.50"}),
    ("payg, the first tier", PAYG, {"eth-mainnet": 1000 * M}, "1000.00", {"eth-mainnet": "1000.00"}),
    ("payg, one million into the second tier", PAYG, {"eth-mainnet": 1001 * M}, "1000.80", {"eth-mainnet": "1000.80"}),
    ("payg, all three tiers", PAYG, {"eth-mainnet": 12_000 * M}, "9400.00", {"eth-mainnet": "9400.00"}),
    ("payg, two services", PAYG, {"eth-mainnet": 300 * M, "base": 100 * M}, "400.00",
     {"eth-mainnet": "300.00", "base": "100.00"}),
    ("payg, three single units round to nothing", PAYG, {"a": 1, "b": 1, "c": 1}, "0.00", {"a": "0.00", "b": "0.00",
                                                                                          "c": "0.00"}),
    ("payg, cents shared by largest remainder", PAYG, {"a": 10_000, "b": 10_000, "c": 10_000}, "0.03",
     {"a": "0.01", "b": "0.01", "c": "0.01"}),
    ("payg, fractional LLM units round once for the team", PAYG, {"llm": D("0.4"), "llm2": D("0.4")}, "0.00",
     {"llm": "0.00", "llm2": "0.00"}),
    ("free, within the allowance", FREE, {"eth-mainnet": 20 * M}, "0.00", {"eth-mainnet": "0.00"}),
    ("free, beyond the allowance is not sold", FREE, {"eth-mainnet": 30 * M}, "0.00", {"eth-mainnet": "0.00"}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "prices", "units", "total", "amounts"), WORKED, ids=[w[0] for w in WORKED])
def test_worked_examples(name, prices, units, total, amounts):
    rated = rate(units, prices)
    assert rated.total == D(total)
    assert {line.service_id: line.amount for line in rated.lines} == {k: D(v) for k, v in amounts.items()}


def test_units_beyond_a_hard_capped_allowance_are_reported_as_unbilled():
    rated = rate({"eth-mainnet": 30 * M}, FREE)
    assert (rated.included_units, rated.overage_units, rated.unbilled_units) == (25 * M, 5 * M, 5 * M)
    assert rated.allowance_used == 1.2


def test_fractional_units_round_half_up_once_for_the_team():
    rated = rate({"a": D("0.5"), "b": D("0.3"), "c": D("0.7")}, PAYG)
    assert rated.units == 2  # 1.5 → 2 (per service, 1 + 0 + 1 would be 2 as well; 0.5 + 0.3 alone → 1)
    assert sum(line.units for line in rated.lines) == 2
    assert rate({"a": D("0.5"), "b": D("0.3")}, PAYG).units == 1
    assert rate({"a": D("0.49")}, PAYG).units == 0


services = st.dictionaries(
    st.sampled_from(["eth-mainnet", "base", "arbitrum", "solana", "llama"]),
    st.one_of(st.integers(0, 20_000 * M), st.decimals(0, 10_000, places=4, allow_nan=False, allow_infinity=False)),
    max_size=5,
)
tiers = st.lists(st.tuples(st.integers(1, 5_000 * M), st.decimals(0, 5, places=3)), max_size=3).map(
    lambda raw: tuple(Tier(up, p) for up, p in sorted(dict(raw).items()))
)
prices = st.builds(
    lambda fee, included, bounded, last: Prices(
        fee, included, (*bounded, Tier(None, last)) if last is not None else ()
    ),
    st.decimals(0, 1000, places=2),
    st.integers(0, 1_000 * M),
    tiers,
    st.one_of(st.none(), st.decimals(0, 5, places=3)),
)


@settings(max_examples=300, deadline=None)
@given(units=services, prices=prices)
def test_lines_always_add_up_and_respect_the_allowance(units, prices):
    rated = rate(units, prices)
    assert sum(line.amount for line in rated.lines) == rated.usage_amount
    assert rated.total == rated.fee + rated.usage_amount
    assert sum(line.units for line in rated.lines) == rated.units
    included = min(rated.units, prices.included_units)
    assert sum(line.included_units for line in rated.lines) == rated.included_units == included
    assert sum(line.overage_units for line in rated.lines) == rated.overage_units == rated.units - included
    assert all(0 <= line.included_units <= line.units for line in rated.lines)
    expected = overage_amount(rated.overage_units, prices.tiers).quantize(D("0.01"), ROUND_HALF_UP)
    assert rated.usage_amount == (expected if prices.tiers else D(0))
    assert rated.usage_amount.as_tuple().exponent >= -2  # whole cents


@settings(max_examples=200, deadline=None)
@given(units=st.integers(0, 20_000 * M), more=st.integers(0, 2_000 * M), prices=prices)
def test_more_units_never_cost_less(units, more, prices):
    assert rate({"s": units + more}, prices).total >= rate({"s": units}, prices).total


@settings(max_examples=200, deadline=None)
@given(prices=prices)
def test_each_tier_boundary_costs_the_sum_of_the_full_tiers_below_it(prices):
    lower, expected = 0, D(0)
    for tier in prices.tiers:
        if tier.up_to is None:
            break
        expected += (tier.up_to - lower) * tier.per_million / rating.MILLION
        assert overage_amount(tier.up_to, prices.tiers) == expected
        lower = tier.up_to


@given(prices=prices)
def test_zero_usage_costs_the_fee_alone(prices):
    rated = rate({}, prices)
    assert (rated.total, rated.units, rated.lines) == (prices.monthly_fee.quantize(D("0.01")), 0, ())


@given(total=st.integers(0, 10**9), weights=st.dictionaries(st.text(max_size=3), st.integers(0, 10**6), max_size=6))
def test_apportion_sums_exactly_and_stays_within_one_of_the_exact_share(total, weights):
    shares = apportion(total, weights)
    weight = sum(weights.values())
    if weight == 0:
        assert set(shares.values()) <= {0}
        return
    assert sum(shares.values()) == total
    for key, value in weights.items():
        assert abs(shares[key] - D(total) * value / weight) < 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("x", "must be a list"),
        ([{"up_to": None}], "give up_to and per_million"),
        ([{"up_to": 0, "per_million": "1"}, {"up_to": None, "per_million": "1"}], "positive whole number"),
        ([{"up_to": 10, "per_million": "-1"}, {"up_to": None, "per_million": "1"}], "zero or more"),
        ([{"up_to": 10, "per_million": "1"}, {"up_to": 5, "per_million": "1"}, {"up_to": None, "per_million": "1"}],
         "must grow"),
        ([{"up_to": 10, "per_million": "1"}], "last tier must be unbounded"),
        ([{"up_to": None, "per_million": "abc"}], "must be a number"),
    ],
)  # fmt: skip
def test_malformed_tiers_are_refused_with_a_reason(raw, message):
    with pytest.raises(TierError, match=message):
        parse_tiers(raw)
    version = PlanVersion(plan_id="growth", effective_from=datetime(2030, 1, 1, tzinfo=UTC), tiers=raw)
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        version.clean()


@pytest.mark.parametrize(
    ("exact", "units"),
    [("0", 0), ("0.4999999999", 0), ("0.5", 1), ("1.5", 2), ("2.5", 3), ("318.18", 318), ("1000000.5", 1_000_001)],
)
def test_units_round_half_up_to_a_whole_unit(exact, units):
    assert rating.round_units(D(exact)) == units


@pytest.mark.parametrize(
    ("exact", "amount"),
    [("0.004999", "0.00"), ("0.005", "0.01"), ("0.025", "0.03"), ("-0.005", "-0.01"), ("49", "49.00")],
)
def test_amounts_round_half_up_to_the_cent(exact, amount):
    assert str(rating.round_cents(D(exact))) == amount


@pytest.mark.parametrize(("cents", "dollars"), [(0, "0.00"), (1, "0.01"), (4900, "49.00"), (-150, "-1.50")])
def test_cents_read_as_dollars_with_two_places(cents, dollars):
    assert str(rating.dollars(cents)) == dollars


# --- units from the catalog -------------------------------------------------------------------------


@pytest.mark.django_db
def test_units_come_from_the_catalog_successes_only_and_llm_tokens_at_list_price():
    catalog = selectors.service_catalog()
    eth = catalog["eth-mainnet"]
    rows = [
        {"service": "eth-mainnet", "method": "eth_call", "successes": 10, "input_tokens": 0, "output_tokens": 0},
        {"service": "eth-mainnet", "method": "eth_getLogs", "successes": 3, "input_tokens": 0, "output_tokens": 0},
        {"service": "llama-3.1-8b-instruct", "method": "chat.completions", "successes": 2,
         "input_tokens": 1_000_000, "output_tokens": 500_000},
    ]  # fmt: skip
    units = rating.exact_units_of(rows, catalog)
    assert eth.compute_units_for("eth_getLogs") == 75  # the catalog's override
    assert units["eth-mainnet"] == 10 * eth.compute_units_for("eth_call") + 3 * 75
    # $0.05 per million input and $0.08 per million output tokens; 1M units = $1.
    assert units["llama-3.1-8b-instruct"] == D("1000000") * D("0.05") + D("500000") * D("0.08") == 90_000
    amounts = {line.service_id: line.amount for line in rate(units, PAYG).lines}
    assert amounts == {"llama-3.1-8b-instruct": D("0.09"), "eth-mainnet": D("0.00")}  # $0.090485 in all


@pytest.mark.django_db
def test_a_period_is_billed_from_the_usage_ledger(usage, team_a):
    relays(usage, 30)  # successes on eth-mainnet, eth_call
    relays(usage, 5, status=502, error_class="upstream")  # failures are free
    aggregate()
    now = datetime.now(UTC)
    cost = selectors.cost_to_date(team=team_a, now=now)
    per_relay = selectors.service_catalog()["eth-mainnet"].compute_units_for("eth_call")
    assert cost.plan.slug == "free"
    assert cost.rating.units == cost.units == 30 * per_relay
    assert cost.total == D("0.00")
    assert cost.projected_total == D("0.00")
    assert cost.current.projected.units >= cost.rating.units


@pytest.mark.django_db
def test_a_new_price_version_applies_from_the_next_period_and_never_rewrites_this_one(usage, team_a):
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="payg"))
    relays(usage, 40)
    aggregate()
    now = datetime.now(UTC)
    start, end = rating.period_of(now)
    before = selectors.period_cost(team=team_a, start=start, end=end, now=now)
    # Mid-period, the operator doubles the price from now on.
    PlanVersion.objects.create(plan_id="payg", effective_from=now - timedelta(seconds=1),
                               tiers=[{"up_to": None, "per_million": "2.00"}])  # fmt: skip
    after = selectors.period_cost(team=team_a, start=start, end=end, now=now)
    assert after.version == before.version  # this period keeps its prices
    assert after.rating == before.rating
    next_start, _next_end = rating.period_of(end + timedelta(days=1))
    assert selectors.version_for(team=team_a, plan=Plan.objects.get(slug="payg"), at=next_start).tiers == [
        {"up_to": None, "per_million": "2.00"}
    ]


@pytest.mark.django_db
def test_a_teams_own_prices_win_over_the_plans(team_a, team_b):
    enterprise = Plan.objects.get(slug="enterprise")
    custom = PlanVersion.objects.create(plan=enterprise, team=team_a, effective_from=datetime(2026, 2, 1, tzinfo=UTC),
                                        monthly_fee=D("2000"), included_units=5_000 * M,
                                        tiers=[{"up_to": None, "per_million": "0.30"}])  # fmt: skip
    at = datetime(2026, 6, 1, tzinfo=UTC)
    assert selectors.version_for(team=team_a, plan=enterprise, at=at) == custom
    assert selectors.version_for(team=team_b, plan=enterprise, at=at).team is None


def test_periods_are_calendar_months_in_utc():
    assert rating.period_of(datetime(2026, 2, 14, 12, tzinfo=UTC)) == (
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    )
    assert rating.previous_period(datetime(2026, 1, 5, tzinfo=UTC))[0] == datetime(2025, 12, 1, tzinfo=UTC)
