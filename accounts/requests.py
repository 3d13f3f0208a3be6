"""Typed requests for team views: accounts.permissions.team_view (HTML) and TeamPermission (DRF) attach the team and
the caller's membership; mypy checks every use through these."""

from __future__ import annotations

from rest_framework.request import Request

from accounts.models import Membership, Team, User
from project.requests import HtmxRequest


class UserRequest(HtmxRequest):
    """A signed-in person's request (login_required)."""

    user: User  # narrower than HttpRequest's User | AnonymousUser: login_required ensures it


class TeamRequest(UserRequest):
    """A request under /t/<team>/ that team_view let through: a member of `team`, with `membership`."""

    team: Team
    membership: Membership


class TeamAPIRequest(Request):
    """A DRF request TeamPermission let through (a member's session or a management token acting as one)."""

    team: Team
    membership: Membership
