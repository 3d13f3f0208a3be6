from __future__ import annotations

from functools import cache
from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from accounts.selectors import switcher_memberships


def teams(request: HttpRequest) -> dict[str, Any]:
    """The team switcher's data: live teams and deleted teams whose invoices the user may still read (one query
    for both, only if a template reads them)."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    user = request.user
    load = cache(lambda: switcher_memberships(user=user))
    return {
        "user_memberships": SimpleLazyObject(lambda: load()[0]),
        "closed_memberships": SimpleLazyObject(lambda: load()[1]),
        "current_team": getattr(request, "team", None),
        "membership": getattr(request, "membership", None),
    }
