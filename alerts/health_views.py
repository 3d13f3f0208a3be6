"""The Health alerts page: each rule with its state and its latest figure, the forms, and the recent changes."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render

from accounts.models import Role
from accounts.permissions import allows, team_view
from accounts.requests import TeamRequest
from alerts import health, selectors
from alerts.health import AlertRuleError
from alerts.health_forms import AlertRuleForm
from alerts.models import AlertChange, AlertRule
from alerts.selectors import RuleChoices
from project.http import get_or_404

ROLE_LABELS = dict(Role.choices)


@dataclass(frozen=True)
class Row:
    rule: AlertRule
    form: AlertRuleForm

    @property
    def scope(self) -> str:
        return health.scope_label(self.rule)

    @property
    def value(self) -> str:
        return health.figure_text(self.rule.metric, self.rule.last_value)

    @property
    def threshold(self) -> str:
        return health.figure_text(self.rule.metric, self.rule.threshold)

    @property
    def recipients(self) -> list[str]:
        roles = [ROLE_LABELS[role].lower() for role in self.rule.notify_roles]
        return roles + [user.email for user in self.rule.notify_members.all()]


@dataclass(frozen=True)
class ChangeRow:
    change: AlertChange

    @property
    def value(self) -> str:
        return health.figure_text(self.change.rule.metric, self.change.value)

    @property
    def threshold(self) -> str:
        return health.figure_text(self.change.rule.metric, self.change.threshold)


Edited = tuple[int, AlertRuleForm]  # a rule's pk and its edit form, bound to what was sent


def _page(
    request: TeamRequest,
    choices: RuleChoices,
    form: AlertRuleForm,
    *,
    status: int = 200,
    edited: Edited | None = None,
) -> HttpResponse:
    team = request.team
    rows = [
        Row(rule, edited[1] if edited and edited[0] == rule.pk else AlertRuleForm.for_rule(rule, choices=choices))
        for rule in selectors.alert_rule_list(team=team)
    ]
    context = {
        "rows": rows,
        "form": form,
        "changes": [ChangeRow(change) for change in selectors.alert_change_list(team=team)],
        "can_manage": allows(request.membership, "alerts.manage"),
    }
    return render(request, "alerts/rules.html", context, status=status)


@team_view(GET="alerts.view", POST="alerts.manage")
def alert_rules(request: TeamRequest) -> HttpResponse:
    choices = selectors.alert_rule_choices(team=request.team)
    form = AlertRuleForm(request.POST or None, choices=choices)
    if request.method == "POST":
        if form.is_valid():
            try:
                rule = health.alert_rule_create(team=request.team, actor=request.user, **form.rule_fields())
            except AlertRuleError as error:
                form.add_rule_error(error)
            else:
                messages.success(request, f"Alert rule {rule.name} set.")
                return redirect("alert_rules", team_slug=request.team.slug)
        return _page(request, choices, form, status=400)
    return _page(request, choices, form)


@team_view(POST="alerts.manage")
def alert_rule_update(request: TeamRequest, alert_rule_id: int) -> HttpResponse:
    rule = get_or_404(lambda: selectors.alert_rule_get(team=request.team, alert_rule_id=alert_rule_id), "No such rule")
    choices = selectors.alert_rule_choices(team=request.team)
    form = AlertRuleForm(request.POST, prefix=f"r{rule.pk}", choices=choices)
    if form.is_valid():
        try:
            health.alert_rule_update(rule=rule, actor=request.user, **form.rule_fields())
        except AlertRuleError as error:
            form.add_rule_error(error)
        else:
            messages.success(request, f"Alert rule {rule.name} saved.")
            return redirect("alert_rules", team_slug=request.team.slug)
    return _page(request, choices, AlertRuleForm(choices=choices), status=400, edited=(rule.pk, form))


@team_view(POST="alerts.manage")
def alert_rule_delete(request: TeamRequest, alert_rule_id: int) -> HttpResponse:
    rule = get_or_404(lambda: selectors.alert_rule_get(team=request.team, alert_rule_id=alert_rule_id), "No such rule")
    health.alert_rule_delete(rule=rule, actor=request.user)
    messages.success(request, f"Deleted alert rule {rule.name}.")
    return redirect("alert_rules", team_slug=request.team.slug)
