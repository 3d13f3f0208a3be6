"""Who may do what in a team: the one role-by-action table, and the checks that enforce it.

Every team-scoped HTML view is wrapped in `team_view(GET=..., POST=...)` and every team-scoped API
view uses `TeamPermission` with `required_actions`; a test walks every URL pattern and fails
on any view that is neither team-scoped through these nor listed in NON_TEAM_VIEWS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, cast

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseNotAllowed
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from rest_framework import exceptions as drf_exceptions
from rest_framework import permissions as drf_permissions
from rest_framework.request import Request

from accounts.models import Membership, Role, TokenScope, User
from accounts.requests import TeamAPIRequest, TeamRequest

OWNER, ADMIN, DEVELOPER, FINANCE, VIEWER = Role.OWNER, Role.ADMIN, Role.DEVELOPER, Role.FINANCE, Role.VIEWER
EVERYONE = frozenset(Role)

# action → roles allowed. The README's role table is generated from this.
ACTIONS: dict[str, frozenset[Role]] = {
    "team.view": EVERYONE,
    "team.update": frozenset({OWNER, ADMIN}),
    "team.security": frozenset({OWNER}),
    "team.transfer": frozenset({OWNER}),
    "team.delete": frozenset({OWNER}),
    "team.leave": frozenset({ADMIN, DEVELOPER, FINANCE, VIEWER}),  # the owner transfers first
    "members.view": frozenset({OWNER, ADMIN}),
    "members.manage": frozenset({OWNER, ADMIN}),
    "audit.view": frozenset({OWNER, ADMIN}),
    "tokens.manage": frozenset({OWNER, ADMIN}),
    "endpoints.view": frozenset({OWNER, ADMIN, DEVELOPER, VIEWER}),
    "endpoints.manage": frozenset({OWNER, ADMIN, DEVELOPER}),
    "keys.view": frozenset({OWNER, ADMIN, DEVELOPER, VIEWER}),  # names and ids; secrets are shown only once
    "keys.manage": frozenset({OWNER, ADMIN, DEVELOPER}),
    "usage.view": EVERYONE,
    "billing.view": frozenset({OWNER, ADMIN, FINANCE}),
    "billing.payment_method": frozenset({OWNER, ADMIN, FINANCE}),
    "billing.manage": frozenset({OWNER, ADMIN}),  # change plan
    "budgets.view": EVERYONE,
    "budgets.manage": frozenset({OWNER, ADMIN, FINANCE}),
    "alerts.view": EVERYONE,
    "alerts.manage": frozenset({OWNER, ADMIN, DEVELOPER}),  # health is the engineers' business
    "webhooks.view": frozenset({OWNER, ADMIN, DEVELOPER, FINANCE}),  # URLs and the delivery log; secrets shown once
    "webhooks.manage": frozenset({OWNER, ADMIN}),
}

# A deleted team is closed: only its billing pages stay open, to the roles that could see them.
CLOSED_TEAM_ACTIONS = frozenset({"billing.view"})
CLOSED_TEAM_ROLES = frozenset(role for role in Role if role in ACTIONS["billing.view"])

ACTION_LABELS: dict[str, str] = {
    "team.view": "Open the team",
    "team.update": "Rename the team",
    "team.security": "Require two-factor authentication",
    "team.transfer": "Transfer ownership",
    "team.delete": "Delete the team",
    "team.leave": "Leave the team",
    "members.view": "See members and invitations",
    "members.manage": "Invite, remove, change roles",
    "audit.view": "Read and export the audit log",
    "tokens.manage": "Create and revoke management tokens",
    "endpoints.view": "See endpoints",
    "endpoints.manage": "Create and change endpoints",
    "keys.view": "See API keys (never their secrets)",
    "keys.manage": "Create, rotate, revoke API keys",
    "usage.view": "See usage and latency",
    "billing.view": "See invoices, cost and payment method",
    "billing.payment_method": "Manage the payment method",
    "billing.manage": "Change the plan",
    "budgets.view": "See budgets, what they have used and their alerts",
    "budgets.manage": "Set budgets and alerts",
    "alerts.view": "See health alert rules, their state and history",
    "alerts.manage": "Set health alert rules (error rate, latency)",
    "webhooks.view": "See webhooks and their delivery log",
    "webhooks.manage": "Add, change and delete webhooks; resend and test",
}

# Roles a member can be given (forms, the API and its schema); the owner's changes hands only by an ownership transfer.
GRANTABLE_ROLE_CHOICES = [choice for choice in Role.choices if choice[0] != Role.OWNER]

# Roles in order of power, for "nobody grants a role above their own". Developer and finance
# are different, not ranked: neither may grant the other (neither may manage members anyway).
ROLE_RANK: dict[Role, int] = {OWNER: 4, ADMIN: 3, DEVELOPER: 2, FINANCE: 2, VIEWER: 1}

# A management token acts with its creator's current role, never above an admin's, narrowed by its scopes:
# read → safe methods only. Owner-only actions (delete the team, transfer, require 2FA) stay with the owner's session.
TOKEN_ROLE = ADMIN

# Views that are not team-scoped, by dotted-name prefix (or "url:" + URL prefix), with the reason.
NON_TEAM_VIEWS: dict[str, str] = {
    "project.views.": "public: health checks",
    "accounts.views.home": "public: the home page (a signed-in user's own teams)",
    "allauth.": "authentication (django-allauth): sign-up, sign-in, MFA, email, password",
    "url:admin/": "operator admin: Django's admin requires is_staff on every view",
    "accounts.views.team_mfa_required": "explains a team's 2FA rule to its members (checks membership itself)",
    "drf_spectacular.": "public: the OpenAPI schema",
    "project.api_docs.": "public: the API reference page",
    "accounts.views.invitation_": "invitation links: the token is the credential",
    "accounts.views.team_create": "any signed-in user may create a team",
    "accounts.views.security_log": "a user's own sign-in history",
    "accounts.views.time_zone_save": "a user's own display time zone",
    "analytics.views.operator_": "operator view: staff only (checked in the view)",
    "billing.views.operator_": "operator billing page: staff only (checked in the view)",
    "billing.views.stripe_webhook": "Stripe's webhook: the signature on the body is the credential",
    "accounts.api.TeamListAPI": "lists only the caller's own teams",
    "endpoints.api.ServiceListAPI": "the public service catalog (any signed-in caller)",
    "endpoints.gateway_api.": "gateway API: gateway credentials only (IsGateway), no team",
    "analytics.gateway_api.": "gateway API: gateway credentials only (IsGateway), no team",
    "analytics.formats_api.": "gateway API (LiteLLM, OTLP formats): gateway credentials only (IsGateway), no team",
}


def listed_as_non_team(view: str, url: str) -> bool:
    return any(
        url.startswith(prefix[4:]) if prefix.startswith("url:") else view.startswith(prefix)
        for prefix in NON_TEAM_VIEWS
    )


def role_table_markdown() -> str:
    """The role table as Markdown, for the README (a test keeps the two identical)."""
    roles = list(Role)
    lines = ["| action | " + " | ".join(r.label.lower() for r in roles) + " |", "| --- |" + " :-: |" * len(roles)]
    for action, label in ACTION_LABELS.items():
        marks = " | ".join("✓" if r in ACTIONS[action] else "·" for r in roles)
        lines.append(f"| {label} (`{action}`) | {marks} |")
    return "\n".join(lines)


def can(role: str, action: str) -> bool:
    """Whether role may perform action. Unknown actions are a programming error."""
    return Role(role) in ACTIONS[action]


def allows(membership: Membership | None, action: str) -> bool:
    """What the views check, for showing links and buttons: the role allows it and the team is not closed for it."""
    if membership is None or not can(membership.role, action):
        return False
    return membership.team.deleted_at is None or action in CLOSED_TEAM_ACTIONS


def can_grant(granter_role: str, role: str) -> bool:
    """Whether someone with granter_role may give another member `role` (never owner: that is a transfer)."""
    if role == OWNER:
        return False
    return can(granter_role, "members.manage") and ROLE_RANK[Role(role)] <= ROLE_RANK[Role(granter_role)]


def grantable_roles(granter_role: str) -> list[Role]:
    return [role for role in Role if can_grant(granter_role, role)]


def token_role(creator_role: str) -> Role:
    """The role a management token acts with: its creator's current role, capped at TOKEN_ROLE."""
    role = Role(creator_role)
    return TOKEN_ROLE if ROLE_RANK[role] >= ROLE_RANK[TOKEN_ROLE] else role


