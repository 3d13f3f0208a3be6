"""Rating: usage rollups → priced lines per period. The one place money is computed from usage.

Units (from the service catalog, never from what the gateway claims):
- RPC: each *successful* relay costs its service's compute units, with per-method overrides; failed
  relays are free.
- LLM: tokens at the model's list prices, converted at UNITS_PER_USD (1,000,000 units = $1), so
  units = input tokens × input price per million tokens + output tokens × output price per million.

Prices: the plan version in effect when the period starts (a new version applies from the next period,
so it never rewrites a period already begun or invoiced). The monthly fee includes an allowance of
units; units beyond it are priced by graduated tiers (per million units; each tier's `up_to` counts
overage units cumulatively, as Stripe's graduated tiers do). A plan with no tiers sells no overage
(Free: its keys stop at the allowance; anything that slips through is reported as unbilled).

Rounding, the one rule: everything is exact Decimal until the end. The period's units are rounded half
up to a whole unit once, for the team (round_units: the meter ledger and the Free plan's cap round the same
way); the usage amount is rounded half up to the cent once (round_cents). Per-service lines share both out
in proportion (largest remainder), so lines always add up to the total exactly.

Pure: no database access. Reading usage and the service catalog is billing.selectors' job.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

UNITS_PER_USD = 1_000_000
MILLION = Decimal(1_000_000)
CENT = Decimal("0.01")
ONE = Decimal(1)


def round_units(value: Decimal) -> int:
    """Exact units rounded half up to a whole unit: the one rounding of units, wherever they are counted."""
    return int(value.to_integral_value(ROUND_HALF_UP))


def round_cents(value: Decimal) -> Decimal:
    """An exact amount rounded half up to the cent (Stripe rounds each invoice line this way)."""
    return value.quantize(CENT, ROUND_HALF_UP)


def dollars(cents: int) -> Decimal:
    """Integer cents (as Stripe mirrors have them) as dollars with two places, so a credit stays a number."""
    return (Decimal(cents) / 100).quantize(CENT)


class TierError(ValueError):
    pass


@dataclass(frozen=True)
class Tier:
    up_to: int | None  # overage units, cumulative; None: no upper bound
    per_million: Decimal


def parse_tiers(raw: Any) -> tuple[Tier, ...]:
    """Tiers from their JSON form; TierError says what is wrong."""
    if raw in (None, ""):
        return ()
    if not isinstance(raw, list):
        raise TierError("Tiers must be a list.")
    tiers: list[Tier] = []
    for n, item in enumerate(raw, start=1):
        if not isinstance(item, dict) or set(item) - {"up_to", "per_million"} or "per_million" not in item:
            raise TierError(f"Tier {n}: give up_to and per_million, nothing else.")
        up_to = item.get("up_to")
        if up_to is not None and (not isinstance(up_to, int) or isinstance(up_to, bool) or up_to <= 0):
            raise TierError(f"Tier {n}: up_to must be a positive whole number of units, or null.")
        try:
            price = Decimal(str(item["per_million"]))
        except InvalidOperation:
            raise TierError(f"Tier {n}: per_million must be a number.") from None
        if not price.is_finite() or price < 0:
            raise TierError(f"Tier {n}: per_million must be zero or more.")
        if tiers and (tiers[-1].up_to is None or (up_to is not None and up_to <= tiers[-1].up_to)):
            raise TierError(f"Tier {n}: up_to must grow from tier to tier, and only the last may be unbounded.")
        tiers.append(Tier(up_to, price))
    if tiers and tiers[-1].up_to is not None:
        raise TierError("The last tier must be unbounded (up_to null).")
    return tuple(tiers)


@dataclass(frozen=True)
class Prices:
    monthly_fee: Decimal
    included_units: int
    tiers: tuple[Tier, ...]

    @classmethod
    def of(cls, version: Any) -> Prices:
        return cls(Decimal(version.monthly_fee), int(version.included_units), parse_tiers(version.tiers))


FREE_OF_CHARGE = Prices(Decimal(0), 0, ())


def overage_amount(units: int, tiers: Iterable[Tier]) -> Decimal:
    """The exact price of `units` overage units under graduated tiers."""
    amount, lower = Decimal(0), 0
    for tier in tiers:
        upper = units if tier.up_to is None else min(units, tier.up_to)
        if upper <= lower:
            break
        amount += (upper - lower) * tier.per_million / MILLION
        lower = upper
    return amount


def apportion(total: int, weights: Mapping[str, Decimal | int]) -> dict[str, int]:
    """Split a whole number `total` in proportion to `weights` (largest remainder; ties by key), summing exactly."""
    weight_sum = sum((Decimal(w) for w in weights.values()), Decimal(0))
    if total == 0 or weight_sum == 0:
        return dict.fromkeys(weights, 0)
    exact = {key: Decimal(total) * Decimal(w) / weight_sum for key, w in weights.items()}
    shares = {key: int(value.to_integral_value(ROUND_FLOOR)) for key, value in exact.items()}
    left = total - sum(shares.values())
    for key in sorted(exact, key=lambda k: (-(exact[k] - shares[k]), k))[:left]:
        shares[key] += 1
    return shares


@dataclass(frozen=True)
class Line:
    """One service's share of a period."""

    service_id: str
    name: str
    units: int
    included_units: int
    overage_units: int
    amount: Decimal

    @property
    def unit_price(self) -> Decimal | None:
        """The average price per million overage units (graduated tiers make it an average)."""
        if not self.overage_units:
            return None
        return (self.amount * MILLION / self.overage_units).quantize(Decimal("0.0001"), ROUND_HALF_UP)


