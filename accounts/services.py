"""Writes for users, teams, memberships, invitations, management tokens and the audit log."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.text import slugify

from accounts import emails
from accounts.models import (
    MANAGEMENT_TOKEN_PREFIX,
    AuditEvent,
    Invitation,
    ManagementToken,
    Membership,
    Role,
    Team,
    TokenScope,
    User,
)
from accounts.permissions import CLOSED_TEAM_ROLES, can, can_grant, user_has_mfa
from accounts.selectors import invitation_by_token, user_email_verified
from project import audit
from project.errors import ServiceError
from project.params import is_time_zone
from project.secrets import prefixed_secret, sha256_hex

INVITATION_LIFETIME = timedelta(days=7)
INVITATION_RESEND_INTERVAL = timedelta(minutes=1)
# Invitation emails name the team and the inviter, so they are throttled: sends (new and resent) per team per hour
# and per inviter per day, counted from the audit log — revoking and inviting again does not reset the count.
INVITATIONS_PER_TEAM_PER_HOUR = 20
INVITATIONS_PER_INVITER_PER_DAY = 50
INVITATION_SENDS = ("member.invited", "member.invitation_resent")


# --- audit ----------------------------------------------------------------------------------


def audit_record(
    *,
    action: str,
    actor: User | None = None,
    team: Team | None = None,
    target: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor_email: str = "",
    target_repr: str = "",
) -> AuditEvent:
    """Append one event to the audit log (actor, team, target, time, before/after; the client's address and user
    agent come from the request's audit context)."""
    origin = audit.current()
    return AuditEvent.objects.create(
        team=team,
        team_name=team.name if team else "",
        actor=actor,
        actor_email=actor.email if actor else actor_email,
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=(target_repr or (str(target) if target is not None else ""))[:254],
        ip=origin.ip,
        user_agent=origin.user_agent,
        before=before,
        after=after,
    )


# --- users ----------------------------------------------------------------------------------


@transaction.atomic
def user_create(*, email: str, password: str | None, name: str = "", email_verified: bool = False) -> User:
    """Create a user and their primary email address record (verified or not)."""
    user = User.objects.create_user(email=email, password=password, name=name)
    EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=email_verified)
    return user


def user_set_time_zone(*, user: User, time_zone: str) -> None:
    """The zone the user's charts and tables are shown in."""
    if not is_time_zone(time_zone):
        raise ServiceError("invalid_time_zone", f"{time_zone!r} is not a time zone.", field="time_zone")
    User.objects.filter(pk=user.pk).update(time_zone=time_zone)
    user.time_zone = time_zone


# --- teams ----------------------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name)[:40].strip("-") or "team"
    slug = base
    while Team.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(2)}"
    return slug


@transaction.atomic
def team_create(*, name: str, owner: User) -> Team:
    """Create a team with `owner` as its one owner."""
    name = name.strip()
    if not name:
        raise ServiceError("name_required", "Give the team a name.", field="name")
    team = Team.objects.create(name=name[:80], slug=_unique_slug(name))
    Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    audit_record(action="team.created", actor=owner, team=team, target=team, after={"name": team.name})
    return team


@transaction.atomic
def team_rename(*, team: Team, name: str, actor: User) -> Team:
    name = name.strip()
    if not name:
        raise ServiceError("name_required", "Give the team a name.", field="name")
    return _team_set(team, field="name", value=name[:80], action="team.renamed", actor=actor)


@transaction.atomic
def team_set_require_mfa(*, team: Team, required: bool, actor: User) -> Team:
    if required and not user_has_mfa(actor):
        raise ServiceError(
            "mfa_required_for_owner",
            "Set up two-factor authentication for yourself before requiring it of the team.",
            field="require_mfa",
        )
    return _team_set(team, field="require_mfa", value=required, action="team.mfa_requirement_changed", actor=actor)


def _team_set(team: Team, *, field: str, value: Any, action: str, actor: User) -> Team:
    """Change one of the team's settings: saved and audited (before and after) only if it changes."""
    before = getattr(team, field)
    if before == value:
        return team
    setattr(team, field, value)
    team.save(update_fields=[field])
    audit_record(action=action, actor=actor, team=team, target=team, before={field: before}, after={field: value})
    return team


def team_close(*, team: Team, actor: User) -> bool:
    """The accounts side of deleting a team (billing.services.team_delete runs the whole of it): its tokens and
    invitations end, members who cannot see billing leave, and the team is marked closed. Inside the caller's
    transaction; False if it was closed already."""
    team = Team.objects.select_for_update().get(pk=team.pk)
    if team.deleted_at is not None:
        return False
    now = timezone.now()
    audit_record(
        action="team.deleted",
        actor=actor,
        team=team,
        target=team,
        before={"name": team.name, "slug": team.slug},
    )
    _revoke_tokens(ManagementToken.objects.filter(team=team), reason="The team was deleted.", actor=actor)
    Invitation.objects.filter(team=team).open().update(revoked_at=now)
    Membership.objects.filter(team=team).exclude(role__in=CLOSED_TEAM_ROLES).delete()
    team.deleted_at = now
    team.save(update_fields=["deleted_at"])
    return True