def acting_token_membership(token: Any) -> Membership:
    """The membership a token acts as: its creator's, with the token's role (an unsaved copy; never saved)."""
    creator = token.membership
    return Membership(pk=creator.pk, team=creator.team, user=creator.user, role=token_role(creator.role))


def user_has_mfa(user: User) -> bool:
    from allauth.mfa.models import Authenticator

    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def membership_for(*, user: Any, team_slug: str) -> Membership | None:
    """The user's membership of the team with this slug, read fresh on every request."""
    return Membership.objects.select_related("team").filter(user=user, team__slug=team_slug).first()


def action_for_method(actions: Mapping[str, str], method: str) -> str | None:
    """The action a request method needs; HEAD needs what GET needs; None: the method is not allowed."""
    if method == "HEAD" and "HEAD" not in actions:
        method = "GET"
    return actions.get(method)


def team_view(**actions: str) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Decorate a view under /t/<team_slug>/ with the action each method needs: team_view(GET=..., POST=...).

    Outsiders get 404, roles without the action 403, unlisted methods 405. Sets request.team and
    request.membership. A team that requires 2FA sends members without it to set it up first.
    """
    unknown = set(actions.values()) - set(ACTIONS)
    if unknown:
        raise ValueError(f"unknown actions {unknown}: add them to accounts.permissions.ACTIONS")

    def decorator(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @wraps(view)
        def wrapper(request: HttpRequest, team_slug: str, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = membership_for(user=request.user, team_slug=team_slug)
            if membership is None:
                raise Http404("No such team")
            action = action_for_method(actions, request.method or "GET")
            if action is None:
                return HttpResponseNotAllowed(list(actions))
            if membership.team.deleted_at is not None and action not in CLOSED_TEAM_ACTIONS:
                raise Http404("This team was deleted")
            if not can(membership.role, action):
                raise PermissionDenied("Your role in this team does not allow this")
            if membership.team.require_mfa and not user_has_mfa(request.user):
                return redirect("team_mfa_required", team_slug=team_slug)
            team_request = cast(TeamRequest, request)
            team_request.team = membership.team
            team_request.membership = membership
            if request.session.get("current_team") != team_slug:
                request.session["current_team"] = team_slug
            return view(team_request, *args, **kwargs)

        wrapper.permission_actions = actions  # type: ignore[attr-defined]  # a function attribute, read by the URL walk and the README table
        return wrapper

    return decorator


class TeamPermission(drf_permissions.BasePermission):
    """DRF twin of team_view: the view names `required_actions = {method: action}` and a `team_slug` URL kwarg.

    Session users act with their membership role; management tokens with their creator's current role (capped at
    TOKEN_ROLE) narrowed by scope, and only while the creator meets the team's two-factor rule. Another team's URL
    is 404 for both; a missing right is 403. Sets request.team and request.membership (for a token: the acting copy).
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        from accounts.authentication import TokenPrincipal

        team_slug = view.kwargs.get("team_slug")
        method = request.method or "GET"
        action = action_for_method(view.required_actions, method)
        if action is None:
            raise drf_exceptions.MethodNotAllowed(method)
        principal = request.user
        if isinstance(principal, TokenPrincipal):
            if principal.team.slug != team_slug or principal.team.deleted_at is not None:
                raise drf_exceptions.NotFound("No such team")
            needed = TokenScope.READ if method in drf_permissions.SAFE_METHODS else TokenScope.WRITE
            if needed not in principal.token.scopes:
                raise drf_exceptions.PermissionDenied(f"This token lacks the '{needed}' scope")
            acting = acting_token_membership(principal.token)
            if not can(acting.role, action):
                if can(TOKEN_ROLE, action):
                    raise drf_exceptions.PermissionDenied(
                        f"This token acts with its creator's role ({acting.get_role_display()}), "
                        "which does not allow this"
                    )
                raise drf_exceptions.PermissionDenied("Management tokens cannot do this")
            if principal.team.require_mfa and not user_has_mfa(acting.user):
                raise drf_exceptions.PermissionDenied(
                    "This team requires two-factor authentication, and this token's creator has not set it up"
                )
            team_request = cast(TeamAPIRequest, request)
            team_request.team = principal.team
            team_request.membership = acting
            return True
        if not (principal and principal.is_authenticated):
            raise drf_exceptions.NotAuthenticated()
        membership = membership_for(user=principal, team_slug=team_slug)
        if membership is None or membership.team.deleted_at is not None:  # the API has no billing pages
            raise drf_exceptions.NotFound("No such team")
        if not can(membership.role, action):
            raise drf_exceptions.PermissionDenied("Your role in this team does not allow this")
        if membership.team.require_mfa and not user_has_mfa(principal):
            raise drf_exceptions.PermissionDenied("This team requires two-factor authentication")
        team_request = cast(TeamAPIRequest, request)
        team_request.team = membership.team
        team_request.membership = membership
        return True
