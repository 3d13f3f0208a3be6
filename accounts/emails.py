"""Emails about membership: invitation, role changed, removed (project.mail sends them). Services queue them with
transaction.on_commit, so a rolled-back change sends nothing and no row lock waits on the mail server.

The invitation's token exists only here and in the recipient's inbox, so it is sent from the
web process (on commit), never handed to a Celery task.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from accounts.models import Invitation, Membership, Role, Team, User
from project.mail import send


def invitation(*, invitation: Invitation, token: str) -> None:
    link = settings.SITE_URL + reverse("invitation_detail", kwargs={"token": token})
    send(
        template="accounts/email/invitation",
        to=invitation.email,
        context={
            "team": invitation.team,
            "role": Role(invitation.role).label,
            "inviter": invitation.invited_by,
            "link": link,
            "expires_at": invitation.expires_at,
        },
    )


def role_changed(*, membership: Membership, previous_role: str) -> None:
    send(
        template="accounts/email/role_changed",
        to=membership.user.email,
        context={
            "team": membership.team,
            "role": Role(membership.role).label,
            "previous_role": Role(previous_role).label,
            "link": settings.SITE_URL + reverse("team_home", kwargs={"team_slug": membership.team.slug}),
        },
    )


def removed_from_team(*, user: User, team: Team) -> None:
    send(template="accounts/email/removed", to=user.email, context={"team_name": team.name, "user": user})
