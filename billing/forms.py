from __future__ import annotations

from typing import Any

from django import forms

from billing.models import InvoiceStatus
from project.forms import BoundedDateField


class InvoiceFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, label="Status", choices=[("", "All statuses"), *InvoiceStatus.choices])
    since = BoundedDateField(required=False, label="Period from", widget=forms.DateInput(attrs={"type": "date"}))
    until = BoundedDateField(required=False, label="Period to", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "The end date is before the start date.")
        return data
