"""Stripe's subscription billing, simulated on top of the HTTP fake, for end-to-end billing tests.

What the fake's HTTP endpoints cannot show on their own is what Stripe *does* between requests: completing a
Checkout into a subscription, switching plans in the Customer Portal, closing a period into an invoice. This
engine does those things the way Stripe documents them for this API version, and hands back the webhook events
Stripe would send, for the test to deliver:

* **Checkout** (subscription mode) creates the subscription with the session's items at the completion time; a
  ``billing_cycle_anchor_config`` anchors its periods (the next such instant, UTC), and with
  ``proration_behavior=create_prorations`` the first invoice charges each licensed price for the rest of the first
  period: unit amount × (anchor − start) / (length of the full period ending at the anchor). Billing mode is
  flexible.
* **A Portal plan switch** (flexible billing mode, prorations created): the subscription's items change now; a
  removed metered price gets a pending invoice item billing the usage *Stripe has received by then* with
  timestamps from its start to the switch (anything arriving later for that window is never billed); a removed
  licensed price is credited the unused part of what was charged for it (charge × remaining / what it covered);
  an added licensed price is charged for the rest of the period (unit amount × remaining / period length); an added
  metered price bills usage timestamped from the switch on.
* **The period's end**: a draft invoice at the period end; at finalization (by default an hour later) its lines are
  computed — each metered price's usage from the meter events received by then, timestamped in its window; the
  pending invoice items; each licensed price for the next period, in advance.

Amounts: graduated tiers add up each tier's quantity × unit amount (decimal cents) and the line is rounded half up
to the cent once; each proration line is rounded half up on its own. (Stripe documents neither rounding rule
exactly; Gatehouse's rating makes the same assumptions — see the README.)
"""

from __future__ import annotations

import calendar
import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from billing.tests.stripe_fake import FakeStripe, Json, _sub_dict

HOUR = 3_600


@dataclass(frozen=True)
class Price:
    id: str
    product: str
    unit_amount: int | None = None  # licensed (a monthly fee), cents
    tiers: tuple[tuple[int | None, Decimal], ...] = ()  # metered, graduated: (up_to units or None, cents per unit)

    @property
    def metered(self) -> bool:
        return self.unit_amount is None

    def amount(self, quantity: int) -> int:
        """Graduated tiers: each tier's units at its unit amount, the sum rounded half up to the cent."""
        total, lower = Decimal(0), 0
        for up_to, cents in self.tiers:
            upper = quantity if up_to is None else min(quantity, up_to)
            if upper <= lower:
                break
            total += (upper - lower) * cents
            lower = upper
        return int(total.quantize(Decimal(1), ROUND_HALF_UP))


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _month_before(anchor: int) -> int:
    moment = datetime.fromtimestamp(anchor, UTC)
    year, month = (moment.year, moment.month - 1) if moment.month > 1 else (moment.year - 1, 12)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return _epoch(moment.replace(year=year, month=month, day=day))


