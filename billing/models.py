"""Billing: plans and their price versions, each team's billing account, Stripe mirrors and the meter ledger.

Money is Decimal (USD) in our own figures and integer cents where it mirrors Stripe.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Team


class Plan(models.Model):
    """A plan customers choose (Free, Pay as you go, Growth) or the operator assigns (Enterprise)."""

    slug = models.SlugField(primary_key=True, max_length=32)
    name = models.CharField(max_length=64)
    tagline = models.CharField(max_length=200, blank=True)
    self_serve = models.BooleanField(default=True, help_text="Teams can switch to it themselves (Checkout).")
    requires_payment = models.BooleanField(default=True, help_text="Needs a Stripe subscription and a card.")
    hard_cap = models.BooleanField(default=False, help_text="Keys stop when the allowance is used up (Free).")
    invoiced = models.BooleanField(default=False, help_text="Invoiced with payment terms instead of card charges.")
    rate_limit_rps = models.PositiveIntegerField(
        default=25,
        help_text="Requests per second an endpoint may have on this plan: the limit when an endpoint sets none, and "
        "the most it may set. The gateway gets the effective limit in the config feed.",
    )
    sort_order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["sort_order", "slug"]

    def __str__(self) -> str:
        return self.name


class PlanVersion(models.Model):
    """The prices of a plan from a date on. A period is rated with the version in effect when it starts, so a
    new version never changes a period already begun or invoiced. `team` set: one team's custom prices."""

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="versions")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="custom_prices")
    effective_from = models.DateTimeField()
    monthly_fee = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    included_units = models.BigIntegerField(default=0, help_text="Units included each month.")
    tiers = models.JSONField(
        default=list,
        blank=True,
        help_text='Graduated prices for units beyond the allowance: [{"up_to": 100000000, "per_million": "1.00"}, '
        '..., {"up_to": null, "per_million": "0.60"}]; up_to counts overage units, cumulatively. Empty: '
        "no overage is sold (hard cap).",
    )
    stripe_fee_price_id = models.CharField(max_length=64, blank=True)
    stripe_usage_price_id = models.CharField(max_length=64, blank=True, help_text="Metered price on the meter.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["plan", "team", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "effective_from"], condition=models.Q(team__isnull=True), name="billing_version_once"
            ),
            models.UniqueConstraint(
                fields=["plan", "team", "effective_from"],
                condition=models.Q(team__isnull=False),
                name="billing_team_version_once",
            ),
        ]

    def __str__(self) -> str:
        who = f" for {self.team}" if self.team_id else ""
        return f"{self.plan} from {self.effective_from:%Y-%m-%d}{who}"

    def clean(self) -> None:
        from billing.rating import TierError, parse_tiers

        try:
            parse_tiers(self.tiers)
        except TierError as error:
            raise ValidationError({"tiers": str(error)}) from error


