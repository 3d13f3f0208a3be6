"""Reads for billing: a team's plan and prices, its plan segments, billable units and cost to date, invoices and what
is overdue; the meter ledger's units, Stripe events due, and the operator's lists across teams.

A period (a UTC calendar month: subscriptions are anchored to the 1st at 00:00 UTC, so Stripe's periods are the
same) is rated in **segments**, one per plan the team was on (PlanSpan), each with its own allowance and tiers,
as Stripe bills a subscription whose price changed mid-period. Usage is attributed to segments by the hour: the
hour in which the plan changed belongs to the new plan (its meter event is timestamped at the change, so Stripe
bills it at the new price too).

Fees are modelled the way Stripe invoices a monthly licensed price in flexible billing mode: the full fee of the
plan in effect at a period's start, billed in advance on the invoice that closes the previous period; a
subscription starting mid-period pays for the rest of it (fee × remaining / period length); a change mid-period
credits the unused part of what was charged (charge × remaining / what it covered) and charges the new plan's fee
for the rest. Each such line is rounded half up to the cent on its own — the rounding Stripe applies per line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from accounts.models import Team
from analytics import selectors as usage
from billing import rating
from billing.models import (
    BillingAccount,
    EventStatus,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    MeterReport,
    MeterReportStatus,
    Plan,
    PlanSpan,
    PlanVersion,
    Reconciliation,
    StripeEvent,
    SubscriptionStatus,
    owing,
)
from billing.rating import Rating  # the type by name: SegmentCost and PeriodCost have a field called rating
from endpoints.models import Endpoint, Service

FREE = "free"

LIVE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE,
        SubscriptionStatus.UNPAID, SubscriptionStatus.INCOMPLETE, SubscriptionStatus.PAUSED)  # fmt: skip


def account_of(*, team: Team) -> BillingAccount | None:
    return BillingAccount.objects.select_related("plan").filter(team=team).first()


def has_live_subscription(account: BillingAccount | None) -> bool:
    return bool(account and account.stripe_subscription_id and account.subscription_status in LIVE)


def plan_of(*, team: Team, account: BillingAccount | None = None) -> Plan:
    """The team's plan: Free until it has a billing account saying otherwise."""
    account = account or account_of(team=team)
    return account.plan if account else Plan.objects.get(slug=FREE)


def version_for(*, team: Team, plan: Plan, at: datetime) -> PlanVersion | None:
    """The prices in effect at `at`: the team's own version of the plan if it has one, else the plan's."""
    versions = PlanVersion.objects.filter(plan=plan, effective_from__lte=at).filter(Q(team=team) | Q(team__isnull=True))
    return versions.order_by("team_id", "-effective_from").first()  # NULLS LAST: the team's own first


def usage_prices_at(*, team: Team, at: datetime) -> rating.Prices:
    """The usage prices (allowance and tiers; the fee is a line of its own) of the team's plan at `at`: what a budget
    in money rates usage with."""
    return _usage_prices(version_for(team=team, plan=plan_of(team=team), at=at))


def plans_with_prices(*, team: Team, at: datetime) -> list[tuple[Plan, PlanVersion | None]]:
    """Every plan with the team's prices for it at `at` (the plans page)."""
    return [(plan, version_for(team=team, plan=plan, at=at)) for plan in Plan.objects.all()]


def plan_of_prices(prices: set[str]) -> Plan | None:
    """The plan one of these Stripe prices belongs to (its fee or usage price), if any."""
    prices = prices - {""}
    if not prices:
        return None
    version = (
        PlanVersion.objects.filter(Q(stripe_fee_price_id__in=prices) | Q(stripe_usage_price_id__in=prices))
        .select_related("plan")
        .first()
    )
    return version.plan if version else None


def plan_of_subscription(subscription: dict[str, Any]) -> Plan | None:
    """The plan whose prices the subscription's items carry — what the Customer Portal changes when a customer
    switches plans — and only when no item's price is known, the plan Checkout wrote into its metadata."""
    prices = {str((item.get("price") or {}).get("id") or "") for item in subscription.get("items", {}).get("data", [])}
    plan = plan_of_prices(prices)
    if plan:
        return plan
    slug = (subscription.get("metadata") or {}).get("plan")
    return Plan.objects.filter(slug=slug).first() if slug else None


