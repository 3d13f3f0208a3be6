from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from allauth.account.forms import SignupForm as AllauthSignupForm
from django import forms
from django.utils import timezone

from accounts.models import Membership, Role, Team, TokenScope
from accounts.permissions import GRANTABLE_ROLE_CHOICES, grantable_roles
from project.forms import BoundedDateField, ServiceErrorMixin


class SignupForm(AllauthSignupForm):
    name = forms.CharField(
        max_length=150, required=False, label="Your name", widget=forms.TextInput(attrs={"autocomplete": "name"})
    )

    field_order = ["name", "email", "password1", "password2"]


class TeamNameForm(ServiceErrorMixin, forms.Form):
    name = forms.CharField(
        max_length=80, label="Team name", widget=forms.TextInput(attrs={"autocomplete": "organization"})
    )


class RequireMfaForm(ServiceErrorMixin, forms.Form):
    require_mfa = forms.BooleanField(required=False, label="Require two-factor authentication for every member")


class MemberChoiceField(forms.ModelChoiceField):  # not ModelChoiceField[Membership]: generic in the stubs only
    def label_from_instance(self, obj: Membership) -> str:
        return f"{obj.user.email} ({obj.get_role_display()})"


class TransferForm(ServiceErrorMixin, forms.Form):
    member = MemberChoiceField(queryset=Membership.objects.none(), label="New owner", empty_label="Choose a member")

    def __init__(self, *args: Any, team: Team, owner: Membership, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = cast(MemberChoiceField, self.fields["member"])  # self.fields holds this form's copies, typed as Fields
        field.queryset = (
            Membership.objects.filter(team=team).exclude(pk=owner.pk).select_related("user").order_by("user__email")
        )


class DeleteTeamForm(ServiceErrorMixin, forms.Form):
    confirmation = forms.CharField(
        label="Type the team's slug to confirm", widget=forms.TextInput(attrs={"autocomplete": "off"})
    )


class InviteForm(ServiceErrorMixin, forms.Form):
    email = forms.EmailField(
        label="Email address",
        widget=forms.EmailInput(attrs={"autocomplete": "off", "placeholder": "teammate@example.com"}),
    )
    role = forms.ChoiceField(label="Role")

    def __init__(self, *args: Any, granter_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        roles = grantable_roles(granter_role)
        field = cast(forms.ChoiceField, self.fields["role"])  # self.fields holds this form's copies, typed as Fields
        field.choices = [(role.value, role.label) for role in roles]
        field.initial = Role.DEVELOPER if Role.DEVELOPER in roles else None


class RoleForm(ServiceErrorMixin, forms.Form):
    role = forms.ChoiceField(choices=GRANTABLE_ROLE_CHOICES)


EXPIRY_CHOICES = [("never", "Never"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]


class TokenCreateForm(ServiceErrorMixin, forms.Form):
    name = forms.CharField(max_length=80, label="Name", widget=forms.TextInput(attrs={"placeholder": "CI deploys"}))
    scopes = forms.MultipleChoiceField(
        choices=TokenScope.choices, widget=forms.CheckboxSelectMultiple, initial=[TokenScope.READ], label="Scopes"
    )
    expires_in = forms.ChoiceField(choices=EXPIRY_CHOICES, initial="90", label="Expires")

    def expires_at(self) -> datetime | None:
        value = self.cleaned_data["expires_in"]
        return None if value == "never" else timezone.now() + timedelta(days=int(value))


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(required=False, label="Action")
    actor = forms.CharField(required=False, label="Actor email", max_length=254)
    since = BoundedDateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = BoundedDateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args: Any, actions: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = cast(forms.ChoiceField, self.fields["action"])  # self.fields holds this form's copies, typed as Fields
        field.choices = [("", "All actions"), *((a, a) for a in actions)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "The end date is before the start date.")
        return data
