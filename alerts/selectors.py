"""Reads for the Budgets page and the budgets API."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import QuerySet

from accounts.models import Membership, Team, User
from alerts.models import AlertChange, AlertRule, Budget, BudgetFiring
from endpoints.models import Endpoint, TrafficStop
from endpoints.selectors import service_list


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


# --- the budgets API -------------------------------------------------------------------------------


def budget_list_with_recipients(*, team: Team) -> QuerySet[Budget]:
    """The team's budgets with their endpoints, keys and chosen recipients (a fixed number of queries)."""
    return budget_list(team=team).prefetch_related("notify_members")


def budget_get_with_recipients(*, team: Team, budget_id: int) -> Budget:
    """The team's budget with its chosen recipients (Budget.DoesNotExist for another team's: a 404)."""
    return budget_list_with_recipients(team=team).get(pk=budget_id)


def budget_firing_list(*, team: Team, budget: Budget, limit: int = 20) -> QuerySet[BudgetFiring]:
    """The budget's latest firings, newest first."""
    return BudgetFiring.objects.filter(budget__team=team, budget=budget).order_by("-fired_at", "-pk")[:limit]


def stopped_budget_ids(*, team: Team) -> set[int]:
    """The team's budgets whose traffic stop is in force (a budget's stop has the source budget:<id>)."""
    return Budget.ids_of_stop_sources(stopped_sources(team=team))


def member_users(*, team: Team, membership_ids: Iterable[int]) -> dict[int, User]:
    """The users of the team's memberships with these ids (the ids the members API shows), by membership id."""
    members = Membership.objects.filter(team=team, pk__in=list(membership_ids)).select_related("user")
    return {member.pk: member.user for member in members}


# --- health alert rules ---------------------------------------------------------------------------


def alert_rule_list(*, team: Team) -> QuerySet[AlertRule]:
    """The team's rules by name, with their endpoints and chosen recipients (two queries)."""
    rules = AlertRule.objects.filter(team=team).select_related("team", "endpoint").prefetch_related("notify_members")
    return rules.order_by("name", "pk")


def alert_rule_get(*, team: Team, alert_rule_id: int) -> AlertRule:
    """The team's rule (AlertRule.DoesNotExist for another team's: a 404)."""
    rules = AlertRule.objects.select_related("team", "endpoint").prefetch_related("notify_members")
    return rules.get(team=team, pk=alert_rule_id)


def alert_change_list(*, team: Team, limit: int = 20) -> QuerySet[AlertChange]:
    """The team's latest rule state changes, newest first."""
    changes = AlertChange.objects.filter(rule__team=team).select_related("rule", "rule__team", "rule__endpoint")
    return changes.order_by("-at", "-pk")[:limit]


@dataclass(frozen=True)
class RuleChoices:
    """What a rule's form offers, read once for the page's every form."""

    endpoints: list[Endpoint]
    services: list[tuple[str, str]]  # (id, name)
    members: list[tuple[int, str]]  # (user pk, label)


def alert_rule_choices(*, team: Team) -> RuleChoices:
    """The team's live endpoints, the catalog's services and the team's members (three queries)."""
    endpoints = list(Endpoint.objects.filter(team=team).live().order_by("name", "pk"))
    services = [(service.id, service.name) for service in service_list()]
    return RuleChoices(endpoints, services, member_choices(team=team))


def member_choices(*, team: Team) -> list[tuple[int, str]]:
    """The team's members as recipients a form offers: (user pk, label), by email (one query for every form)."""
    memberships = Membership.objects.filter(team=team).select_related("user").order_by("user__email")
    return [(m.user.pk, f"{m.user.name} <{m.user.email}>" if m.user.name else m.user.email) for m in memberships]


# --- meters on the endpoint, key and overview pages -------------------------------------------------


def budget_meter_list(*, team: Team, endpoint: Endpoint | None = None, key_id: str | None = None) -> QuerySet[Budget]:
    """The budgets a page shows as meters: an endpoint's (its own and its keys'), a key's, or the whole team's."""
    budgets = budget_list(team=team)
    if key_id is not None:
        return budgets.filter(key__key_id=key_id)
    if endpoint is not None:
        return budgets.filter(endpoint=endpoint)
    return budgets