@transaction.atomic
def ownership_transfer(*, team: Team, new_owner: Membership, actor: User) -> None:
    """Make another member the owner; the current owner becomes an admin. One owner at every moment."""
    current = Membership.objects.select_for_update().get(team=team, role=Role.OWNER)
    if current.user_id != actor.pk:
        raise ServiceError("not_owner", "Only the owner can transfer ownership.", status=403)
    new_owner = Membership.objects.select_for_update().get(pk=new_owner.pk, team=team)
    if new_owner.pk == current.pk:
        raise ServiceError("already_owner", "You already own this team.", field="member")
    previous_role = new_owner.role
    current.role = Role.ADMIN
    current.save(update_fields=["role"])
    new_owner.role = Role.OWNER
    new_owner.save(update_fields=["role"])
    audit_record(
        action="team.ownership_transferred",
        actor=actor,
        team=team,
        target=new_owner.user,
        before={"owner": actor.email, "new_owner_role": previous_role},
        after={"owner": new_owner.user.email, "previous_owner_role": Role.ADMIN},
    )
    transaction.on_commit(lambda: emails.role_changed(membership=new_owner, previous_role=previous_role))


# --- members --------------------------------------------------------------------------------


def _lock_member(membership: Membership, actor: Membership | None = None) -> Membership:
    if actor is not None and actor.team_id != membership.team_id:
        raise ServiceError("not_found", "No such member.", status=404)
    return Membership.objects.select_for_update().select_related("user", "team").get(pk=membership.pk)


@transaction.atomic
def member_change_role(*, membership: Membership, role: str, actor: Membership) -> Membership:
    """Change a member's role. Nobody grants above their own role; the owner's role changes only by transfer."""
    membership = _lock_member(membership, actor)
    if role not in Role.values:
        raise ServiceError("invalid_role", f"{role!r} is not a role.", field="role")
    if membership.role == Role.OWNER:
        raise ServiceError(
            "owner_role", "The owner's role changes only by transferring ownership.", field="role", status=403
        )
    if not can_grant(actor.role, role) or not can_grant(actor.role, membership.role):
        raise ServiceError("role_above_own", "You cannot grant a role above your own.", field="role", status=403)
    previous = membership.role
    if previous == role:
        return membership
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        action="member.role_changed",
        actor=actor.user,
        team=membership.team,
        target=membership.user,
        before={"role": previous},
        after={"role": role},
    )
    transaction.on_commit(lambda: emails.role_changed(membership=membership, previous_role=previous))
    return membership


@transaction.atomic
def member_remove(*, membership: Membership, actor: Membership) -> None:
    """Remove a member; it takes effect on their next request (memberships are read on every request)."""
    membership = _lock_member(membership, actor)
    if membership.role == Role.OWNER:
        raise ServiceError(
            "owner_cannot_be_removed", "The owner cannot be removed; ownership must be transferred first.", status=403
        )
    if membership.pk == actor.pk:
        raise ServiceError("use_leave", "To remove yourself, leave the team.", status=400)
    if not can_grant(actor.role, membership.role):
        raise ServiceError("role_above_own", "You cannot remove a member whose role is above yours.", status=403)
    user, team = membership.user, membership.team
    _membership_end(
        membership, action="member.removed", actor=actor.user, reason="Its creator was removed from the team."
    )
    transaction.on_commit(lambda: emails.removed_from_team(user=user, team=team))


@transaction.atomic
def member_leave(*, membership: Membership) -> None:
    membership = _lock_member(membership)
    if membership.role == Role.OWNER:
        raise ServiceError("owner_must_transfer", "Transfer ownership to another member before leaving.", status=400)
    _membership_end(membership, action="member.left", actor=membership.user, reason="Its creator left the team.")


def _membership_end(membership: Membership, *, action: str, actor: User, reason: str) -> None:
    """The membership ends: recorded, its tokens revoked with `reason` (a token never outlives its creator's
    membership), the row deleted."""
    audit_record(
        action=action, actor=actor, team=membership.team, target=membership.user, before={"role": membership.role}
    )
    _revoke_tokens(ManagementToken.objects.filter(membership=membership), reason=reason, actor=actor)
    membership.delete()


# --- invitations ----------------------------------------------------------------------------