def _month_after(anchor: int) -> int:
    moment = datetime.fromtimestamp(anchor, UTC)
    year, month = (moment.year, moment.month + 1) if moment.month < 12 else (moment.year + 1, 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return _epoch(moment.replace(year=year, month=month, day=day))


def _next_anchor(at: int, config: dict[str, str]) -> int:
    """The next instant after `at` that matches the anchor config (day of month, hour, minute, second; UTC)."""
    moment = datetime.fromtimestamp(at, UTC)
    for months in range(13):
        year, month = moment.year + (moment.month - 1 + months) // 12, (moment.month - 1 + months) % 12 + 1
        day = min(int(config["day_of_month"]), calendar.monthrange(year, month)[1])
        candidate = datetime(year, month, day, int(config.get("hour", 0)), int(config.get("minute", 0)),
                             int(config.get("second", 0)), tzinfo=UTC)  # fmt: skip
        if _epoch(candidate) > at:
            return _epoch(candidate)
    raise AssertionError("no anchor within a year")


def _prorate(amount: int, numerator: int, denominator: int) -> int:
    return int((Decimal(amount) * numerator / denominator).quantize(Decimal(1), ROUND_HALF_UP))


@dataclass
class _Item:
    price: Price
    usage_from: int  # metered: usage timestamped from here is billed on this item
    charged: int = 0  # licensed: what was last charged for it, and from when that charge covered the period
    covers_from: int = 0


@dataclass
class BillingEngine:
    fake: FakeStripe
    prices: dict[str, Price] = field(default_factory=dict)
    items: dict[str, _Item] = field(default_factory=dict)  # subscription item id → its billing state
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # customer → pending invoice items
    drafts: dict[str, dict[str, Any]] = field(default_factory=dict)  # invoice id → what it closes

    # -- prices -------------------------------------------------------------------------------------

    def add_prices_of(self, version: Any) -> None:
        """The Stripe prices an operator creates for a plan version (README, "Setting up Stripe"): a monthly licensed
        price for the fee, and a metered price on the meter with graduated tiers — the included units at 0, then the
        version's overage tiers (each ``up_to`` counted from the first unit)."""
        product = f"prod_{version.plan_id}"
        if version.stripe_fee_price_id:
            cents = int(Decimal(version.monthly_fee) * 100)
            self.prices[version.stripe_fee_price_id] = Price(version.stripe_fee_price_id, product, unit_amount=cents)
        if version.stripe_usage_price_id:
            included = int(version.included_units)
            tiers: list[tuple[int | None, Decimal]] = [(included, Decimal(0))] if included else []
            for tier in version.tiers:
                up_to = None if tier["up_to"] is None else included + int(tier["up_to"])
                tiers.append((up_to, Decimal(str(tier["per_million"])) * 100 / 1_000_000))
            usage = Price(version.stripe_usage_price_id, product, tiers=tuple(tiers))
            self.prices[version.stripe_usage_price_id] = usage

    # -- usage as Stripe's meter has it ---------------------------------------------------------------

    def usage(self, customer: str, start: int, end: int, *, received_by: int) -> int:
        """The sum of the customer's meter events timestamped in [start, end) that Stripe had received by then."""
        return sum(
            int(event["payload"]["value"])
            for event in self.fake.meter_events
            if event["payload"]["stripe_customer_id"] == customer
            and start <= event["timestamp"] < end
            and event["created"] <= received_by
        )

    # -- Checkout -------------------------------------------------------------------------------------

    def complete_checkout(self, session_id: str, *, at: datetime, payment_method: str | None = None) -> list[Json]:
        """The customer pays: the session's subscription starts now. Returns the events Stripe sends."""
        fake = self.fake
        params = fake.checkout_session_params[session_id]
        session = fake.checkout_sessions[session_id]
        prices = [params[key] for key in sorted(params) if key.startswith("line_items[") and key.endswith("[price]")]
        sub, events = self.subscribe(
            session["customer"],
            prices,
            at=at,
            metadata=_sub_dict(params, "subscription_data[metadata]"),
            anchor_config=_sub_dict(params, "subscription_data[billing_cycle_anchor_config]"),
            prorate=params.get("subscription_data[proration_behavior]", "create_prorations") == "create_prorations",
            billing_mode=params.get("subscription_data[billing_mode][type]", "flexible"),
            payment_method=payment_method,
        )
        fake.update(session_id, status="complete", payment_status="paid", subscription=sub["id"],
                    invoice=sub["latest_invoice"])  # fmt: skip
        return [fake.event("checkout.session.completed", session, created=_epoch(at)), *events]

    def subscribe(
        self,
        customer: str,
        prices: list[str],
        *,
        at: datetime,
        metadata: dict[str, str],
        anchor_config: dict[str, str],
        prorate: bool = True,
        billing_mode: str = "flexible",
        payment_method: str | None = None,
    ) -> tuple[Json, list[Json]]:
        """A subscription starts now (from a Checkout, or made by the operator in the Dashboard), with its first
        invoice paid. Returns it and the events Stripe sends."""
        fake, now = self.fake, _epoch(at)
        anchor = _next_anchor(now, anchor_config) if anchor_config else _month_after(now)
        full_start = _month_before(anchor)
        sub = fake.add_subscription(
            customer,
            price_ids=prices,
            current_period_start=now,
            current_period_end=anchor,
            metadata=metadata,
            default_payment_method=payment_method,
            created=now,
            start_date=now,
            billing_cycle_anchor=anchor,
            billing_mode={"type": billing_mode, "flexible": {}, "updated_at": now},
        )
        lines = []
        for item in sub["items"]["data"]:
            price = self.prices[item["price"]["id"]]
            state = _Item(price, usage_from=now)
            if not price.metered and prorate:
                state.charged = _prorate(price.unit_amount or 0, anchor - now, anchor - full_start)
                state.covers_from = now
                lines.append(self._line(price, state.charged, now, anchor, item["id"], proration=True,
                                        description=f"Remaining time on {price.product} (prorated)"))  # fmt: skip
            self.items[item["id"]] = state
        invoice = fake.add_invoice(customer, status="paid", lines=lines, subscription=sub["id"], created=now,
                                   period_start=now, period_end=now, billing_reason="subscription_create")  # fmt: skip
        fake.update(sub["id"], latest_invoice=invoice["id"])
        return sub, [
            fake.event("customer.subscription.created", sub, created=now),
            fake.event("invoice.paid", invoice, created=now),
        ]

    def _line(self, price: Price, amount: int, start: int, end: int, item: str | None, *, proration: bool = False,
              description: str = "", quantity: int | None = 1) -> dict[str, Any]:  # fmt: skip
        line = {"amount": amount, "price": price.id, "product": price.product, "period": {"start": start, "end": end},
                "subscription_item": item, "quantity": quantity, "description": description}  # fmt: skip
        if proration:
            line["metadata"] = {"proration": "true"}
        return line

    # -- the Customer Portal --------------------------------------------------------------------------

    def portal_switch(self, subscription_id: str, prices: list[str], *, at: datetime) -> list[Json]:
        """The customer switches plans in the Portal: the items become `prices` now (flexible billing mode,
        prorations created). Returns the customer.subscription.updated event."""
        fake, now = self.fake, _epoch(at)
        sub = fake.subscriptions[subscription_id]
        customer = sub["customer"]
        before = copy.deepcopy(sub["items"])
        period_start, period_end = (
            sub["items"]["data"][0]["current_period_start"],
            sub["items"]["data"][0]["current_period_end"],
        )
        full_start = _month_before(period_end)
        pending = self.pending.setdefault(customer, [])
        kept = []
        for item in sub["items"]["data"]:
            state = self.items[item["id"]]
            if item["price"]["id"] in prices:
                kept.append(item)
                continue
            if state.price.metered:  # bills the usage Stripe has now for the old price, up to the switch
                quantity = self.usage(customer, state.usage_from, now, received_by=now)
                pending.append(self._line(state.price, state.price.amount(quantity), state.usage_from, now, item["id"],
                                          quantity=quantity, description=f"Usage of {state.price.product} until the "
                                          "plan switch"))  # fmt: skip
            elif state.charged:
                credit = _prorate(state.charged, period_end - now, period_end - state.covers_from)
                pending.append(self._line(state.price, -credit, now, period_end, item["id"], proration=True,
                                          description=f"Unused time on {state.price.product}"))  # fmt: skip
        template = copy.deepcopy(sub["items"]["data"][0])
        for price_id in prices:
            if any(item["price"]["id"] == price_id for item in kept):
                continue
            price = self.prices[price_id]
            item = copy.deepcopy(template)
            item.update(id=fake._new_id("si_test"), created=now, current_period_start=period_start,
                        current_period_end=period_end)  # fmt: skip
            item["price"].update(id=price_id, created=now)
            item["plan"].update(id=price_id)
            state = _Item(price, usage_from=now)
            if not price.metered:
                state.charged, state.covers_from = _prorate(price.unit_amount or 0, period_end - now,
                                                            period_end - full_start), now  # fmt: skip
                pending.append(self._line(price, state.charged, now, period_end, item["id"], proration=True,
                                          description=f"Remaining time on {price.product}"))  # fmt: skip
            self.items[item["id"]] = state
            kept.append(item)
        sub["items"]["data"] = kept
        return [fake.event("customer.subscription.updated", sub, created=now, previous_attributes={"items": before})]

    # -- the end of a period --------------------------------------------------------------------------

    def close_period(self, subscription_id: str) -> tuple[str, list[Json]]:
        """The period ends: a draft invoice for it, the subscription moves to the next period."""
        fake = self.fake
        sub = fake.subscriptions[subscription_id]
        first = sub["items"]["data"][0]
        start, end = first["current_period_start"], first["current_period_end"]
        invoice = fake.add_invoice(sub["customer"], status="draft", subscription=subscription_id, created=end,
                                   period_start=start, period_end=end)  # fmt: skip
        self.drafts[invoice["id"]] = {"subscription": subscription_id, "start": start, "end": end}
        return invoice["id"], [fake.event("invoice.created", invoice, created=end)]

    def finalize(self, invoice_id: str, *, at: datetime, status: str = "open") -> list[Json]:
        """Stripe finalizes the draft (an hour after the period's end by default): its lines are what Stripe knows
        now — usage received by now, the pending invoice items, the next period's fees in advance."""
        fake, now = self.fake, _epoch(at)
        draft = self.drafts.pop(invoice_id)
        sub = fake.subscriptions[draft["subscription"]]
        customer, end = sub["customer"], draft["end"]
        next_end = _month_after(end)
        lines = []
        for item in sub["items"]["data"]:
            state = self.items[item["id"]]
            if state.price.metered:
                quantity = self.usage(customer, state.usage_from, end, received_by=now)
                lines.append(self._line(state.price, state.price.amount(quantity), state.usage_from, end, item["id"],
                                        quantity=quantity, description=f"Usage of {state.price.product}"))  # fmt: skip
                state.usage_from = end
        lines += self.pending.pop(customer, [])
        cancelling = sub.get("cancel_at_period_end")
        for item in sub["items"]["data"]:
            state = self.items[item["id"]]
            if not state.price.metered and not cancelling:
                state.charged, state.covers_from = state.price.unit_amount or 0, end
                lines.append(self._line(state.price, state.charged, end, next_end, item["id"],
                                        description=f"{state.price.product} monthly fee"))  # fmt: skip
            item["current_period_start"], item["current_period_end"] = end, next_end
        invoice = fake.add_invoice(customer, id=invoice_id, status=status, lines=lines, subscription=sub["id"],
                                   created=end, period_start=draft["start"], period_end=end)  # fmt: skip
        invoice["status_transitions"]["finalized_at"] = now
        invoice["effective_at"] = now
        fake.update(sub["id"], latest_invoice=invoice_id)
        return [fake.event("invoice.finalized", invoice, created=now)]

    def pay(self, invoice_id: str, *, at: datetime) -> list[Json]:
        fake = self.fake
        fake.now = _epoch(at)
        try:
            invoice = fake.update(invoice_id, status="paid")
        finally:
            fake.now = None
        return [fake.event("invoice.paid", invoice, created=_epoch(at))]
