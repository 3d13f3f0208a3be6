"""HTML views for teams, members, invitations, the audit log and management tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.sessions.backends.base import SessionBase
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import selectors, services
from accounts.adapter import INVITATION_SESSION_KEY
from accounts.forms import (
    AuditFilterForm,
    InviteForm,
    RequireMfaForm,
    RoleForm,
    TeamNameForm,
    TokenCreateForm,
    TransferForm,
)
from accounts.models import AuditEvent, Invitation, Membership, User
from accounts.permissions import GRANTABLE_ROLE_CHOICES, membership_for, team_view, user_has_mfa
from accounts.requests import TeamRequest, UserRequest
from project.csv import csv_response
from project.errors import ServiceError
from project.forms import ServiceErrorMixin
from project.http import get_or_404
from project.requests import HtmxRequest

AUDIT_PAGE_SIZE = 50
AUDIT_CSV_LIMIT = 100_000


def _team_redirect(request: TeamRequest, page: str) -> HttpResponse:
    return redirect(page, team_slug=request.team.slug)


# --- teams ----------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def team_create(request: UserRequest) -> HttpResponse:
    form = TeamNameForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = services.team_create(name=form.cleaned_data["name"], owner=request.user)
        except ServiceError as error:
            form.add_service_error(error)
        else:
            messages.success(request, f"Created {team.name}.")
            return redirect("team_home", team_slug=team.slug)
    return render(request, "accounts/team_create.html", {"form": form})


def _settings_context(request: TeamRequest, **forms: Any) -> dict[str, Any]:
    team = request.team
    context: dict[str, Any] = {
        "name_form": TeamNameForm(initial={"name": team.name}),
        "mfa_form": RequireMfaForm(initial={"require_mfa": team.require_mfa}),
        "transfer_form": TransferForm(team=team, owner=request.membership),
        "user_has_mfa": user_has_mfa(request.user),
    }
    context.update(forms)
    return context


def _settings_post(
    request: TeamRequest, form_name: str, form: ServiceErrorMixin, save: Callable[[], str]
) -> HttpResponse:
    """One settings form's POST: `save` calls the service and says what it did; a refusal shows on the page (400)."""
    if form.is_valid():
        try:
            done = save()
        except ServiceError as error:
            form.add_service_error(error)
        else:
            messages.success(request, done)
            return _team_redirect(request, "team_settings")
    return render(request, "accounts/team_settings.html", _settings_context(request, **{form_name: form}), status=400)


@team_view(GET="team.view")
def team_settings(request: TeamRequest) -> HttpResponse:
    return render(request, "accounts/team_settings.html", _settings_context(request))


@team_view(POST="team.update")
def team_rename(request: TeamRequest) -> HttpResponse:
    form = TeamNameForm(request.POST)

    def save() -> str:
        services.team_rename(team=request.team, name=form.cleaned_data["name"], actor=request.user)
        return "Team renamed."

    return _settings_post(request, "name_form", form, save)


@team_view(POST="team.security")
def team_security(request: TeamRequest) -> HttpResponse:
    form = RequireMfaForm(request.POST)

    def save() -> str:
        services.team_set_require_mfa(team=request.team, required=form.cleaned_data["require_mfa"], actor=request.user)
        return "Security settings saved."

    return _settings_post(request, "mfa_form", form, save)


@team_view(POST="team.transfer")
def team_transfer(request: TeamRequest) -> HttpResponse:
    form = TransferForm(request.POST, team=request.team, owner=request.membership)

    def save() -> str:
        new_owner: Membership = form.cleaned_data["member"]
        services.ownership_transfer(team=request.team, new_owner=new_owner, actor=request.user)
        return f"{new_owner.user.email} now owns this team; you are an admin."

    return _settings_post(request, "transfer_form", form, save)


@team_view(POST="team.leave")
def team_leave(request: TeamRequest) -> HttpResponse:
    try:
        services.member_leave(membership=request.membership)
    except ServiceError as error:
        messages.error(request, error.message)
        return _team_redirect(request, "team_settings")
    request.session.pop("current_team", None)
    messages.success(request, f"You left {request.team.name}.")
    return redirect("home")


@login_required
@require_GET
def team_mfa_required(request: UserRequest, team_slug: str) -> HttpResponse:
    membership = membership_for(user=request.user, team_slug=team_slug)
    if membership is None:
        raise Http404("No such team")
    if not membership.team.require_mfa or user_has_mfa(request.user):
        return redirect("team_home", team_slug=team_slug)
    return render(request, "accounts/team_mfa_required.html", {"team": membership.team})


# --- members and invitations ----------------------------------------------------------------


