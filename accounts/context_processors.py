from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from accounts.selectors import team_list_for_user


def teams(request: HttpRequest) -> dict[str, Any]:
    """The team switcher's data: the user's memberships (one query, only if a template reads it)."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {
        "user_memberships": SimpleLazyObject(lambda: list(team_list_for_user(user=request.user))),  # type: ignore[arg-type]
        "current_team": getattr(request, "team", None),
        "membership": getattr(request, "membership", None),
    }
