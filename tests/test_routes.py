"""The URL walk, widened: every route the project has — team pages, APIs, operator pages, allauth, the gateway —
is requested anonymously, by a signed-in stranger, and with hostile values in every path parameter, by every method.
A new route is covered the day it is added: none may answer with a server error, nothing private opens without
credentials, and staff-only pages stay staff-only. (The role-by-action matrix is in test_permissions.py.)"""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.permissions import NON_TEAM_VIEWS
from tests.test_permissions import ROUTES, Route

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "patch", "delete")
# Routes anyone may open without signing in (and what they are).
PUBLIC = (
    "",  # the home page
    "healthz",
    "readyz",
    "api/schema/",
    "api/docs/",
    "invitations/",  # the emailed link: the token is the credential (an unknown one is a 404 page)
    "billing/stripe/webhook",  # Stripe's signature is the credential (an unsigned POST is a 400)
    "accounts/",  # sign-in, sign-up, password reset, email confirmation
)
HOSTILE = ["0", "9" * 40, "²", "..", "'\"<>", "x" * 300, "null", "key_%ff"]


def _concrete(route: Route, value: str) -> str:
    path = re.sub(r"<(?:\w+:)?(\w+)>", value, route.pattern)
    path = re.sub(r"\(\?P<\w+>[^)]*\)", value, path)  # allauth's regex routes
    return "/" + path.replace("^", "").replace("$", "").replace("\\", "")


def _is_public(route: Route) -> bool:
    literal = _concrete(route, "x").lstrip("/")
    return any(literal == p or (p and literal.startswith(p)) for p in PUBLIC)


ALL = [pytest.param(route, id=str(route) or route.pattern) for route in ROUTES]


@pytest.mark.parametrize("route", ALL)
def test_no_route_answers_anyone_with_a_server_error(route, team_a, owner_a, make_user):
    stranger = Client()
    stranger.force_login(make_user("stranger@example.com"))
    owner = Client()
    owner.force_login(owner_a)
    callers = {"anonymous": Client(), "stranger": stranger, "owner": owner}
    parameters = set(re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", route.pattern)) - {("team_slug", "")}
    for value in ["x", *(HOSTILE if parameters else [])]:
        url = _concrete(route, value).replace(f"/t/{value}/", f"/t/{team_a.slug}/", 1)
        url = url.replace(f"/teams/{value}/", f"/teams/{team_a.slug}/", 1)
        for who, client in callers.items() if value == "x" else [("owner", owner)]:
            for method in METHODS:
                response = getattr(client, method)(url)
                assert response.status_code < 500, f"{method.upper()} {url} as {who}: {response.status_code}"


@pytest.mark.parametrize("route", [r for r in ALL if not _is_public(r.values[0])])
def test_nothing_private_opens_without_credentials(route, team_a):
    url = _concrete(route, "x").replace("/t/x/", f"/t/{team_a.slug}/").replace("/teams/x/", f"/teams/{team_a.slug}/")
    for method in METHODS:
        response = getattr(Client(), method)(url)
        assert response.status_code in (302, 400, 401, 403, 404, 405), f"{method.upper()} {url}: {response.status_code}"
        if response.status_code == 302:  # to sign in (the admin's own login page hands over to allauth's)
            assert response.url.startswith(("/accounts/login/", "/admin/login/")) or url == "/admin/logout/", (
                f"{method.upper()} {url} → {response.url}"
            )


@pytest.mark.parametrize(
    "route", [r for r in ALL if r.values[0].view.startswith(("analytics.views.operator_", "billing.views.operator_"))]
)
def test_operator_pages_are_staff_only(route, owner_a, client_for):
    url = _concrete(route, "1").replace("/panels/1", "/panels/cards")
    for method in ("get", "post"):
        assert getattr(client_for(owner_a), method)(url).status_code in (403, 405), url


def test_every_listed_exception_still_names_a_route():
    # A stale entry in NON_TEAM_VIEWS would silently exempt a future view: each must match a route today.
    def names(prefix: str, route: Route) -> bool:
        return route.pattern.startswith(prefix[4:]) if prefix.startswith("url:") else route.view.startswith(prefix)

    unused = [prefix for prefix in NON_TEAM_VIEWS if not any(names(prefix, route) for route in ROUTES)]
    assert unused == []