def _members_context(request: TeamRequest, invite_form: InviteForm | None = None) -> dict[str, Any]:
    team = request.team
    return {
        "members": selectors.member_list(team=team),
        "invitations": selectors.invitation_list_open(team=team),
        "invite_form": invite_form or InviteForm(granter_role=request.membership.role),
        "role_choices": GRANTABLE_ROLE_CHOICES,
    }


@team_view(GET="members.view", POST="members.manage")
def members(request: TeamRequest) -> HttpResponse:
    """The member list, pending invitations, and (POST) a new invitation."""
    membership = request.membership
    form = InviteForm(request.POST or None, granter_role=membership.role)
    if request.method == "POST":
        if form.is_valid():
            try:
                invitation, _token = services.invitation_create(
                    team=request.team,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    invited_by=membership,
                )
            except ServiceError as error:
                form.add_service_error(error)
            else:
                messages.success(request, f"Invitation sent to {invitation.email}.")
                return _team_redirect(request, "members")
        return render(request, "accounts/members.html", _members_context(request, form), status=400)
    return render(request, "accounts/members.html", _members_context(request))


def _members_action(request: TeamRequest, action: Callable[[], object], done: str) -> HttpResponse:
    """A change from the member list: say how it went (a refusal as an error message), then back to the list."""
    try:
        action()
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, done)
    return _team_redirect(request, "members")


def _member_or_404(request: TeamRequest, membership_id: int) -> Membership:
    return get_or_404(lambda: selectors.member_get(team=request.team, membership_id=membership_id), "No such member")


@team_view(POST="members.manage")
def member_role(request: TeamRequest, membership_id: int) -> HttpResponse:
    target = _member_or_404(request, membership_id)
    form = RoleForm(request.POST)
    error_message = ""
    if form.is_valid():
        try:
            target = services.member_change_role(
                membership=target, role=form.cleaned_data["role"], actor=request.membership
            )
        except ServiceError as error:
            error_message = error.message
    else:
        error_message = "Choose a valid role."
    if request.htmx:
        context = {"member": target, "role_choices": GRANTABLE_ROLE_CHOICES, "row_error": error_message}
        return render(request, "accounts/members.html#member_row", context, status=400 if error_message else 200)
    if error_message:
        messages.error(request, error_message)
    else:
        messages.success(request, f"{target.user.email} is now {target.get_role_display()}.")
    return _team_redirect(request, "members")


@team_view(POST="members.manage")
def member_remove(request: TeamRequest, membership_id: int) -> HttpResponse:
    target = _member_or_404(request, membership_id)
    return _members_action(
        request,
        lambda: services.member_remove(membership=target, actor=request.membership),
        f"Removed {target.user.email} from the team.",
    )


def _invitation_or_404(request: TeamRequest, invitation_id: int) -> Invitation:
    return get_or_404(
        lambda: selectors.invitation_get(team=request.team, invitation_id=invitation_id), "No such invitation"
    )


@team_view(POST="members.manage")
def invitation_resend(request: TeamRequest, invitation_id: int) -> HttpResponse:
    invitation = _invitation_or_404(request, invitation_id)
    return _members_action(
        request,
        lambda: services.invitation_resend(invitation=invitation, actor=request.membership),
        f"Sent the invitation to {invitation.email} again, with a new link.",
    )


@team_view(POST="members.manage")
def invitation_revoke(request: TeamRequest, invitation_id: int) -> HttpResponse:
    invitation = _invitation_or_404(request, invitation_id)
    return _members_action(
        request,
        lambda: services.invitation_revoke(invitation=invitation, actor=request.membership),
        f"Revoked the invitation for {invitation.email}.",
    )


@require_GET
def invitation_detail(request: HtmxRequest, token: str) -> HttpResponse:
    """The link in the invitation email: explains it, then lets the invitee sign in, sign up or accept."""
    invitation = selectors.invitation_by_token(token=token)
    if invitation is None:
        return render(request, "accounts/invitation_invalid.html", status=404)
    context: dict[str, Any] = {"invitation": invitation, "token": token}
    if invitation.status != Invitation.Status.PENDING:
        return render(request, "accounts/invitation_invalid.html", context, status=410)
    if request.user.is_authenticated:
        context["email_matches"] = request.user.email.lower() == invitation.email.lower()
        context["already_member"] = selectors.member_exists(team=invitation.team, user=request.user)
    else:
        # Keep the token for the sign-up that may follow, and vouch for the address the link was sent to.
        from allauth.account.adapter import get_adapter

        request.session[INVITATION_SESSION_KEY] = token
        get_adapter().stash_verified_email(request, invitation.email)
        context["has_account"] = selectors.user_by_email(email=invitation.email) is not None
        context["signup_url"] = f"{reverse('account_signup')}?{urlencode({'email': invitation.email})}"
        context["login_url"] = f"{reverse('account_login')}?{urlencode({'next': request.path})}"
    return render(request, "accounts/invitation.html", context)


