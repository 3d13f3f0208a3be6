"""Who hears about a budget or an alert rule: members by role, and members chosen by name (alerts.models.Notified)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from accounts.models import Membership, Role, Team, User
from project.errors import ServiceError


class RecipientsError(ServiceError):
    def __init__(self, message: str):
        super().__init__("invalid_recipients", message, status=400, field="notify_members")


def recipients_clean(
    *, team: Team, roles: Iterable[str] | None, members: Iterable[Any] | None
) -> tuple[list[str], list[User]]:
    """The roles (in the catalogue's order) and the users (members of the team, given as users, pks or emails) an
    alert may go to. Raises ServiceError (field notify_roles / notify_members) naming what is wrong."""
    chosen_roles = set(roles or [])
    unknown = sorted(chosen_roles - set(Role.values))
    if unknown:
        raise ServiceError(
            "invalid_recipients", f"Unknown role: {', '.join(unknown)}.", status=400, field="notify_roles"
        )
    pks: set[int] = set()
    emails: set[str] = set()
    for member in members or []:
        if isinstance(member, User):
            pks.add(member.pk)
        elif isinstance(member, int) or (
            isinstance(member, str) and member.strip().isascii() and member.strip().isdigit()
        ):
            pks.add(int(member))
        elif isinstance(member, str) and "@" in member:
            emails.add(member.strip().lower())
        else:
            raise RecipientsError("Choose members by id or email address.")
    users = {m.user.pk: m.user for m in Membership.objects.filter(team=team).select_related("user")}
    by_email = {user.email.lower(): user for user in users.values()}
    if not pks <= set(users) or not emails <= set(by_email):
        raise RecipientsError("Every recipient must be a member of the team.")
    found = {pk: users[pk] for pk in pks} | {by_email[e].pk: by_email[e] for e in emails}
    return [role for role in Role.values if role in chosen_roles], [found[pk] for pk in sorted(found)]


def recipients(*, team: Team, roles: Iterable[str], member_pks: Iterable[int]) -> list[str]:
    """The email addresses: active members holding one of `roles`, and the chosen members still in the team."""
    roles, member_pks = set(roles), set(member_pks)
    members = Membership.objects.filter(team=team, user__is_active=True).select_related("user").order_by("pk")
    return list(dict.fromkeys(m.user.email for m in members if m.role in roles or m.user_id in member_pks))


def recipients_of(notified: Any) -> list[str]:
    """The addresses for a budget or an alert rule (a Notified)."""
    member_pks = [user.pk for user in notified.notify_members.all()]
    return recipients(team=notified.team, roles=notified.notify_roles, member_pks=member_pks)
