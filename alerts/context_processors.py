from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from endpoints.models import TrafficStop


def traffic_stops(request: HttpRequest) -> dict[str, Any]:
    """The team's traffic stops in force, for the banner on every team page (one query, only if a page shows it)."""
    team = getattr(request, "team", None)
    if team is None:
        return {}
    return {
        "traffic_stops": SimpleLazyObject(
            lambda: list(TrafficStop.objects.filter(team=team).select_related("endpoint", "key").order_by("pk"))
        )
    }
