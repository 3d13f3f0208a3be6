"""Budgets: how much a team, an endpoint or a key may use in a period, and the thresholds that alert on the way.

A threshold fires once per budget, period and threshold: `BudgetFiring` has a unique row for each, written with
INSERT … ON CONFLICT DO NOTHING, so concurrent evaluations, redelivered tasks and re-aggregated late records can't fire
it twice."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Role, Team, User
from endpoints.models import ApiKey, Endpoint

DEFAULT_THRESHOLDS = (50, 80, 100)
MAX_THRESHOLDS = 10
DEFAULT_RECIPIENT_ROLES = (Role.OWNER, Role.ADMIN, Role.FINANCE)
STOP_SOURCE_PREFIX = "budget:"


def default_thresholds() -> list[int]:
    return list(DEFAULT_THRESHOLDS)


def default_recipient_roles() -> list[str]:
    return [str(role) for role in DEFAULT_RECIPIENT_ROLES]


class Notified(models.Model):
    """Who is emailed: the members holding one of `notify_roles`, and the members chosen by name."""

    notify_roles = ArrayField(models.CharField(max_length=16, choices=Role.choices), default=default_recipient_roles,
                              blank=True)  # fmt: skip
    notify_members = models.ManyToManyField(User, blank=True, related_name="+")

    class Meta:
        abstract = True


class Budget(Notified):
    class Scope(models.TextChoices):
        TEAM = "team", "Team"
        ENDPOINT = "endpoint", "Endpoint"
        KEY = "key", "Key"

    class Measure(models.TextChoices):
        UNITS = "units", "Billable units"
        MONEY = "money", "Usage charges"

    class Period(models.TextChoices):
        MONTH = "month", "Billing month"
        DAY = "day", "Day (UTC)"

    class Action(models.TextChoices):
        ALERT = "alert", "Alert only"
        STOP = "stop", "Stop traffic at 100 %"

    class Origin(models.TextChoices):
        """Where the budget comes from: set on the Budgets page (or the API), or a key's daily cap or an endpoint's
        monthly cap, which the same machinery enforces from the ledger (the cap's page edits it)."""

        BUDGET = "budget", "Budget"
        KEY_CAP = "key_cap", "Key daily cap"
        ENDPOINT_CAP = "endpoint_cap", "Endpoint monthly cap"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="budgets")
    name = models.CharField(max_length=80)
    scope = models.CharField(max_length=8, choices=Scope.choices)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets")
    key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets")
    measure = models.CharField(max_length=8, choices=Measure.choices, default=Measure.UNITS)
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    amount = models.DecimalField(max_digits=20, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))])
    thresholds = ArrayField(models.PositiveSmallIntegerField(), default=default_thresholds)
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.ALERT)
    forecast = models.BooleanField(
        default=False, help_text="Also alert once a period when this period's pace would use the amount before it ends."
    )
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.BUDGET)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "name", "pk"]
        constraints = [
            models.CheckConstraint(
                name="alerts_budget_scope_target",
                condition=(
                    Q(scope="team", endpoint__isnull=True, key__isnull=True)
                    | Q(scope="endpoint", endpoint__isnull=False, key__isnull=True)
                    | Q(scope="key", key__isnull=False)
                ),
            ),
            models.CheckConstraint(name="alerts_budget_amount_positive", condition=Q(amount__gt=0)),
            models.UniqueConstraint(fields=["key"], condition=Q(origin="key_cap"), name="alerts_budget_one_key_cap"),
            models.UniqueConstraint(
                fields=["endpoint"], condition=Q(origin="endpoint_cap"), name="alerts_budget_one_endpoint_cap"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.amount} {self.measure} per {self.period})"

    @property
    def stop_source(self) -> str:
        """The `source` of the traffic stop this budget sets (endpoints.TrafficStop)."""
        return f"{STOP_SOURCE_PREFIX}{self.pk}"

    @staticmethod
    def ids_of_stop_sources(sources: Iterable[str]) -> set[int]:
        """The budgets among traffic stops' sources (other apps' stops have other prefixes)."""
        return {int(s.removeprefix(STOP_SOURCE_PREFIX)) for s in sources if s.startswith(STOP_SOURCE_PREFIX)}


class BudgetFiring(models.Model):
    """One threshold of one budget crossed in one period (or, for a forecast, foreseen): the row that makes it fire
    exactly once."""

    class Kind(models.TextChoices):
        THRESHOLD = "threshold", "Threshold crossed"
        FORECAST = "forecast", "Forecast to run out"

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="firings")
    period_start = models.DateTimeField()
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.THRESHOLD)
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the amount.")
    forecast_at = models.DateTimeField(null=True, blank=True, help_text="When the pace would use the amount up.")
    used = models.DecimalField(max_digits=24, decimal_places=6, help_text="What was used when it fired.")
    amount = models.DecimalField(max_digits=20, decimal_places=2, help_text="The budget's amount when it fired.")
    fired_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-fired_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_start", "kind", "threshold"], name="alerts_firing_once"),
        ]

    def __str__(self) -> str:
        return f"{self.budget_id} {self.threshold}% of {self.period_start:%Y-%m-%d}"


class AlertRule(Notified):
    """A health objective on an endpoint's or a service's traffic (or the whole team's): error rate without user
    errors, or p95 latency, over the last `window_minutes`, from the minute rollups. It goes ok → firing → ok, and
    notifies once on each change (`AlertChange`), never again while it stays firing."""

    class Metric(models.TextChoices):
        ERROR_RATE = "error_rate", "Error rate (%, user errors excluded)"
        P95_LATENCY = "p95_latency", "p95 latency (ms)"

    class State(models.TextChoices):
        OK = "ok", "OK"
        FIRING = "firing", "Firing"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=80)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_rules")
    service = models.CharField(max_length=64, blank=True, help_text="A catalog service id; empty: every service.")
    metric = models.CharField(max_length=16, choices=Metric.choices)
    threshold = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal(0))])
    window_minutes = models.PositiveSmallIntegerField(default=5)
    min_relays = models.PositiveIntegerField(
        default=20, help_text="Fewer relays than this in the window never fire (a handful of errors is not an outage)."
    )
    enabled = models.BooleanField(default=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OK)
    state_since = models.DateTimeField(default=timezone.now)
    last_value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    last_relays = models.BigIntegerField(default=0)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "name", "pk"]
        constraints = [
            models.CheckConstraint(
                name="alerts_rule_window", condition=Q(window_minutes__gte=1, window_minutes__lte=1440)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.metric} > {self.threshold} over {self.window_minutes} min)"


class AlertChange(models.Model):
    """A rule changing state: the history on the page, and what its notifications and webhook events said."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="changes")
    state = models.CharField(max_length=8, choices=AlertRule.State.choices)
    value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    relays = models.BigIntegerField(default=0)
    threshold = models.DecimalField(max_digits=12, decimal_places=2)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.rule_id} → {self.state} at {self.at:%Y-%m-%d %H:%M}"
