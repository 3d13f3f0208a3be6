from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.utils import timezone

from endpoints.models import (
    ALLOWLIST_FIELDS,
    MAX_UNIT_CAP,
    SECURITY_FIELDS,
    Endpoint,
    Environment,
    Service,
    ServiceKind,
)
from endpoints.selectors import known_methods, plan_rate_limit, service_list
from endpoints.services import ROTATION_OVERLAPS, AllowlistError
from project.errors import ServiceError
from project.forms import ServiceErrorMixin


class ServiceChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Service) -> str:
        return f"{obj.name}{' (beta)' if obj.status == 'beta' else ''}"


def _services_field() -> ServiceChoiceField:
    return ServiceChoiceField(
        queryset=service_list(),
        widget=forms.CheckboxSelectMultiple,
        label="Services",
        error_messages={"required": "Enable at least one service."},
    )


class ServicesMixin(forms.Form):
    def selected_service_ids(self) -> set[str]:
        """Ids of the checked services, whether the value came from POST data (ids) or initial (objects)."""
        value = self["services"].value() or []
        return {getattr(item, "pk", item) for item in value}


class EndpointCreateForm(ServicesMixin, ServiceErrorMixin, forms.Form):
    name = forms.CharField(max_length=80, widget=forms.TextInput(attrs={"placeholder": "My dapp"}))
    description = forms.CharField(max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    environment = forms.ChoiceField(
        choices=Environment.choices, initial=Environment.PRODUCTION, widget=forms.RadioSelect
    )
    services = _services_field()


class EndpointSettingsForm(ServicesMixin, ServiceErrorMixin, forms.Form):
    name = forms.CharField(max_length=80)
    description = forms.CharField(max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2}))
    services = _services_field()


def _lines(value: str) -> list[str]:
    return [line for line in value.splitlines() if line.strip()]


def _lines_field(*, label: str, help_text: str, placeholder: str, rows: int = 2, initial: str = "") -> forms.CharField:
    """A textarea for an allowlist, one entry a line."""
    return forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": rows, "placeholder": placeholder}),
        label=label,
        help_text=help_text,
        initial=initial,
    )


# The allowlists edited in one textarea each; contracts and methods have one per service.
_TEXTAREA_LISTS = ("allowed_origins", "allowed_user_agents", "allowed_ips")


