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
from project.http import get_or_404


@dataclass(frozen=True)
class Row:
    standing: Standing
    stopped: bool
    form: BudgetUpdateForm

    @property
    def budget(self) -> Budget:
        return self.standing.budget

    @property
    def share(self) -> float:
        return min(float(self.standing.percent), 100.0)


Edited = tuple[int, BudgetUpdateForm]  # a budget's pk and its edit form, bound to what was sent


def _page(
    request: TeamRequest, form: BudgetCreateForm, *, status: int = 200, edited: Edited | None = None
) -> HttpResponse:
    team = request.team
    stopped = selectors.stopped_sources(team=team)
    rows = []
    for standing in services.standings(selectors.budget_list(team=team)):
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
                },
                prefix=f"b{budget.pk}",
            )
        rows.append(Row(standing, f"budget:{budget.pk}" in stopped, edit_form))
    context = {
        "rows": rows,
        "form": form,
        "firings": selectors.firing_list(team=team),
        "can_manage": allows(request.membership, "budgets.manage"),
    }
    return render(request, "alerts/budgets.html", context, status=status)


@team_view(GET="budgets.view", POST="budgets.manage")
def budgets(request: TeamRequest) -> HttpResponse:
    form = BudgetCreateForm(request.POST or None, team=request.team)
    if request.method == "POST":
        if form.is_valid():
            try:
                budget = services.budget_create(team=request.team, actor=request.user, **form.budget_fields())
            except BudgetError as error:
                form.add_budget_error(error)
            else:
                messages.success(request, f"Budget {budget.name} set.")
                return redirect("budgets", team_slug=request.team.slug)
        return _page(request, form, status=400)
    return _page(request, form)


@team_view(POST="budgets.manage")
def budget_update(request: TeamRequest, budget_id: int) -> HttpResponse:
    budget = get_or_404(lambda: selectors.budget_get(team=request.team, budget_id=budget_id), "No such budget")
    form = BudgetUpdateForm(request.POST, prefix=f"b{budget.pk}")
    if form.is_valid():
        try:
            services.budget_update(budget=budget, actor=request.user, **form.budget_fields())
        except BudgetError as error:
            form.add_budget_error(error)
        else:
            messages.success(request, f"Budget {budget.name} saved.")
            return redirect("budgets", team_slug=request.team.slug)
    return _page(request, BudgetCreateForm(team=request.team), status=400, edited=(budget.pk, form))


@team_view(POST="budgets.manage")
def budget_delete(request: TeamRequest, budget_id: int) -> HttpResponse:
    budget = get_or_404(lambda: selectors.budget_get(team=request.team, budget_id=budget_id), "No such budget")
    services.budget_delete(budget=budget, actor=request.user)
    messages.success(request, f"Deleted budget {budget.name}; traffic it stopped resumes.")
    return redirect("budgets", team_slug=request.team.slug)
