"""The Health alerts page's form. The service validates (alerts.health.AlertRuleError names each bad field); the form
only parses what the browser sends and puts the service's messages next to their fields."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from accounts.models import Role
from alerts.health import DEFAULT_RULE_ROLES, AlertRuleError
from alerts.models import AlertRule
from alerts.selectors import RuleChoices

# Short enough for a narrow select; the page says that user errors are left out.
METRIC_CHOICES = [(AlertRule.Metric.ERROR_RATE, "Error rate (%)"), (AlertRule.Metric.P95_LATENCY, "p95 latency (ms)")]


class AlertRuleForm(forms.Form):
    name = forms.CharField(max_length=80)
    metric = forms.ChoiceField(choices=METRIC_CHOICES, label="When")
    threshold = forms.DecimalField(
        label="Is above", max_digits=12, decimal_places=2, help_text="Percent for an error rate, ms for a latency."
    )
    window_minutes = forms.IntegerField(label="Over the last (minutes)", initial=5, help_text="1 to 1440.")
    endpoint = forms.ChoiceField(label="Endpoint", required=False)
    service = forms.ChoiceField(label="Service", required=False)
    min_relays = forms.IntegerField(
        label="At least (relays)",
        initial=20,
        help_text="Fewer relays in the window never fire (for an error rate, user errors don't count).",
    )
    enabled = forms.BooleanField(required=False, initial=True, label="Enabled")
    notify_roles = forms.MultipleChoiceField(
        choices=Role.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=[str(role) for role in DEFAULT_RULE_ROLES],
        label="Email members with the role",
    )
    notify_members = forms.MultipleChoiceField(
        required=False, label="And these members", help_text="Hold Ctrl (⌘ on a Mac) to choose several."
    )

    def __init__(self, *args: Any, choices: RuleChoices, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.endpoints = {str(endpoint.pk): endpoint for endpoint in choices.endpoints}
        field = cast(forms.ChoiceField, self.fields["endpoint"])
        field.choices = [("", "Every endpoint")] + [(pk, e.name) for pk, e in self.endpoints.items()]
        field = cast(forms.ChoiceField, self.fields["service"])
        field.choices = [("", "Every service"), *choices.services]
        field = cast(forms.ChoiceField, self.fields["notify_members"])
        field.choices = [(str(pk), label) for pk, label in choices.members]

    @classmethod
    def for_rule(cls, rule: AlertRule, *, choices: RuleChoices) -> AlertRuleForm:
        """The edit form of a rule, holding its settings."""
        initial = {"name": rule.name, "metric": rule.metric, "threshold": rule.threshold,
                   "window_minutes": rule.window_minutes, "endpoint": rule.endpoint_id or "", "service": rule.service,
                   "min_relays": rule.min_relays, "enabled": rule.enabled, "notify_roles": list(rule.notify_roles),
                   "notify_members": [str(user.pk) for user in rule.notify_members.all()]}  # fmt: skip
        return cls(initial=initial, prefix=f"r{rule.pk}", choices=choices)

    def rule_fields(self) -> dict[str, Any]:
        """The cleaned fields as alerts.health's services take them."""
        data = self.cleaned_data
        return {"name": data["name"], "metric": data["metric"], "threshold": data["threshold"],
                "window_minutes": data["window_minutes"], "endpoint": self.endpoints.get(data["endpoint"]),
                "service": data["service"], "min_relays": data["min_relays"], "enabled": data["enabled"],
                "notify_roles": data["notify_roles"], "notify_members": data["notify_members"]}  # fmt: skip

    def add_rule_error(self, error: AlertRuleError) -> None:
        for field, message in error.errors.items():
            self.add_error(field if field in self.fields else None, message)
