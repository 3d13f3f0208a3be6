"""The Budgets page: each budget with what it has used this period, the thresholds that fired, and the forms."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render

from accounts.permissions import allows, team_view
from accounts.requests import TeamRequest
from alerts import selectors, services
from alerts.forms import BudgetCreateForm, BudgetUpdateForm
from alerts.models import Budget
from alerts.services import BudgetError, Standing
from endpoints import selectors as endpoint_selectors
from project.http import get_or_404


@dataclass(frozen=True)
class Meter:
    standing: Standing
    stopped: bool

    @property
    def budget(self) -> Budget:
        return self.standing.budget

    @property
    def share(self) -> float:
        return min(float(self.standing.percent), 100.0)

    @property
    def used(self) -> str:
        return services.figure(self.budget, self.standing.used, unit=False)

    @property
    def amount(self) -> str:
        return services.figure(self.budget, self.budget.amount)


@dataclass(frozen=True)
class Row(Meter):
    form: BudgetUpdateForm


Edited = tuple[int, BudgetUpdateForm]  # a budget's pk and its edit form, bound to what was sent


def _page(
    request: TeamRequest,
    form: BudgetCreateForm | None = None,
    *,
    status: int = 200,
    edited: Edited | None = None,
    members: list[tuple[int, str]] | None = None,
) -> HttpResponse:
    """The page, with `form` (a new, empty create form by default); `members` as the forms got them, if read."""
    team = request.team
    members = members if members is not None else selectors.member_choices(team=team)
    form = form or BudgetCreateForm(team=team, members=members)
    stopped = selectors.stopped_budget_ids(team=team)
    rows = []
    for standing in services.standings(selectors.budget_list_with_recipients(team=team)):
        budget = standing.budget
        if edited and edited[0] == budget.pk:
            edit_form = edited[1]
        else:
            edit_form = BudgetUpdateForm(
                initial={
                    "name": budget.name,
                    "amount": budget.amount,
                    "action": budget.action,
                    "thresholds": ", ".join(str(t) for t in budget.thresholds),
                    "forecast": budget.forecast,
                    "notify_roles": budget.notify_roles,
                    "notify_members": [str(user.pk) for user in budget.notify_members.all()],
                },
                prefix=f"b{budget.pk}",
                members=members,
            )
        rows.append(Row(standing, budget.pk in stopped, edit_form))
    context = {
        "rows": rows,
        "form": form,
        "firings": selectors.firing_list(team=team),
        "can_manage": allows(request.membership, "budgets.manage"),
    }
    return render(request, "alerts/budgets.html", context, status=status)


@team_view(GET="budgets.view", POST="budgets.manage")
def budgets(request: TeamRequest) -> HttpResponse:
    members = selectors.member_choices(team=request.team)
    form = BudgetCreateForm(request.POST or None, team=request.team, members=members)
    if request.method == "POST":
        if form.is_valid():
            try:
                budget = services.budget_create(team=request.team, actor=request.user, **form.budget_fields())
            except BudgetError as error:
                form.add_budget_error(error)
            else:
                messages.success(request, f"Budget {budget.name} set.")
                return redirect("budgets", team_slug=request.team.slug)
        return _page(request, form, status=400, members=members)
    return _page(request, form, members=members)


METER_CARD_SIZE = 4  # the overview's card: the budgets nearest their amount


@team_view(GET="budgets.view")
def budget_meters(request: TeamRequest) -> HttpResponse:
    """Used vs amount, as meters, for the endpoint page (?endpoint=ep_…: its caps and budgets, its keys'), the key
    page (?key=key_…) or the overview's card (neither: the budgets nearest their amount). Loaded by htmx."""
    team = request.team
    endpoint_id, key_id = request.GET.get("endpoint"), request.GET.get("key")
    endpoint = None
    if endpoint_id:
        endpoint = get_or_404(
            lambda: endpoint_selectors.endpoint_get(team=team, public_id=endpoint_id), "No such endpoint"
        )
    stopped = selectors.stopped_budget_ids(team=team)
    standings = services.standings(selectors.budget_meter_list(team=team, endpoint=endpoint, key_id=key_id or None))
    card = not (endpoint_id or key_id)
    if card:
        standings = sorted(standings, key=lambda s: -s.percent)[:METER_CARD_SIZE]
    meters = [Meter(standing, standing.budget.pk in stopped) for standing in standings]
    context = {"meters": meters, "card": card, "scope": "key" if key_id else "endpoint" if endpoint else "team"}
    return render(request, "alerts/_meters.html", context)


@team_view(POST="budgets.manage")
def budget_update(request: TeamRequest, budget_id: int) -> HttpResponse:
    budget = get_or_404(lambda: selectors.budget_get(team=request.team, budget_id=budget_id), "No such budget")
    if budget.origin != Budget.Origin.BUDGET:
        return _cap_refused(request, budget)
    members = selectors.member_choices(team=request.team)
    form = BudgetUpdateForm(request.POST, prefix=f"b{budget.pk}", members=members)
    if form.is_valid():
        try:
            services.budget_update(budget=budget, actor=request.user, **form.budget_fields())
        except BudgetError as error:
            form.add_budget_error(error)
        else:
            messages.success(request, f"Budget {budget.name} saved.")
            return redirect("budgets", team_slug=request.team.slug)
    return _page(request, status=400, edited=(budget.pk, form), members=members)


@team_view(POST="budgets.manage")
def budget_delete(request: TeamRequest, budget_id: int) -> HttpResponse:
    budget = get_or_404(lambda: selectors.budget_get(team=request.team, budget_id=budget_id), "No such budget")
    if budget.origin != Budget.Origin.BUDGET:
        return _cap_refused(request, budget)
    services.budget_delete(budget=budget, actor=request.user)
    messages.success(request, f"Deleted budget {budget.name}; traffic it stopped resumes.")
    return redirect("budgets", team_slug=request.team.slug)


def _cap_refused(request: TeamRequest, budget: Budget) -> HttpResponse:
    """A cap's budget is changed with its cap: say where, and change nothing."""
    where = "key's" if budget.origin == Budget.Origin.KEY_CAP else "endpoint's"
    messages.error(request, f"{budget.name} is the {where} cap: change or remove it on the {where} page.")
    return _page(request, status=409)