# --- plan segments -------------------------------------------------------------------------------


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Span:
    """Part of a period on one plan: [start, end) as Stripe has it, and the hours of usage it bills."""

    plan: Plan
    start: datetime
    end: datetime

    @property
    def usage_start(self) -> datetime:
        return _hour(self.start)  # the hour in which the plan changed is the new plan's

    @property
    def usage_end(self) -> datetime:
        return _hour(self.end)


def plan_segments(*, team: Team, start: datetime, end: datetime, account: BillingAccount | None = None) -> list[Span]:
    """The plans the team was on over [start, end), in order (consecutive spans of one plan merged). A team without
    plan history has always been on its account's plan; before its first span, on Free."""
    spans = list(PlanSpan.objects.filter(team=team, starts_at__lt=end).select_related("plan").order_by("starts_at"))
    if not spans:
        return [Span(plan_of(team=team, account=account), start, end)]
    earlier = [span for span in spans if span.starts_at <= start]
    plan = earlier[-1].plan if earlier else Plan.objects.get(slug=FREE)
    cuts = [(start, plan)] + [(span.starts_at, span.plan) for span in spans if span.starts_at > start]
    merged: list[tuple[datetime, Plan]] = []
    for at, span_plan in cuts:
        if not merged or merged[-1][1].pk != span_plan.pk:
            merged.append((at, span_plan))
    ends = [at for at, _plan in merged[1:]] + [end]
    return [Span(span_plan, at, until) for (at, span_plan), until in zip(merged, ends, strict=True)]


def plan_at(*, team: Team, at: datetime, account: BillingAccount | None = None) -> Plan:
    return plan_segments(team=team, start=at, end=at + timedelta(seconds=1), account=account)[0].plan


# --- billable units, from the usage ledger -------------------------------------------------------

Catalog = Mapping[str, Service]


def service_catalog() -> dict[str, Service]:
    """Every service by id, retired ones too (usage of a service retired since is still billed)."""
    return {service.id: service for service in Service.objects.all()}


def billable_units(
    *, team: Team, start: datetime, end: datetime, services: Catalog | None = None
) -> dict[str, Decimal]:
    """The team's exact billable units per service over [start, end) (one rollup query)."""
    rows = usage.usage_by(team=team, start=start, end=end, by=("service", "method"), fields=rating.RATING_FIELDS)
    return rating.exact_units_of(rows, services if services is not None else service_catalog())


def billable_units_total(*, team: Team, start: datetime, end: datetime, services: Catalog | None = None) -> Decimal:
    """The team's exact billable units over [start, end), all services (nothing for an empty range)."""
    if end <= start:
        return Decimal(0)
    return sum(billable_units(team=team, start=start, end=end, services=services).values(), Decimal(0))


def billable_units_by_endpoint(
    *, team: Team, start: datetime, end: datetime, services: Catalog | None = None
) -> dict[int, dict[str, Decimal]]:
    """Exact billable units per endpoint (pk) and service (one query over the full rollups)."""
    rows = usage.usage_by(
        team=team, start=start, end=end, by=("endpoint", "service", "method"), fields=rating.RATING_FIELDS
    )
    services = services if services is not None else service_catalog()
    return {endpoint: rating.exact_units_of(group, services) for endpoint, group in _by(rows, "endpoint_id").items()}


