"""Emails about membership: invitation, role changed, removed. Text and HTML, through Django's mail framework.

The invitation's token exists only here and in the recipient's inbox, so it is sent from the
web process (on commit), never handed to a Celery task.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from accounts.models import Invitation, Membership, Role, Team, User

logger = logging.getLogger(__name__)


def send(*, template: str, to: str, context: dict[str, object], folder: str = "accounts/email") -> None:
    context = {"site_name": settings.SITE_NAME, "site_url": settings.SITE_URL, **context}
    subject = render_to_string(f"{folder}/{template}_subject.txt", context).strip()
    text = render_to_string(f"{folder}/{template}_message.txt", context)
    html = render_to_string(f"{folder}/{template}_message.html", context)
    message = EmailMultiAlternatives(subject=subject, body=text, to=[to])
    message.attach_alternative(html, "text/html")
    try:
        message.send()
    except Exception:  # the change is committed; a mail outage must not turn it into an error page
        logger.exception("could not send %s email", template, extra={"template": template})


def invitation(*, invitation: Invitation, token: str) -> None:
    link = settings.SITE_URL + reverse("invitation_detail", kwargs={"token": token})
    send(
        template="invitation",
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
        template="role_changed",
        to=membership.user.email,
        context={
            "team": membership.team,
            "role": Role(membership.role).label,
            "previous_role": Role(previous_role).label,
            "link": settings.SITE_URL + reverse("team_home", kwargs={"team_slug": membership.team.slug}),
        },
    )


def removed_from_team(*, user: User, team: Team) -> None:
    send(template="removed", to=user.email, context={"team_name": team.name, "user": user})