def _new_invitation_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, sha256_hex(token)


def _check_may_send_invitation(*, team: Team, inviter: User, now: datetime) -> None:
    """A verified address, and within the per-team and per-inviter sending limits (call with the team row locked)."""
    if not user_email_verified(inviter):
        raise ServiceError(
            "email_unverified",
            "Verify your email address before inviting people (the link is in your inbox; resend it from Account "
            "settings).",
            status=403,
        )
    sends = AuditEvent.objects.filter(action__in=INVITATION_SENDS)
    if sends.filter(team=team, created_at__gt=now - timedelta(hours=1)).count() >= INVITATIONS_PER_TEAM_PER_HOUR:
        raise ServiceError(
            "invitations_throttled",
            f"This team has sent {INVITATIONS_PER_TEAM_PER_HOUR} invitations in the last hour; try again later.",
            status=429,
        )
    if sends.filter(actor=inviter, created_at__gt=now - timedelta(days=1)).count() >= INVITATIONS_PER_INVITER_PER_DAY:
        raise ServiceError(
            "invitations_throttled",
            f"You have sent {INVITATIONS_PER_INVITER_PER_DAY} invitations in the last 24 hours; try again tomorrow.",
            status=429,
        )


def invitation_create(*, team: Team, email: str, role: str, invited_by: Membership) -> tuple[Invitation, str]:
    """Invite an email address with a role. Returns the invitation and its token (the only copy goes in the email).

    Needs a verified address, and is throttled per team and per inviter (INVITATIONS_PER_*)."""
    email = User.objects.normalize_email(email.strip()).lower()
    if role not in Role.values:
        raise ServiceError("invalid_role", f"{role!r} is not a role.", field="role")
    if not can_grant(invited_by.role, role):
        raise ServiceError(
            "role_above_own", "You cannot invite someone with a role above your own.", field="role", status=403
        )
    if Membership.objects.filter(team=team, user__email__iexact=email).exists():
        raise ServiceError("already_member", f"{email} is already a member of this team.", field="email", status=409)
    token, token_hash = _new_invitation_token()
    now = timezone.now()
    try:
        with transaction.atomic():
            Team.objects.select_for_update().filter(pk=team.pk).first()  # one sender at a time: the count holds
            _check_may_send_invitation(team=team, inviter=invited_by.user, now=now)
            # An expired invitation still counts as open in the constraint: close it so a new one can be sent.
            Invitation.objects.filter(team=team, email__iexact=email, expires_at__lte=now).open().update(revoked_at=now)
            invitation = Invitation.objects.create(
                team=team,
                email=email,
                role=role,
                token_hash=token_hash,
                invited_by=invited_by.user,
                created_at=now,
                expires_at=now + INVITATION_LIFETIME,
                last_sent_at=now,
            )
            audit_record(
                action="member.invited",
                actor=invited_by.user,
                team=team,
                target=invitation,
                after={"email": email, "role": role},
            )
    except IntegrityError:
        raise ServiceError(
            "already_invited",
            f"{email} already has a pending invitation; resend it instead.",
            field="email",
            status=409,
        ) from None
    transaction.on_commit(lambda: emails.invitation(invitation=invitation, token=token))
    return invitation, token


