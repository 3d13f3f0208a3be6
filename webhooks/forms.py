from __future__ import annotations

from django import forms

from project.forms import ServiceErrorMixin
from webhooks.models import EVENT_TYPES, WebhookFormat


class WebhookEndpointForm(ServiceErrorMixin, forms.Form):
    """The URL, what to send and how. The service does the real checks (https, public addresses); errors it raises
    come back next to these fields."""

    url = forms.CharField(
        max_length=2000,
        label="Endpoint URL",
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/hooks/gatehouse", "autocomplete": "off"}),
    )
    description = forms.CharField(max_length=200, required=False, label="Description")
    event_types = forms.MultipleChoiceField(
        choices=list(EVENT_TYPES.items()),  # the value is the type, the label what it means
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="Events",
        help_text="None checked: every event, including types added later.",
    )
    format = forms.ChoiceField(
        choices=WebhookFormat.choices, initial=WebhookFormat.GATEHOUSE, widget=forms.RadioSelect, label="Format"
    )
