from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from endpoints import validators
from endpoints.models import Endpoint, Environment, Service, ServiceKind
from endpoints.selectors import known_methods, service_list
from endpoints.services import ROTATION_OVERLAPS, plan_rate_limit
from project.forms import ServiceErrorMixin


class ServiceChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Service) -> str:  # type: ignore[override]
        return f"{obj.name}{' (beta)' if obj.status == 'beta' else ''}"


def _services_field() -> ServiceChoiceField:
    return ServiceChoiceField(
        queryset=service_list(),
        widget=forms.CheckboxSelectMultiple,
        label="Services",
        error_messages={"required": "Enable at least one service."},
    )


class ServicesMixin:
    def selected_service_ids(self) -> set[str]:
        """Ids of the checked services, whether the value came from POST data (ids) or initial (objects)."""
        value = self["services"].value() or []  # type: ignore[index]
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


class EndpointSecurityForm(ServiceErrorMixin, forms.Form):
    """Limits and allowlists. Invalid entries are reported next to their field and nothing is saved."""

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
        label="Monthly unit cap",
        help_text="Requests are refused once reached; empty: no cap.",
    )
    allowed_origins = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "e.g. https://app.example.com or *.example.com"}),
        label="Allowed origins",
        help_text="One per line, exact or *.example.com. Empty: any origin.",
    )
    allowed_user_agents = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "e.g. MyApp/"}),
        label="Allowed user agents",
        help_text="One per line; a request's User-Agent must contain one. Empty: any.",
    )
    allowed_ips = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "e.g. 203.0.113.7 or 10.0.0.0/8"}),
        label="Allowed IP addresses",
        help_text="One per line, addresses or CIDR ranges, IPv4 or IPv6. Empty: any.",
    )

    def __init__(self, *args: Any, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.endpoint = endpoint
        plan_rps = plan_rate_limit(endpoint.team)
        rps = self.fields["rate_limit_rps"]
        rps.help_text = f"Empty: your plan's limit, {plan_rps:,} per second. Your plan allows up to {plan_rps:,}."
        rps.widget.attrs["max"] = plan_rps
        self.service_fields: list[tuple[Service, str | None, str]] = []
        for service in endpoint.services.all():
            contracts_field = None
            if service.kind == ServiceKind.RPC:
                contracts_field = f"contracts__{service.id}"
                self.fields[contracts_field] = forms.CharField(
                    required=False,
                    widget=forms.Textarea(
                        attrs={"rows": 2, "placeholder": "0x…" if service.chain_family == "evm" else "base58 address"}
                    ),
                    label=f"{service.name}: allowed contract addresses",
                    help_text="One per line; only calls to these contracts. Empty: any contract.",
                    initial="\n".join(endpoint.allowed_contracts.get(service.id, [])),
                )
            methods_field = f"methods__{service.id}"
            self.fields[methods_field] = forms.CharField(
                required=False,
                widget=forms.Textarea(
                    attrs={"rows": 2, "placeholder": "eth_call" if service.chain_family == "evm" else ""}
                ),
                label=f"{service.name}: allowed {'operations' if service.is_llm else 'methods'}",
                help_text="One per line. Empty: all. Known: " + ", ".join(known_methods(service)[:12]) + ", …",
                initial="\n".join(endpoint.allowed_methods.get(service.id, [])),
            )
            self.service_fields.append((service, contracts_field, methods_field))

    def _clean_list(self, name: str, cleaner: Any, **kwargs: Any) -> list[str]:
        try:
            return cleaner(_lines(self.cleaned_data.get(name) or ""), **kwargs)
        except ValidationError as error:
            self.add_error(name, error)
            return []

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["allowed_origins"] = self._clean_list("allowed_origins", validators.clean_origins)
        data["allowed_user_agents"] = self._clean_list("allowed_user_agents", validators.clean_user_agents)
        data["allowed_ips"] = self._clean_list("allowed_ips", validators.clean_ip_ranges)
        contracts: dict[str, list[str]] = {}
        methods: dict[str, list[str]] = {}
        for service, contracts_field, methods_field in self.service_fields:
            if contracts_field:
                cleaned = self._clean_list(
                    contracts_field, validators.clean_contract_addresses, chain_family=service.chain_family
                )
                if cleaned:
                    contracts[service.id] = cleaned
            cleaned = self._clean_list(methods_field, validators.clean_methods, known=known_methods(service))
            if cleaned:
                methods[service.id] = cleaned
        data["allowed_contracts"] = contracts
        data["allowed_methods"] = methods
        return data

    def changes(self) -> dict[str, Any]:
        fields = ("secret_key_required", "rate_limit_rps", "monthly_unit_cap", "allowed_origins", "allowed_user_agents",
                  "allowed_ips", "allowed_contracts", "allowed_methods")  # fmt: skip
        return {field: self.cleaned_data[field] for field in fields}


KEY_EXPIRY_CHOICES = [("never", "Never"), ("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]


class KeyCreateForm(ServiceErrorMixin, forms.Form):
    name = forms.CharField(max_length=80, widget=forms.TextInput(attrs={"placeholder": "Backend server"}))
    expires_in = forms.ChoiceField(choices=KEY_EXPIRY_CHOICES, initial="never", label="Expires")
    daily_unit_cap = forms.IntegerField(required=False, min_value=1, label="Daily unit cap", help_text="Empty: no cap.")

    def expires_at(self) -> Any:
        value = self.cleaned_data["expires_in"]
        return None if value == "never" else timezone.now() + timedelta(days=int(value))


OVERLAP_LABELS = {"none": "None — stop the old key now", "1h": "1 hour", "24h": "24 hours", "7d": "7 days"}


class KeyRotateForm(ServiceErrorMixin, forms.Form):
    overlap = forms.ChoiceField(
        choices=[(value, OVERLAP_LABELS[value]) for value in ROTATION_OVERLAPS],
        initial="24h",
        label="Keep the old key working for",
    )