@dataclass(frozen=True)
class Rating:
    prices: Prices
    fee: Decimal
    lines: tuple[Line, ...]
    units: int
    included_units: int
    overage_units: int
    unbilled_units: int  # beyond the allowance on a plan that sells no overage
    usage_amount: Decimal
    total: Decimal

    @property
    def allowance_used(self) -> float | None:
        return self.units / self.prices.included_units if self.prices.included_units else None


def rate(exact_units: Mapping[str, Decimal | int], prices: Prices, names: Mapping[str, str] | None = None) -> Rating:
    """Price one period's units per service (exact, unrounded) under `prices`. Pure: no database."""
    names = names or {}
    exact = {service: Decimal(units) for service, units in exact_units.items() if Decimal(units) > 0}
    units_total = round_units(sum(exact.values(), Decimal(0)))
    units = apportion(units_total, exact)
    included_total = min(units_total, prices.included_units)
    overage_total = units_total - included_total
    included = apportion(included_total, units)
    overage = {service: units[service] - included[service] for service in units}
    sold = bool(prices.tiers)
    usage_amount = round_cents(overage_amount(overage_total, prices.tiers)) if sold else Decimal(0)
    cents = apportion(int(usage_amount * 100), overage)
    lines = tuple(
        Line(
            service_id=service,
            name=names.get(service, service),
            units=units[service],
            included_units=included[service],
            overage_units=overage[service],
            amount=Decimal(cents[service]) / 100,
        )
        for service in sorted(units, key=lambda s: (-units[s], s))
    )
    fee = round_cents(prices.monthly_fee)
    return Rating(
        prices=prices,
        fee=fee,
        lines=lines,
        units=units_total,
        included_units=included_total,
        overage_units=overage_total,
        unbilled_units=0 if sold else overage_total,
        usage_amount=usage_amount,
        total=fee + usage_amount,
    )


# --- periods -------------------------------------------------------------------------------------


def period_of(moment: datetime) -> tuple[datetime, datetime]:
    """The billing period holding `moment`: its calendar month in UTC."""
    moment = moment.astimezone(UTC)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + timedelta(days=days)


def previous_period(moment: datetime) -> tuple[datetime, datetime]:
    start, _end = period_of(moment)
    return period_of(start - timedelta(seconds=1))


# --- from the usage ledger -----------------------------------------------------------------------


def exact_units_of(rows: Iterable[Mapping[str, Any]], services: Mapping[str, Any]) -> dict[str, Decimal]:
    """Exact billable units per service from rows of (service, method, successes, input/output tokens)."""
    units: dict[str, Decimal] = {}
    for row in rows:
        service = services.get(row["service"])
        if service is None:  # ingestion only accepts catalog services; one removed since costs nothing
            continue
        if service.is_llm:
            input_price, output_price = service.token_prices
            value = row["input_tokens"] * (input_price or 0) + row["output_tokens"] * (output_price or 0)
        else:
            value = row["successes"] * service.compute_units_for(row["method"])
        units[row["service"]] = units.get(row["service"], Decimal(0)) + Decimal(value)
    return units


# What exact_units_of reads from a usage row (the usage selectors sum them).
RATING_FIELDS = ("successes", "input_tokens", "output_tokens")
