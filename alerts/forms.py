"""The Budgets page's forms. The service validates (alerts.services.BudgetError names each bad field); these only
parse what the browser sends and put the service's messages next to their fields."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from accounts.models import Role, Team
from alerts.models import DEFAULT_THRESHOLDS, Budget, default_recipient_roles
from alerts.services import BudgetError
from endpoints.models import ApiKey, Endpoint


def _thresholds(text: str) -> list[str]:
    return [part.strip().rstrip("%") for part in text.replace(";", ",").split(",") if part.strip()]


class BudgetFieldsMixin(forms.Form):
    name = forms.CharField(max_length=80)
    amount = forms.DecimalField(
        label="Amount", min_value=0, max_digits=20, decimal_places=2,
        help_text="Billable units, or US dollars of usage charges.",
    )  # fmt: skip
    thresholds = forms.CharField(
        initial=", ".join(str(t) for t in DEFAULT_THRESHOLDS),
        help_text="Percentages of the amount that alert, e.g. 50, 80, 100. Each fires once per period.",
    )
    action = forms.ChoiceField(choices=Budget.Action.choices, label="At 100 %")
    forecast = forms.BooleanField(
        required=False, label="Forecast alert",
        help_text="Alert once a period when this period's pace would use the amount up before it ends.",
    )  # fmt: skip
    notify_roles = forms.MultipleChoiceField(
        choices=Role.choices, required=False, widget=forms.CheckboxSelectMultiple, label="Email these roles",
        initial=default_recipient_roles,
    )  # fmt: skip
    notify_members = forms.MultipleChoiceField(
        required=False, label="…and these members", help_text="Ctrl/⌘-click for several."
    )

    def __init__(self, *args: Any, members: list[tuple[int, str]], **kwargs: Any):
        """`members`: alerts.selectors.member_choices, read once for the page's every form."""
        super().__init__(*args, **kwargs)
        field = cast(forms.MultipleChoiceField, self.fields["notify_members"])
        field.choices = [(str(pk), label) for pk, label in members]

    def add_budget_error(self, error: BudgetError) -> None:
        for field, message in error.errors.items():
            self.add_error(field if field in self.fields else None, message)

    def budget_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"name": data["name"], "amount": data["amount"], "thresholds": _thresholds(data["thresholds"]),
                "action": data["action"], "forecast": data["forecast"], "notify_roles": data["notify_roles"],
                "notify_members": data["notify_members"]}  # fmt: skip


class KeyChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} ({obj.key_id}) · {obj.endpoint.name}"


class BudgetCreateForm(BudgetFieldsMixin):
    scope = forms.ChoiceField(choices=Budget.Scope.choices)
    endpoint = forms.ModelChoiceField(queryset=Endpoint.objects.none(), required=False, empty_label="—")
    key = KeyChoiceField(queryset=ApiKey.objects.none(), required=False, empty_label="—")
    measure = forms.ChoiceField(
        choices=Budget.Measure.choices, required=False, initial=Budget.Measure.UNITS,
        help_text="Usage charges: rated at your plan's prices.",
    )  # fmt: skip
    period = forms.ChoiceField(choices=Budget.Period.choices, help_text="Daily budgets are for keys.")

    field_order = ["name", "scope", "endpoint", "key", "measure", "period", "amount", "thresholds", "action"]

    def __init__(self, *args: Any, team: Team, members: list[tuple[int, str]], **kwargs: Any):
        super().__init__(*args, members=members, **kwargs)
        endpoint_field = cast(forms.ModelChoiceField, self.fields["endpoint"])
        key_field = cast(KeyChoiceField, self.fields["key"])
        endpoint_field.queryset = Endpoint.objects.filter(team=team).live().order_by("name")
        key_field.queryset = ApiKey.objects.filter(team=team).unrevoked().select_related("endpoint").order_by("name")

    def budget_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return super().budget_fields() | {
            "scope": data["scope"], "endpoint": data["endpoint"], "key": data["key"], "period": data["period"],
            "measure": data["measure"],
        }  # fmt: skip


class BudgetUpdateForm(BudgetFieldsMixin):
    pass
