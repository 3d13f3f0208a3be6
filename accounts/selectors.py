"""Reads for accounts and teams. Every read of team data takes the team explicitly."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import cast

from allauth.account.models import EmailAddress
from django.db.models import Case, IntegerField, QuerySet, Value, When

from accounts.models import AuditEvent, Invitation, ManagementToken, Membership, Role, Team, User
from accounts.permissions import CLOSED_TEAM_ROLES
from project.secrets import sha256_hex

_ROLE_ORDER = Case(
    *[When(role=role, then=Value(index)) for index, role in enumerate(Role)], output_field=IntegerField()
)


# --- users ----------------------------------------------------------------------------------


def user_email_verified(user: User) -> bool:
    """Whether the user's own address is verified (inviting people and creating keys need it)."""
    return EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists()


def user_by_email(*, email: str) -> User | None:
    """The user with this address, in any case (addresses are unique regardless of case)."""
    return User.objects.filter(email__iexact=email).first()


def default_team_name(*, user: User) -> str:
    """The name offered for a user's first team: "Dana's team"."""
    first = user.name.split(" ")[0] if user.name else user.email.split("@")[0]
    return f"{first}'s team"[:80]


# --- teams and members ----------------------------------------------------------------------


def team_list_for_user(*, user: User) -> QuerySet[Membership]:
    """The user's memberships of live teams, with their teams, by team name."""
    return (
        Membership.objects.filter(user=user, team__deleted_at__isnull=True)
        .select_related("team")
        .order_by("team__name")
    )


def switcher_memberships(*, user: User) -> tuple[list[Membership], list[Membership]]:
    """The user's live teams by name, and the deleted teams whose billing they may still read (their invoices stay),
    most recently deleted first — one query."""
    memberships = list(Membership.objects.filter(user=user).select_related("team").order_by("team__name"))
    live = [m for m in memberships if m.team.deleted_at is None]
    closed = [m for m in memberships if m.team.deleted_at is not None and m.role in CLOSED_TEAM_ROLES]
    closed.sort(key=lambda m: cast(datetime, m.team.deleted_at), reverse=True)  # closed: deleted_at is set
    return live, closed


def member_list(*, team: Team) -> QuerySet[Membership]:
    return Membership.objects.filter(team=team).select_related("user").order_by(_ROLE_ORDER, "user__email")


def member_get(*, team: Team, membership_id: int) -> Membership:
    return Membership.objects.select_related("user", "team").get(team=team, pk=membership_id)


def member_exists(*, team: Team, user: User) -> bool:
    return Membership.objects.filter(team=team, user=user).exists()


# --- invitations ----------------------------------------------------------------------------


def invitation_list_open(*, team: Team) -> QuerySet[Invitation]:
    """Invitations not yet accepted or revoked (expired ones included, so they can be resent)."""
    return Invitation.objects.filter(team=team).open().select_related("invited_by").order_by("-created_at")


def invitation_get(*, team: Team, invitation_id: int) -> Invitation:
    return Invitation.objects.select_related("team").get(team=team, pk=invitation_id)


def invitation_by_token(*, token: str) -> Invitation | None:
    """The invitation a link's token opens, whatever its status; None for a token that opens none. The token is the
    credential, so there is no team argument: it names the team."""
    if not token or len(token) > 128:
        return None
    return Invitation.objects.select_related("team", "invited_by").filter(token_hash=sha256_hex(token)).first()


# --- audit log ------------------------------------------------------------------------------


def audit_event_list(
    *,
    team: Team,
    action: str | None = None,
    actor_email: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.filter(team=team)
    if action:
        events = events.filter(action=action)
    if actor_email:
        events = events.filter(actor_email__iexact=actor_email.strip())
    if since:
        events = events.filter(created_at__gte=datetime.combine(since, time.min, tzinfo=UTC))
    if until:
        events = events.filter(created_at__lt=datetime.combine(until, time.max, tzinfo=UTC))
    return events.order_by("-created_at", "-id")


def audit_actions_for_team(*, team: Team) -> list[str]:
    return list(AuditEvent.objects.filter(team=team).values_list("action", flat=True).distinct().order_by("action"))


def security_events_for_user(*, user: User, limit: int = 100) -> QuerySet[AuditEvent]:
    """The user's own sign-ins, failures and account changes (not team events)."""
    return AuditEvent.objects.filter(actor=user, team__isnull=True).order_by("-created_at", "-id")[:limit]


# --- management tokens ----------------------------------------------------------------------


def management_token_list(*, team: Team) -> QuerySet[ManagementToken]:
    return (
        ManagementToken.objects.filter(team=team)
        .select_related("created_by", "membership")
        .order_by("revoked_at", "-created_at")
    )


def management_token_get(*, team: Team, token_id: int) -> ManagementToken:
    return ManagementToken.objects.get(team=team, pk=token_id)
