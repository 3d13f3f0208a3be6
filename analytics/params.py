"""URL parameters the dashboard and the relay explorer read alike: the display time zone, the endpoint and key
filters, and the query string that reproduces a view. A bad value is dropped with a message, never a 500."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from accounts.models import Team
from analytics import selectors
from analytics.selectors import Named
from project.params import is_time_zone


def time_zone(value: str | None, *, default: str | None, errors: list[str]) -> str:
    """The display time zone: the URL's, else the user's, else UTC; an unknown one is UTC, with a message."""
    tz = value or default or "UTC"
    if is_time_zone(tz):
        return tz
    errors.append(f"Unknown time zone {tz[:64]!r}; showing UTC.")
    return "UTC"


@dataclass(frozen=True)
class OwnFilters:
    """The endpoint and key a view is filtered to, each one of the team's own (None: not filtered)."""

    endpoint: Named | None = None
    key: Named | None = None


def own_filters(
    *,
    team: Team | None,
    endpoint: str | None,
    key: str | None,
    show_key_ids: bool,
    params: dict[str, str],
    errors: list[str],
) -> OwnFilters:
    """The endpoint (public id) and key (key id) filters, kept only when they name the team's own: a role without
    keys.view (show_key_ids=False) cannot filter by key. Those kept go into `params`, the others into `errors`."""
    found_endpoint = found_key = None
    if endpoint:
        found_endpoint = selectors.endpoint_named(team=team, public_id=endpoint)
        if found_endpoint is None:
            errors.append("That endpoint is not one of this team's; the filter was removed.")
        else:
            params["endpoint"] = endpoint
    if key and not show_key_ids:
        errors.append("Your role does not show API keys, so the key filter was removed.")
    elif key:
        found_key = selectors.key_named(team=team, key_id=key)
        if found_key is None:
            errors.append("That key is not one of this team's; the filter was removed.")
        else:
            params["key"] = key
    return OwnFilters(found_endpoint, found_key)


def querystring(params: Mapping[str, str], overrides: Mapping[str, str | None]) -> str:
    """The query string of a view's normalized parameters with some changed (None or "" drops one)."""
    merged = {**params, **overrides}
    return urlencode({k: v for k, v in merged.items() if v})