def _by(rows: list[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    return groups


def usage_rows_by_hour(*, team: Team, start: datetime, end: datetime) -> dict[datetime, list[dict[str, Any]]]:
    """The team's rating rows (service, method and RATING_FIELDS) over [start, end), hour by hour."""
    rows = usage.usage_by(
        team=team, start=start, end=end, by=("service", "method"), fields=rating.RATING_FIELDS, hourly=True
    )
    return _by(rows, "bucket")


def usage_rows_by_team(*, start: datetime, end: datetime) -> dict[int, list[dict[str, Any]]]:
    """Every team's rating rows over [start, end), by team id (one query for all teams)."""
    rows = usage.usage_by(
        team=None, start=start, end=end, by=("team", "service", "method"), fields=rating.RATING_FIELDS
    )
    return _by(rows, "team_id")


# --- fees ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeeLine:
    """A fee charge (or a credit, negative) as Stripe puts it on an invoice, dated when Stripe creates it."""

    at: datetime
    plan: Plan
    description: str
    amount: Decimal


def fee_lines(
    *,
    team: Team,
    start: datetime,
    end: datetime,
    segments: list[Span],
    versions: list[PlanVersion | None] | None = None,
) -> list[FeeLine]:
    """The fee lines of the period [start, end) with these segments: the full fee of the plan at its start, and at
    each change a credit for the unused part of what was charged and the new plan's fee for the rest. `versions`:
    each segment's prices, if already read."""
    length = Decimal((end - start).total_seconds())
    lines: list[FeeLine] = []
    charged, covers_from = Decimal(0), start  # what the last fee charge was, and from when it covered the period
    if versions is None:
        versions = [version_for(team=team, plan=segment.plan, at=segment.start) for segment in segments]
    for segment, version in zip(segments, versions, strict=True):
        remaining = Decimal((end - segment.start).total_seconds())
        day = f"{segment.start:%-d %b}"
        if segment.start > start and charged:
            credit = rating.round_cents(charged * remaining / Decimal((end - covers_from).total_seconds()))
            lines.append(FeeLine(segment.start, segment.plan, f"Unused time on the previous plan after {day}", -credit))
        fee = Decimal(version.monthly_fee) if version and segment.plan.requires_payment else Decimal(0)
        if not fee:
            charged = Decimal(0)
            continue
        if segment.start == start:
            charged = rating.round_cents(fee)
            lines.append(FeeLine(start, segment.plan, f"{segment.plan.name} monthly fee", charged))
        else:
            charged = rating.round_cents(fee * remaining / length)
            description = f"{segment.plan.name} fee from {day} (prorated)"
            lines.append(FeeLine(segment.start, segment.plan, description, charged))
        covers_from = segment.start
    return lines


# --- cost of a period ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentCost:
    """One segment's usage rated at its plan's prices (fees are FeeLines), and for the open one a projection."""

    span: Span
    version: PlanVersion | None
    rating: Rating
    projected: Rating

    @property
    def plan(self) -> Plan:
        return self.span.plan


class _Totals:
    """What rated segments and fee lines add up to (a period's cost, or what an invoice should bill)."""

    segments: tuple[SegmentCost, ...]
    fees: tuple[FeeLine, ...]

    @property
    def fee_total(self) -> Decimal:
        return sum((line.amount for line in self.fees), Decimal(0))

    @property
    def usage_total(self) -> Decimal:
        return sum((segment.rating.usage_amount for segment in self.segments), Decimal(0))

    @property
    def total(self) -> Decimal:
        return self.fee_total + self.usage_total

    @property
    def units(self) -> int:
        return sum(segment.rating.units for segment in self.segments)


@dataclass(frozen=True)
class PeriodCost(_Totals):
    """A period's usage per plan segment and its fee lines; for the period in progress, also a projection of its
    end at the current segment's pace."""

    period_start: datetime
    period_end: datetime
    as_of: datetime
    segments: tuple[SegmentCost, ...]
    fees: tuple[FeeLine, ...]

    @property
    def current(self) -> SegmentCost:
        return self.segments[-1]

    @property
    def plan(self) -> Plan:
        return self.current.plan

    @property
    def version(self) -> PlanVersion | None:
        return self.current.version

    @property
    def rating(self) -> Rating:
        """The current segment's usage (its allowance and tiers)."""
        return self.current.rating

    @property
    def in_progress(self) -> bool:
        return self.as_of < self.period_end

    @property
    def projected_total(self) -> Decimal | None:
        if not self.in_progress:
            return None
        return self.fee_total + sum((segment.projected.usage_amount for segment in self.segments), Decimal(0))


def _usage_prices(version: PlanVersion | None) -> rating.Prices:
    prices = rating.Prices.of(version) if version else rating.FREE_OF_CHARGE
    return rating.Prices(Decimal(0), prices.included_units, prices.tiers)  # the fee is a FeeLine


def segment_cost(*, team: Team, span: Span, now: datetime, services: Catalog | None = None) -> SegmentCost:
    """A segment's usage rated at the prices of its plan's version in effect when it starts."""
    services = services if services is not None else service_catalog()
    names = {service_id: service.name for service_id, service in services.items()}
    version = version_for(team=team, plan=span.plan, at=span.start)
    prices = _usage_prices(version)
    units = billable_units(team=team, start=span.usage_start, end=span.usage_end, services=services)
    rated = rating.rate(units, prices, names)
    projected = rated
    if span.usage_start <= now < span.usage_end:
        elapsed = max(now - span.usage_start, timedelta(hours=1))
        factor = Decimal((span.usage_end - span.usage_start).total_seconds()) / Decimal(elapsed.total_seconds())
        projected = rating.rate({s: u * factor for s, u in units.items()}, prices, names)
    return SegmentCost(span, version, rated, projected)


def period_cost(*, team: Team, start: datetime, end: datetime, now: datetime | None = None) -> PeriodCost:
    """The team's cost for the period [start, end): each plan segment's usage at its prices and the fee lines; for
    the period in progress, the cost to date and a projection at the same pace to the period's end."""
    now = now or timezone.now()
    account = account_of(team=team)
    spans = plan_segments(team=team, start=start, end=end, account=account)
    services = service_catalog()
    segments = tuple(segment_cost(team=team, span=span, now=now, services=services) for span in spans)
    versions = [segment.version for segment in segments]
    fees = tuple(
        line for line in fee_lines(team=team, start=start, end=end, segments=spans, versions=versions) if line.at <= now
    )
    return PeriodCost(start, end, min(now, end), segments, fees)


def cost_to_date(*, team: Team, now: datetime | None = None) -> PeriodCost:
    """The current period's cost so far and its projected end: the billing page and the dashboard's cost card."""
    now = now or timezone.now()
    start, end = rating.period_of(now)
    return period_cost(team=team, start=start, end=end, now=now)


# --- invoices ------------------------------------------------------------------------------------


def invoice_list(
    *,
    team: Team,
    status: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    invoice_id: int | None = None,
) -> QuerySet[Invoice]:
    """The team's invoices, newest first, optionally by status, by the period they bill, or just one."""
    invoices = Invoice.objects.filter(team=team)
    if status:
        invoices = invoices.filter(status=status)
    if start:
        invoices = invoices.filter(period_end__gt=start)
    if end:
        invoices = invoices.filter(period_start__lt=end)
    if invoice_id is not None:
        invoices = invoices.filter(pk=invoice_id)
    return invoices


def invoice_line_list(*, team: Team, invoices: QuerySet[Invoice]) -> QuerySet[InvoiceLine]:
    """Every line of these invoices of the team's (a slice is fine), newest invoice first, each with its invoice."""
    return (
        InvoiceLine.objects.filter(invoice__team=team, invoice__in=invoices.values("pk"))
        .select_related("invoice")
        .order_by("-invoice__created", "invoice_id", "id")
    )


def invoice_get(*, team: Team, invoice_id: int) -> Invoice:
    return Invoice.objects.prefetch_related("lines").get(team=team, pk=invoice_id)


def team_has_unpaid_invoices(*, team: Team) -> bool:
    """Whether the team owes money on an invoice (team deletion waits until it does not)."""
    return Invoice.objects.filter(owing(), team=team).exists()


def team_deletion_blocker(*, team: Team) -> tuple[str, str] | None:
    """Why the team cannot be deleted yet — (code, message) — or None. An invoice that is not final (a draft Stripe
    may still change) or one still unpaid keeps the team until it is settled."""
    draft = Invoice.objects.filter(team=team, status=InvoiceStatus.DRAFT).order_by("created").first()
    if draft is not None:
        message = (
            f"Invoice {draft} is still a draft: Stripe finalizes it within about an hour. Delete the team once it is "
            "final (and paid)."
        )
        return "invoice_not_final", message
    if team_has_unpaid_invoices(team=team):
        return "unpaid_invoice", "This team has an unpaid invoice. Pay or settle it before deleting the team."
    return None


def overdue_invoices(*, team: Team) -> QuerySet[Invoice]:
    """Invoices whose payment failed and are still unpaid, oldest failure first."""
    return Invoice.objects.filter(owing(), team=team, payment_failed_at__isnull=False).order_by("payment_failed_at")


def grace_period() -> timedelta:
    return timedelta(days=settings.BILLING_GRACE_DAYS)


@dataclass(frozen=True)
class Overdue:
    invoice: Invoice
    suspend_at: datetime

    @classmethod
    def of(cls, invoice: Invoice) -> Overdue:
        """An invoice whose payment failed, and when the team's keys stop for it: the grace period after that."""
        if invoice.payment_failed_at is None:
            raise ValueError(f"Invoice {invoice} has no failed payment")
        return cls(invoice, invoice.payment_failed_at + grace_period())

    @property
    def amount(self) -> Decimal:
        return rating.dollars(self.invoice.amount_remaining)


def overdue_of(*, team: Team) -> Overdue | None:
    """The oldest overdue invoice and when the team's keys stop for it (the banner's facts)."""
    invoice = overdue_invoices(team=team).first()
    return Overdue.of(invoice) if invoice else None


@dataclass(frozen=True)
class EndpointShare:
    endpoint_id: int
    name: str
    public_id: str | None  # None once the endpoint is deleted
    units: int
    amount: Decimal


@dataclass(frozen=True)
class InvoiceBreakdown(_Totals):
    """What we expect on an invoice: the usage of the plan segments it bills (per service and per endpoint, each list
    adding up) and its fee lines."""

    segments: tuple[SegmentCost, ...]
    fees: tuple[FeeLine, ...]
    endpoints: tuple[EndpointShare, ...]
    invoice_subtotal: Decimal

    @property
    def difference(self) -> Decimal:
        return self.invoice_subtotal - self.total


def expected_on_invoice(
    *, team: Team, start: datetime, end: datetime
) -> tuple[tuple[SegmentCost, ...], tuple[FeeLine, ...]]:
    """The usage segments and fee lines Stripe puts on an invoice for [start, end): a subscription's first invoice
    (start == end) carries the fee for the rest of its first period; a later one, the usage of the paid segments
    starting in [start, end), the fee lines dated in (start, end] — prorations, and the next period's fee in
    advance when it closes a period."""
    period_start, period_end = rating.period_of(start)
    spans = plan_segments(team=team, start=period_start, end=period_end)
    lines = fee_lines(team=team, start=period_start, end=period_end, segments=spans)
    if start == end:  # a subscription's first invoice (its plan starts then), or a one-off with no usage behind it
        starts_plan = PlanSpan.objects.filter(team=team, starts_at=start).exists()
        return (), tuple(line for line in lines if line.at == start and starts_plan)
    services = service_catalog()
    segments = tuple(
        segment_cost(team=team, span=span, now=end, services=services)
        for span in spans
        if start <= span.start < end and span.plan.requires_payment
    )
    fees = [line for line in lines if start < line.at <= end]
    if end == period_end:
        next_end = rating.period_of(end)[1]
        next_spans = plan_segments(team=team, start=end, end=next_end)
        fees += [line for line in fee_lines(team=team, start=end, end=next_end, segments=next_spans) if line.at == end]
    return segments, tuple(fees)


def invoice_breakdown(*, team: Team, invoice: Invoice) -> InvoiceBreakdown:
    """Rate what the invoice bills from the usage ledger and share each segment's usage amount out per endpoint in
    proportion to their units (largest remainder), so per-service and per-endpoint lists both add up."""
    segments, fees = expected_on_invoice(team=team, start=invoice.period_start, end=invoice.period_end)
    units: dict[str, int] = {}
    cents: dict[str, int] = {}
    for segment in segments:
        rated = segment.rating
        per_endpoint = billable_units_by_endpoint(team=team, start=segment.span.usage_start, end=segment.span.usage_end)
        exact = {str(pk): sum(values.values(), Decimal(0)) for pk, values in per_endpoint.items()}
        shares = rating.apportion(rated.units, exact)
        overage = rating.apportion(rated.overage_units, shares) if rated.prices.tiers else dict.fromkeys(shares, 0)
        for key, amount in rating.apportion(int(rated.usage_amount * 100), overage).items():
            units[key] = units.get(key, 0) + shares[key]
            cents[key] = cents.get(key, 0) + amount
    endpoints = {e.pk: e for e in Endpoint.objects.filter(team=team, pk__in=[int(k) for k in units])}
    listed = [
        EndpointShare(
            endpoint_id=int(key),
            name=endpoints[int(key)].name if int(key) in endpoints else f"Endpoint {key}",
            public_id=endpoints[int(key)].public_id
            if int(key) in endpoints and endpoints[int(key)].deleted_at is None
            else None,
            units=units[key],
            amount=Decimal(cents[key]) / 100,
        )
        for key in sorted(units, key=lambda k: (-units[k], k))
    ]
    return InvoiceBreakdown(segments, fees, tuple(listed), Decimal(invoice.subtotal) / 100)


# --- the meter ledger ----------------------------------------------------------------------------


def metered_teams() -> list[Team]:
    """Teams with hours to meter: a live subscription, or an ended one whose last paid hours are not all recorded (a
    canceled team is metered up to its end, never after)."""
    ended_since = PlanSpan.objects.filter(team=OuterRef("pk"), starts_at__gt=OuterRef("billing__metered_through"))
    return list(
        Team.objects.filter(billing__stripe_customer_id__gt="", billing__metered_through__isnull=False)
        .filter(Q(billing__subscription_status__in=LIVE) | Exists(ended_since))
        .order_by("pk")
    )


def paid_segments(*, team: Team, start: datetime, end: datetime) -> list[Span]:
    """The segments of paid plans over [start, end), period by period (a segment never crosses a period end)."""
    spans: list[Span] = []
    period_start, period_end = rating.period_of(start)
    while period_start < end:
        spans += [span for span in plan_segments(team=team, start=period_start, end=period_end)
                  if span.plan.requires_payment and span.usage_end > start and span.usage_start < end]  # fmt: skip
        period_start, period_end = rating.period_of(period_end)
    return spans


def metered_units(*, team: Team, start: datetime, end: datetime) -> list[tuple[Span, int]]:
    """Each paid segment overlapping [start, end), with its units in that range as the meter ledger carries them
    (rounded cumulatively from the segment's start), from the rollups as they are now."""
    services = service_catalog()
    out = []
    for span in paid_segments(team=team, start=start, end=end):
        low, high = max(start, span.usage_start), min(end, span.usage_end)
        before = billable_units_total(team=team, start=span.usage_start, end=low, services=services)
        through = before + billable_units_total(team=team, start=low, end=high, services=services)
        out.append((span, rating.round_units(through) - rating.round_units(before)))
    return out


def units_sent(*, team: Team, **filters: Any) -> int:
    """Units of the team's ledger rows Stripe's meter accepted, among those `filters` select."""
    sent = MeterReport.objects.filter(team=team, status=MeterReportStatus.SENT, **filters)
    return int(sent.aggregate(n=Sum("units"))["n"] or 0)


def usage_invoices_finalized_since(since: datetime) -> QuerySet[Invoice]:
    """Every team's invoices finalized since `since` that bill a usage period (not a subscription's first invoice)."""
    return Invoice.objects.filter(finalized_at__gte=since, period_end__gt=F("period_start")).select_related("team")


# --- Stripe's events -----------------------------------------------------------------------------

MAX_EVENT_ATTEMPTS = 6


def events_due(*, now: datetime | None = None) -> list[StripeEvent]:
    """Events to (re)process: received over 2 minutes ago and never processed (their task was lost), or failed
    fewer than MAX_EVENT_ATTEMPTS times and last tried long enough ago (2, 4, 8… minutes)."""
    now = now or timezone.now()
    stuck = StripeEvent.objects.filter(status=EventStatus.RECEIVED, received_at__lt=now - timedelta(minutes=2))
    failed = StripeEvent.objects.filter(status=EventStatus.FAILED, attempts__lt=MAX_EVENT_ATTEMPTS)
    return list(stuck) + [event for event in failed if event.received_at <= now - timedelta(minutes=2**event.attempts)]


# --- the operator's billing page (every team) -----------------------------------------------------

OPERATOR_LIST_LIMIT = 100


def failed_events() -> QuerySet[StripeEvent]:
    """Webhook events whose processing failed, newest first."""
    return StripeEvent.objects.filter(status=EventStatus.FAILED).order_by("-received_at")


def reconciliation_differences() -> QuerySet[Reconciliation]:
    """Every team-day where our units, what the ledger sent and Stripe's meter do not all agree, newest first."""
    return Reconciliation.objects.differences().select_related("team").order_by("-day", "team_id")


def meter_failures() -> QuerySet[MeterReport]:
    """Ledger rows Stripe refused or that grew too old to send (the first OPERATOR_LIST_LIMIT)."""
    failed = (MeterReportStatus.FAILED, MeterReportStatus.EXPIRED)
    return MeterReport.objects.filter(status__in=failed).select_related("team")[:OPERATOR_LIST_LIMIT]


def missed_invoices() -> QuerySet[Invoice]:
    """Invoices finalized before some of their usage reached Stripe's meter, latest period first."""
    missed = Invoice.objects.filter(missed_units__gt=0).select_related("team").order_by("-period_end")
    return missed[:OPERATOR_LIST_LIMIT]


def deleted_teams() -> QuerySet[Team]:
    """Closed teams, latest first, with their billing account and how many invoices (and unpaid ones) they keep."""
    return (
        Team.objects.filter(deleted_at__isnull=False)
        .select_related("billing")
        .annotate(invoice_count=Count("invoices"), unpaid_count=Count("invoices", filter=owing("invoices__")))
        .order_by("-deleted_at")[:OPERATOR_LIST_LIMIT]
    )