class EndpointSecurityForm(ServiceErrorMixin, forms.Form):
    """Limits and allowlists. The service validates the allowlists (services.endpoint_update): its errors are shown
    next to their textarea, and nothing is saved."""

    secret_key_required = forms.BooleanField(
        required=False,
        label="Require the secret key",
        help_text="Requests must send Authorization: Bearer gk_… — for servers. Off: the key id in the URL is "
        "enough, limited by the allowlists below — for browsers and mobile apps.",
    )
    rate_limit_rps = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=100_000,
        label="Rate limit (requests per second)",
        help_text="Empty: your plan's limit.",
    )
    monthly_unit_cap = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_UNIT_CAP,
        label="Monthly unit cap",
        help_text="Requests are refused once reached; empty: no cap.",
    )
    allowed_origins = _lines_field(
        label="Allowed origins",
        help_text="One per line, exact or *.example.com. Empty: any origin.",
        placeholder="e.g. https://app.example.com or *.example.com",
        rows=3,
    )
    allowed_user_agents = _lines_field(
        label="Allowed user agents",
        help_text="One per line; a request's User-Agent must contain one. Empty: any.",
        placeholder="e.g. MyApp/",
    )
    allowed_ips = _lines_field(
        label="Allowed IP addresses",
        help_text="One per line, addresses or CIDR ranges, IPv4 or IPv6. Empty: any.",
        placeholder="e.g. 203.0.113.7 or 10.0.0.0/8",
    )

    def __init__(self, data: Mapping[str, Any] | None = None, *, endpoint: Endpoint) -> None:
        initial = {field: getattr(endpoint, field) for field in SECURITY_FIELDS if field not in ALLOWLIST_FIELDS}
        initial |= {field: "\n".join(getattr(endpoint, field)) for field in _TEXTAREA_LISTS}
        super().__init__(data, initial=initial)
        self.endpoint = endpoint
        plan_rps = plan_rate_limit(team=endpoint.team)
        rps = self.fields["rate_limit_rps"]
        rps.help_text = f"Empty: your plan's limit, {plan_rps:,} per second. Your plan allows up to {plan_rps:,}."
        rps.widget.attrs["max"] = plan_rps
        self.service_fields: list[tuple[Service, str | None, str]] = []
        # The service names a service's list allowed_contracts.<id> (its errors say so); here it is contracts__<id>.
        self._form_field: dict[str, str] = {}
        for service in endpoint.services.all():
            contracts_field = None
            if service.kind == ServiceKind.RPC:
                contracts_field = f"contracts__{service.id}"
                self.fields[contracts_field] = _lines_field(
                    label=f"{service.name}: allowed contract addresses",
                    help_text="One per line; only calls to these contracts. Empty: any contract.",
                    placeholder="0x…" if service.chain_family == "evm" else "base58 address",
                    initial="\n".join(endpoint.allowed_contracts.get(service.id, [])),
                )
                self._form_field[f"allowed_contracts.{service.id}"] = contracts_field
            methods_field = f"methods__{service.id}"
            self.fields[methods_field] = _lines_field(
                label=f"{service.name}: allowed {'operations' if service.is_llm else 'methods'}",
                help_text="One per line. Empty: all. Known: " + ", ".join(known_methods(service)[:12]) + ", …",
                placeholder="eth_call" if service.chain_family == "evm" else "",
                initial="\n".join(endpoint.allowed_methods.get(service.id, [])),
            )
            self._form_field[f"allowed_methods.{service.id}"] = methods_field
            self.service_fields.append((service, contracts_field, methods_field))

    def clean(self) -> dict[str, Any]:
        """The allowlists as lists of lines, for the service to validate."""
        data = super().clean() or {}
        for field in _TEXTAREA_LISTS:
            data[field] = _lines(data.get(field) or "")
        data["allowed_contracts"], data["allowed_methods"] = {}, {}
        for service, contracts_field, methods_field in self.service_fields:
            if contracts_field:
                data["allowed_contracts"][service.id] = _lines(data.get(contracts_field) or "")
            data["allowed_methods"][service.id] = _lines(data.get(methods_field) or "")
        return data

    def changes(self) -> dict[str, Any]:
        return {field: self.cleaned_data[field] for field in SECURITY_FIELDS}

    def add_service_error(self, error: ServiceError) -> None:
        """Each bad allowlist entry next to its textarea (an AllowlistError holds them all)."""
        for each in error.errors if isinstance(error, AllowlistError) else [error]:
            field = self._form_field.get(each.field or "", each.field)
            super().add_service_error(ServiceError(each.code, each.message, field=field))


KEY_EXPIRY_CHOICES = [("never", "Never"), ("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]


class KeyCreateForm(ServiceErrorMixin, forms.Form):
    name = forms.CharField(max_length=80, widget=forms.TextInput(attrs={"placeholder": "Backend server"}))
    expires_in = forms.ChoiceField(choices=KEY_EXPIRY_CHOICES, initial="never", label="Expires")
    daily_unit_cap = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_UNIT_CAP, label="Daily unit cap", help_text="Empty: no cap."
    )

    def expires_at(self) -> datetime | None:
        value = self.cleaned_data["expires_in"]
        return None if value == "never" else timezone.now() + timedelta(days=int(value))


class KeyCapForm(ServiceErrorMixin, forms.Form):
    daily_unit_cap = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_UNIT_CAP, label="Daily unit cap",
        help_text="Empty: no cap. Gatehouse stops the key when its ledger reaches the cap, until 00:00 UTC.",
    )  # fmt: skip


OVERLAP_LABELS = {"none": "None — stop the old key now", "1h": "1 hour", "24h": "24 hours", "7d": "7 days"}


class KeyRotateForm(ServiceErrorMixin, forms.Form):
    overlap = forms.ChoiceField(
        choices=[(value, OVERLAP_LABELS[value]) for value in ROTATION_OVERLAPS],
        initial="24h",
        label="Keep the old key working for",
    )
