"""Reads for the Budgets page."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Team
from alerts.models import Budget, BudgetFiring
from endpoints.models import TrafficStop


def budget_list(*, team: Team) -> QuerySet[Budget]:
    return Budget.objects.filter(team=team).select_related("team", "endpoint", "key").order_by("name", "pk")


def budget_get(*, team: Team, budget_id: int) -> Budget:
    """The team's budget (Budget.DoesNotExist for another team's: a 404)."""
    return Budget.objects.select_related("team", "endpoint", "key").get(team=team, pk=budget_id)


def firing_list(*, team: Team, limit: int = 20) -> QuerySet[BudgetFiring]:
    return BudgetFiring.objects.filter(budget__team=team).select_related("budget").order_by("-fired_at")[:limit]


def stopped_sources(*, team: Team) -> set[str]:
    """The sources of the team's traffic stops in force (budget:<id> for a budget's)."""
    return set(TrafficStop.objects.filter(team=team).values_list("source", flat=True))