class PlanSpan(models.Model):
    """From `starts_at` the team is on `plan`, until its next span: the plan history its Stripe subscription events
    tell (a Checkout, a switch in the Customer Portal, a cancellation) or the operator's assignment. A period with a
    switch is rated in segments, each at its own plan's prices, as Stripe bills it. A team with no spans has always
    been on its account's plan."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="plan_spans")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    starts_at = models.DateTimeField()
    subscription_id = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=100, blank=True, help_text="The Stripe event (or action) that told us.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "starts_at"]
        constraints = [models.UniqueConstraint(fields=["team", "starts_at"], name="billing_plan_span_once")]

    def __str__(self) -> str:
        return f"{self.team} on {self.plan} from {self.starts_at:%Y-%m-%d %H:%M:%S}"


class SubscriptionStatus(models.TextChoices):
    NONE = "none", "No subscription"
    INCOMPLETE = "incomplete", "Incomplete"
    TRIALING = "trialing", "Trialing"
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    UNPAID = "unpaid", "Unpaid"
    CANCELED = "canceled", "Canceled"
    INCOMPLETE_EXPIRED = "incomplete_expired", "Incomplete, expired"
    PAUSED = "paused", "Paused"


class BillingAccount(models.Model):
    """A team's plan and its link to Stripe (customer created when first needed)."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="billing")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="accounts")
    stripe_customer_id = models.CharField(max_length=64, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=64, blank=True, db_index=True)
    subscription_status = models.CharField(
        max_length=20, choices=SubscriptionStatus.choices, default=SubscriptionStatus.NONE
    )
    cancel_at_period_end = models.BooleanField(default=False)
    current_period_end = models.DateTimeField(null=True, blank=True)
    subscription_synced_at = models.DateTimeField(null=True, blank=True)
    card_brand = models.CharField(max_length=20, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    card_exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    card_exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    metered_through = models.DateTimeField(
        null=True, blank=True, help_text="Usage hours before this instant are in the meter ledger."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.team} on {self.plan}"

    @property
    def card_summary(self) -> str:
        if not self.card_last4:
            return ""
        expires = f"{self.card_exp_month:02d}/{self.card_exp_year}"
        return f"{self.card_brand.title()} ending {self.card_last4}, expires {expires}"


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    PAID = "paid", "Paid"
    VOID = "void", "Void"
    UNCOLLECTIBLE = "uncollectible", "Uncollectible"


UNPAID = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)  # final, not paid, not voided


def owing(prefix: str = "") -> Q:
    """Invoices that still owe money: unpaid with an amount remaining. `prefix` reaches an invoice from another model
    (`owing("invoices__")` from a team)."""
    return Q(**{f"{prefix}status__in": UNPAID, f"{prefix}amount_remaining__gt": 0})


