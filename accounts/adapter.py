"""django-allauth hooks: a first team at sign-up, invitations through sign-up, sign-in audit events."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest
from django.urls import reverse

from accounts import selectors, services
from project.errors import ServiceError
from project.http import client_ip

INVITATION_SESSION_KEY = "invitation_token"
# Where to land after sign-up: the team just created or joined.
LANDING_SESSION_KEY = "landing_team"


class AccountAdapter(DefaultAccountAdapter):
    def get_client_ip(self, request: HttpRequest) -> str:
        """The address sign-in lockouts key on: the same rule as everywhere (project.http.client_ip)."""
        ip = client_ip(request)
        if not ip:
            raise PermissionDenied("Unable to determine the client's address")
        return ip

    def save_user(self, request: HttpRequest, user: Any, form: Any, commit: bool = True) -> Any:
        user.name = (form.cleaned_data.get("name") or "").strip()
        user = super().save_user(request, user, form, commit=commit)
        token = request.session.pop(INVITATION_SESSION_KEY, None)
        if token:
            try:
                membership = services.invitation_accept(token=token, user=user)
            except ServiceError as error:
                messages.warning(request, f"{error.message} We created a team of your own instead.")
            else:
                request.session[LANDING_SESSION_KEY] = membership.team.slug
                messages.success(request, f"Welcome to {membership.team.name}.")
                return user
        team = services.team_create(name=selectors.default_team_name(user=user), owner=user)
        request.session[LANDING_SESSION_KEY] = team.slug
        return user

    def get_signup_redirect_url(self, request: HttpRequest) -> str:
        slug = request.session.pop(LANDING_SESSION_KEY, None)
        if slug:
            return reverse("team_home", kwargs={"team_slug": slug})
        return super().get_signup_redirect_url(request)

    def post_login(self, request: HttpRequest, user: Any, **kwargs: Any) -> Any:
        services.audit_record(action="auth.login", actor=user)
        return super().post_login(request, user, **kwargs)

    def pre_authenticate(self, request: HttpRequest, **credentials: Any) -> None:
        try:
            super().pre_authenticate(request, **credentials)
        except ValidationError:  # too many failures for this account or this address: locked out for now
            attempted = (credentials.get("email") or "")[:254]
            user = selectors.user_by_email(email=attempted) if attempted else None
            services.audit_record(
                action="auth.login_throttled", actor=user, actor_email=attempted, target_repr=attempted
            )
            raise

    def authentication_failed(self, request: HttpRequest, **credentials: Any) -> None:
        attempted = (credentials.get("email") or credentials.get("username") or "")[:254]
        # Recorded against the account when it exists, so its owner sees it in their security log;
        # the sign-in page says the same thing either way.
        user = selectors.user_by_email(email=attempted) if attempted else None
        services.audit_record(action="auth.login_failed", actor=user, actor_email=attempted, target_repr=attempted)

    def logout(self, request: HttpRequest) -> None:
        if request.user.is_authenticated:
            services.audit_record(action="auth.logout", actor=request.user)
        super().logout(request)