@login_required
@require_POST
def invitation_accept(request: UserRequest, token: str) -> HttpResponse:
    try:
        membership = services.invitation_accept(token=token, user=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("invitation_detail", token=token) if error.code == "wrong_email" else redirect("home")
    request.session.pop(INVITATION_SESSION_KEY, None)
    messages.success(request, f"You joined {membership.team.name} as {membership.get_role_display()}.")
    return redirect("team_home", team_slug=membership.team.slug)


# --- audit log ------------------------------------------------------------------------------


def _audit_events(request: TeamRequest) -> tuple[AuditFilterForm, QuerySet[AuditEvent]]:
    team = request.team
    form = AuditFilterForm(request.GET or None, actions=selectors.audit_actions_for_team(team=team))
    filters: dict[str, Any] = {}
    if form.is_valid():
        filters = {
            "action": form.cleaned_data["action"] or None,
            "actor_email": form.cleaned_data["actor"] or None,
            "since": form.cleaned_data["since"],
            "until": form.cleaned_data["until"],
        }
    return form, selectors.audit_event_list(team=team, **filters)


@team_view(GET="audit.view")
def audit_log(request: TeamRequest) -> HttpResponse:
    form, events = _audit_events(request)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "accounts/audit_log.html",
        {"form": form, "page": page, "query": query.urlencode(), "csv_limit": AUDIT_CSV_LIMIT},
    )


@team_view(GET="audit.view")
def audit_log_csv(request: TeamRequest) -> StreamingHttpResponse:
    _form, events = _audit_events(request)
    columns = ["time", "action", "actor", "target_type", "target", "ip", "user_agent", "before", "after"]

    def rows() -> Iterator[list[Any]]:
        yield columns
        for event in events[:AUDIT_CSV_LIMIT].iterator(chunk_size=2000):
            yield (
                [
                    event.created_at.isoformat(),
                    event.action,
                    event.actor_email,
                    event.target_type,
                    event.target_repr,
                    event.ip or "",
                    event.user_agent,
                    "" if event.before is None else event.before,
                    "" if event.after is None else event.after,
                ]
            )

    return csv_response(f"{request.team.slug}-audit-log", rows())


@login_required
@require_GET
def security_log(request: UserRequest) -> HttpResponse:
    events = selectors.security_events_for_user(user=request.user)
    return render(request, "accounts/security_log.html", {"events": events, "has_mfa": user_has_mfa(request.user)})


@login_required
@require_POST
def time_zone_save(request: UserRequest) -> HttpResponse:
    """Remember the display time zone chosen on a dashboard."""
    try:
        services.user_set_time_zone(user=request.user, time_zone=request.POST.get("tz", ""))
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Times are now shown in {request.POST.get('tz')}.")
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = reverse("home")
    return redirect(next_url)


# --- management tokens ----------------------------------------------------------------------


@team_view(GET="tokens.manage", POST="tokens.manage")
def tokens(request: TeamRequest) -> HttpResponse:
    team = request.team
    form = TokenCreateForm(request.POST or None)
    created_secret = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                _token, created_secret = services.management_token_create(
                    team=team,
                    name=form.cleaned_data["name"],
                    scopes=form.cleaned_data["scopes"],
                    expires_at=form.expires_at(),
                    actor=request.user,
                )
            except ServiceError as error:
                form.add_service_error(error)
                status = 400
            else:
                form = TokenCreateForm()
        else:
            status = 400
    context = {"form": form, "tokens": selectors.management_token_list(team=team), "created_secret": created_secret}
    response = render(request, "accounts/tokens.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the page may hold a secret shown once
    return response


@team_view(POST="tokens.manage")
def token_revoke(request: TeamRequest, token_id: int) -> HttpResponse:
    token = get_or_404(lambda: selectors.management_token_get(team=request.team, token_id=token_id), "No such token")
    services.management_token_revoke(token=token, actor=request.user)
    messages.success(request, f"Revoked {token.name}.")
    return _team_redirect(request, "tokens")


# --- the landing page ------------------------------------------------------------------------


def home(request: HtmxRequest) -> HttpResponse:
    """Signed in: the current team (or an invitation to create one). Signed out: what Gatehouse is."""
    if request.user.is_authenticated:
        slug = current_team_slug(user=request.user, session=request.session)
        if slug:
            return redirect("team_home", team_slug=slug)
        form = TeamNameForm(initial={"name": selectors.default_team_name(user=request.user)})
        return render(request, "home.html", {"form": form})
    return render(request, "home.html")


def current_team_slug(*, user: User, session: SessionBase) -> str | None:
    """The team to open: the last one visited if still a member, else the first by name."""
    memberships = selectors.team_list_for_user(user=user)
    remembered = session.get("current_team")
    slugs = [m.team.slug for m in memberships]
    if remembered in slugs:
        return remembered
    return slugs[0] if slugs else None