@transaction.atomic
def invitation_resend(*, invitation: Invitation, actor: Membership) -> str:
    """Send the invitation again with a new link (the old one stops working) and a fresh 7-day expiry."""
    Team.objects.select_for_update().filter(pk=invitation.team_id).first()  # the team first, as invitation_create
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_open:
        raise ServiceError("not_pending", f"This invitation was already {invitation.status}.", status=409)
    now = timezone.now()
    wait = invitation.last_sent_at + INVITATION_RESEND_INTERVAL - now
    if wait > timedelta(0):
        raise ServiceError(
            "resend_too_soon",
            f"Sent less than a minute ago; try again in {int(wait.total_seconds()) + 1} s.",
            status=429,
        )
    if not can_grant(actor.role, invitation.role):
        raise ServiceError("role_above_own", "You cannot resend an invitation for a role above your own.", status=403)
    _check_may_send_invitation(team=invitation.team, inviter=actor.user, now=now)
    token, invitation.token_hash = _new_invitation_token()
    invitation.last_sent_at = now
    invitation.expires_at = now + INVITATION_LIFETIME
    invitation.save(update_fields=["token_hash", "last_sent_at", "expires_at"])
    audit_record(action="member.invitation_resent", actor=actor.user, team=invitation.team, target=invitation)
    transaction.on_commit(lambda: emails.invitation(invitation=invitation, token=token))
    return token


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: Membership) -> None:
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation.is_open:
        raise ServiceError("not_pending", f"This invitation was already {invitation.status}.", status=409)
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(
        action="member.invitation_revoked",
        actor=actor.user,
        team=invitation.team,
        target=invitation,
        before={"email": invitation.email, "role": invitation.role},
    )


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    """Accept an invitation: single use, unexpired, and only by the invited email address."""
    found = invitation_by_token(token=token)
    if found is None:
        raise ServiceError("invalid_invitation", "This invitation link is not valid.", status=404)
    invitation = Invitation.objects.select_for_update().select_related("team").get(pk=found.pk)
    status = invitation.status
    if status == Invitation.Status.ACCEPTED:
        raise ServiceError("invitation_used", "This invitation has already been used.", status=410)
    if status == Invitation.Status.REVOKED:
        raise ServiceError("invitation_revoked", "This invitation was withdrawn.", status=410)
    if status == Invitation.Status.EXPIRED:
        raise ServiceError("invitation_expired", "This invitation has expired. Ask for a new one.", status=410)
    if user.email.lower() != invitation.email.lower():
        raise ServiceError(
            "wrong_email",
            f"This invitation was sent to {invitation.email}. Sign in with that address to accept it.",
            status=403,
        )
    membership, created = Membership.objects.get_or_create(
        team=invitation.team, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    # Following the emailed link proves the address is theirs.
    EmailAddress.objects.filter(user=user, email__iexact=invitation.email).update(verified=True)
    if created:
        audit_record(
            action="member.joined",
            actor=user,
            team=invitation.team,
            target=user,
            after={"role": membership.role, "invited_by": invitation.invited_by.email if invitation.invited_by else ""},
        )
    return membership


# --- management tokens ----------------------------------------------------------------------


def management_token_create(
    *,
    team: Team,
    name: str,
    scopes: Iterable[str],
    actor: User,
    expires_at: datetime | None = None,
) -> tuple[ManagementToken, str]:
    """Create a token for the team API, acting for the actor's membership (never beyond its role, and revoked with
    it). Returns the token row and the secret, which is never stored."""
    membership = Membership.objects.filter(team=team, user=actor).first()
    if membership is None or not can(membership.role, "tokens.manage"):
        raise ServiceError("forbidden", "Only the team's owner and admins can create management tokens.", status=403)
    if team.require_mfa and not user_has_mfa(actor):
        raise ServiceError(
            "mfa_required",
            "This team requires two-factor authentication: set it up before creating tokens.",
            status=403,
        )
    name = name.strip()
    scopes = sorted(set(scopes))
    if not name:
        raise ServiceError("name_required", "Give the token a name.", field="name")
    if not scopes or any(scope not in TokenScope.values for scope in scopes):
        raise ServiceError("invalid_scopes", "Choose read, write or both.", field="scopes")
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("expiry_in_past", "The expiry must be in the future.", field="expires_at")
    secret, public_id = prefixed_secret(MANAGEMENT_TOKEN_PREFIX)
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=team.pk).first()  # one creation at a time: the count holds
        active = ManagementToken.objects.filter(team=team, revoked_at__isnull=True, membership__isnull=False).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        )
        if active.count() >= settings.TEAM_MAX_TOKENS:
            raise ServiceError(
                "quota_exceeded",
                f"This team has {settings.TEAM_MAX_TOKENS} active API tokens, the most it can have. Revoke tokens "
                "it no longer uses.",
            )
        token = ManagementToken.objects.create(
            team=team,
            membership=membership,
            name=name[:80],
            prefix=f"{MANAGEMENT_TOKEN_PREFIX}{public_id}",
            token_hash=sha256_hex(secret),
            scopes=scopes,
            created_by=actor,
            expires_at=expires_at,
        )
        audit_record(
            action="token.created",
            actor=actor,
            team=team,
            target=token,
            after={"name": token.name, "scopes": scopes, "expires_at": expires_at.isoformat() if expires_at else None},
        )
    return token, secret


@transaction.atomic
def management_token_revoke(*, token: ManagementToken, actor: User | None, reason: str = "") -> None:
    token = ManagementToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        return
    token.revoked_at = timezone.now()
    token.revoked_reason = (reason or (f"Revoked by {actor.email}." if actor else "Revoked."))[:120]
    token.save(update_fields=["revoked_at", "revoked_reason"])
    audit_record(
        action="token.revoked",
        actor=actor,
        team=token.team,
        target=token,
        after={"reason": token.revoked_reason},
    )


def _revoke_tokens(tokens: QuerySet[ManagementToken], *, reason: str, actor: User) -> None:
    """Revoke those of `tokens` not revoked yet, one audit event each (inside the caller's transaction)."""
    for token in tokens.filter(revoked_at__isnull=True):
        management_token_revoke(token=token, actor=actor, reason=reason)
