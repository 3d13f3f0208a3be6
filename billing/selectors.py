"""Reads for billing: a team's plan and prices, its cost to date, invoices and what is overdue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from billing import rating
from billing.models import BillingAccount, Invoice, InvoiceStatus, Plan, PlanVersion

FREE = "free"
UNPAID = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)


def account_of(*, team: Any) -> BillingAccount | None:
    return BillingAccount.objects.select_related("plan").filter(team=team).first()


def plan_of(*, team: Any, account: BillingAccount | None = None) -> Plan:
    """The team's plan: Free until it has a billing account saying otherwise."""
    account = account or account_of(team=team)
    return account.plan if account else Plan.objects.get(slug=FREE)


def version_for(*, team: Any, plan: Plan, at: datetime) -> PlanVersion | None:
    """The prices in effect at `at`: the team's own version of the plan if it has one, else the plan's."""
    versions = PlanVersion.objects.filter(plan=plan, effective_from__lte=at).filter(Q(team=team) | Q(team__isnull=True))
    return versions.order_by("team_id", "-effective_from").first()  # NULLS LAST: the team's own first


@dataclass(frozen=True)
class PeriodCost:
    """A period's rating, and for the period in progress a projection of its end."""

    plan: Plan
    version: PlanVersion | None
    period_start: datetime
    period_end: datetime
    as_of: datetime
    rating: rating.Rating
    projected: rating.Rating | None

    @property
    def in_progress(self) -> bool:
        return self.as_of < self.period_end


def period_cost(
    *, team: Any, start: datetime, end: datetime, now: datetime | None = None, plan: Plan | None = None
) -> PeriodCost:
    """The team's rating for the period [start, end) under `plan` (default: its current plan) with the prices
    in effect at the period's start; for the period in progress, the cost to date and a projection at the
    same pace to the period's end."""
    now = now or timezone.now()
    plan = plan or plan_of(team=team)
    version = version_for(team=team, plan=plan, at=start)
    prices = rating.Prices.of(version) if version else rating.FREE_OF_CHARGE
    services = rating.catalog()
    names = {service_id: service.name for service_id, service in services.items()}
    as_of = min(now, end)
    units = rating.billable_units(team=team, start=start, end=end, services=services)
    rated = rating.rate(units, prices, names)
    projected = None
    if now < end:
        elapsed = max(now - start, timedelta(hours=1))
        factor = Decimal((end - start) / timedelta(seconds=1)) / Decimal(elapsed / timedelta(seconds=1))
        projected = rating.rate({s: u * factor for s, u in units.items()}, prices, names)
    return PeriodCost(plan, version, start, end, as_of, rated, projected)


def cost_to_date(*, team: Any, now: datetime | None = None) -> PeriodCost:
    """The current period's cost so far and its projected end: the billing page and the dashboard's cost card."""
    now = now or timezone.now()
    start, end = rating.period_of(now)
    return period_cost(team=team, start=start, end=end, now=now)


# --- invoices ------------------------------------------------------------------------------------


def invoice_list(
    *, team: Any, status: str | None = None, start: datetime | None = None, end: datetime | None = None
) -> QuerySet[Invoice]:
    """The team's invoices, newest first, optionally by status and by the period they bill."""
    invoices = Invoice.objects.filter(team=team)
    if status:
        invoices = invoices.filter(status=status)
    if start:
        invoices = invoices.filter(period_end__gt=start)
    if end:
        invoices = invoices.filter(period_start__lt=end)
    return invoices


def invoice_get(*, team: Any, invoice_id: int) -> Invoice:
    return Invoice.objects.prefetch_related("lines").get(team=team, pk=invoice_id)


def team_has_unpaid_invoices(*, team: Any) -> bool:
    """Whether the team owes money on an invoice (team deletion waits until it does not)."""
    return Invoice.objects.filter(team=team, status__in=UNPAID, amount_remaining__gt=0).exists()


def team_deletion_blocker(*, team: Any) -> tuple[str, str] | None:
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


def overdue_invoices(*, team: Any) -> QuerySet[Invoice]:
    """Invoices whose payment failed and are still unpaid, oldest failure first."""
    return Invoice.objects.filter(
        team=team, status__in=UNPAID, payment_failed_at__isnull=False, amount_remaining__gt=0
    ).order_by("payment_failed_at")


def grace_period() -> timedelta:
    return timedelta(days=settings.BILLING_GRACE_DAYS)


@dataclass(frozen=True)
class Overdue:
    invoice: Invoice
    suspend_at: datetime

    @property
    def amount(self) -> Decimal:
        return (Decimal(self.invoice.amount_remaining) / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)


def overdue_of(*, team: Any) -> Overdue | None:
    """The oldest overdue invoice and when the team's keys stop for it (the banner's facts)."""
    invoice = overdue_invoices(team=team).first()
    if invoice is None:
        return None
    return Overdue(invoice, invoice.payment_failed_at + grace_period())  # type: ignore[operator]


@dataclass(frozen=True)
class EndpointShare:
    endpoint_id: int
    name: str
    public_id: str | None  # None once the endpoint is deleted
    units: int
    amount: Decimal


@dataclass(frozen=True)
class InvoiceBreakdown:
    """Our usage for an invoice's period, per service and per endpoint: each list adds up to our total."""

    cost: PeriodCost
    endpoints: tuple[EndpointShare, ...]
    invoice_subtotal: Decimal

    @property
    def total(self) -> Decimal:
        return self.cost.rating.total

    @property
    def difference(self) -> Decimal:
        return self.invoice_subtotal - self.total


def invoice_breakdown(*, team: Any, invoice: Invoice) -> InvoiceBreakdown:
    """Rate the invoice's period from the usage ledger and share the usage amount out per endpoint in
    proportion to their units (largest remainder), so per-service and per-endpoint lists both add up."""
    from endpoints.models import Endpoint

    cost = period_cost(
        team=team, start=invoice.period_start, end=invoice.period_end, plan=invoice.plan, now=invoice.period_end
    )
    rated = cost.rating
    per_endpoint = rating.billable_units_by_endpoint(team=team, start=invoice.period_start, end=invoice.period_end)
    exact = {str(pk): sum(units.values(), Decimal(0)) for pk, units in per_endpoint.items()}
    units = rating.apportion(rated.units, exact)
    overage = rating.apportion(rated.overage_units, units) if rated.prices.tiers else dict.fromkeys(units, 0)
    cents = rating.apportion(int(rated.usage_amount * 100), overage)
    endpoints = {e.pk: e for e in Endpoint.objects.filter(team=team, pk__in=[int(k) for k in units])}
    shares = [
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
    return InvoiceBreakdown(cost, tuple(shares), Decimal(invoice.subtotal) / 100)
