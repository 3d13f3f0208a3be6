"""Budgets: how much a team, an endpoint or a key may use in a period, and the thresholds that alert on the way.

A threshold fires once per budget, period and threshold: `BudgetFiring` has a unique row for each, written with
INSERT … ON CONFLICT DO NOTHING, so concurrent evaluations, redelivered tasks and re-aggregated late records can't fire
it twice."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Team, User
from endpoints.models import ApiKey, Endpoint

DEFAULT_THRESHOLDS = (50, 80, 100)
MAX_THRESHOLDS = 10


def default_thresholds() -> list[int]:
    return list(DEFAULT_THRESHOLDS)


class Budget(models.Model):
    class Scope(models.TextChoices):
        TEAM = "team", "Team"
        ENDPOINT = "endpoint", "Endpoint"
        KEY = "key", "Key"

    class Measure(models.TextChoices):
        UNITS = "units", "Billable units"

    class Period(models.TextChoices):
        MONTH = "month", "Billing month"
        DAY = "day", "Day (UTC)"

    class Action(models.TextChoices):
        ALERT = "alert", "Alert only"
        STOP = "stop", "Stop traffic at 100 %"

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
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.amount} {self.measure} per {self.period})"


class BudgetFiring(models.Model):
    """One threshold of one budget crossed in one period: the row that makes it fire exactly once."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="firings")
    period_start = models.DateTimeField()
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the amount.")
    used = models.DecimalField(max_digits=24, decimal_places=6, help_text="What was used when it fired.")
    amount = models.DecimalField(max_digits=20, decimal_places=2, help_text="The budget's amount when it fired.")
    fired_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-fired_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "period_start", "threshold"], name="alerts_firing_once"),
        ]

    def __str__(self) -> str:
        return f"{self.budget_id} {self.threshold}% of {self.period_start:%Y-%m-%d}"