class Invoice(models.Model):
    """A Stripe invoice, mirrored (amounts in cents, as Stripe has them)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invoices")
    plan = models.ForeignKey(
        Plan, on_delete=models.PROTECT, null=True, blank=True, help_text="The plan whose prices it bills."
    )
    stripe_id = models.CharField(max_length=64, unique=True)
    number = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=InvoiceStatus.choices)
    currency = models.CharField(max_length=3, default="usd")
    subtotal = models.BigIntegerField(default=0)
    tax = models.BigIntegerField(default=0)
    total = models.BigIntegerField(default=0)
    amount_due = models.BigIntegerField(default=0)
    amount_paid = models.BigIntegerField(default=0)
    amount_remaining = models.BigIntegerField(default=0)
    period_start = models.DateTimeField(help_text="The usage period the invoice bills.")
    period_end = models.DateTimeField()
    created = models.DateTimeField()
    due_date = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(
        null=True, blank=True, help_text="When Stripe finalized it: usage reaching the meter later is not on it."
    )
    missed_units = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Units of its period that did not reach Stripe's meter before it finalized (reconciliation; "
        "null until checked).",
    )
    missed_checked_at = models.DateTimeField(null=True, blank=True)
    payment_failed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a payment attempt first failed (cleared once paid or voided)."
    )
    payment_error = models.CharField(max_length=300, blank=True)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    hosted_invoice_url = models.URLField(max_length=500, blank=True)
    invoice_pdf = models.URLField(max_length=500, blank=True)
    synced_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["team", "-created"], name="billing_invoice_team_created")]

    def __str__(self) -> str:
        return self.number or self.stripe_id

    @property
    def overdue(self) -> bool:
        return self.status in UNPAID and self.payment_failed_at is not None

    def dollars(self, field: str) -> Decimal:
        return Decimal(getattr(self, field)) / 100


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    stripe_id = models.CharField(max_length=64)
    description = models.CharField(max_length=500, blank=True)
    amount = models.BigIntegerField(help_text="Cents.")
    quantity = models.BigIntegerField(null=True, blank=True)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    price_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["invoice", "stripe_id"], name="billing_line_once")]

    def __str__(self) -> str:
        return self.description or self.stripe_id


class EventStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    PROCESSED = "processed", "Processed"
    IGNORED = "ignored", "Ignored (type not handled)"
    FAILED = "failed", "Failed"


class StripeEvent(models.Model):
    """A webhook delivery, stored before it is processed (the unique id makes a redelivery a no-op)."""

    stripe_id = models.CharField(max_length=64, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    created = models.DateTimeField(help_text="When Stripe created the event.")
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=EventStatus.choices, default=EventStatus.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["status", "received_at"], name="billing_event_status")]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_id}"

    @property
    def object_id(self) -> str:
        data: dict[str, Any] = self.payload.get("data", {}).get("object", {})
        return str(data.get("id", ""))


class MeterReportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    SKIPPED = "skipped", "Nothing to send"
    FAILED = "failed", "Failed"  # tried; retried later unless Stripe refused it for good (attempts at the maximum)
    EXPIRED = "expired", "Too old for Stripe's meter"  # older than Stripe accepts: for the operator to settle


class MeterReport(models.Model):
    """One hour of a team's billable units, reported to Stripe as one meter event. The identifier doubles as
    the idempotency key, so sending a row again (a re-run, a retry) never counts it twice.

    Rows belong to a plan segment (a period, or the part of it on one plan: `segment_start`). `units` is the
    rounded cumulative total of the segment through this hour minus what its earlier rows carry, so a segment's rows
    add up to exactly its rated units (rating's rule); records that arrive late for an hour already reported are
    carried by the segment's next row. The event is timestamped at the hour's start, or at the segment's start
    for the hour in which the plan changed, so Stripe bills it at the same price as rating does."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="meter_reports")
    hour = models.DateTimeField()
    timestamp = models.DateTimeField(help_text="The meter event's timestamp: the hour, or the segment's start.")
    segment_start = models.DateTimeField(help_text="The start of the period, or of the plan segment within it.")
    cumulative = models.DecimalField(
        max_digits=30, decimal_places=10, help_text="Exact billable units of the segment through this hour."
    )
    units = models.BigIntegerField()
    identifier = models.CharField(max_length=100, unique=True)
    stripe_customer_id = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=MeterReportStatus.choices, default=MeterReportStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["team", "timestamp"]
        constraints = [models.UniqueConstraint(fields=["team", "timestamp"], name="billing_meter_event_once")]
        indexes = [models.Index(fields=["status", "hour"], name="billing_meter_status")]

    def __str__(self) -> str:
        return f"{self.team} {self.hour:%Y-%m-%d %H:00}: {self.units}"


class ReconciliationQuerySet(models.QuerySet["Reconciliation"]):
    def differences(self) -> ReconciliationQuerySet:
        """The rows that do not match: `Reconciliation.matches` in SQL (an error, no figure from Stripe, or ours,
        reported and Stripe's not all equal)."""
        return self.exclude(error="", stripe=F("ours"), reported=F("ours"))


class Reconciliation(models.Model):
    """One team-day: our billable units against Stripe's meter event summary for the same day."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="reconciliations")
    day = models.DateField()
    ours = models.BigIntegerField()
    reported = models.BigIntegerField(help_text="What the meter ledger sent for the day.")
    stripe = models.BigIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    checked_at = models.DateTimeField(auto_now=True)

    objects = ReconciliationQuerySet.as_manager()

    class Meta:
        ordering = ["-day", "team"]
        constraints = [models.UniqueConstraint(fields=["team", "day"], name="billing_reconciliation_once")]

    def __str__(self) -> str:
        return f"{self.team} {self.day}: ours {self.ours}, Stripe {self.stripe}"

    @property
    def matches(self) -> bool:
        """Stripe's meter, our ledger and our usage agree (ReconciliationQuerySet.differences is the same rule in SQL:
        change both together)."""
        return not self.error and self.stripe == self.ours == self.reported
