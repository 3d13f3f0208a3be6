"""The security matrix: every URL is covered by the permission table; every role gets exactly what the
table grants (403 otherwise); an outsider gets 404 on everything of another team and changes nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.models import Membership, Role
from accounts.permissions import ACTIONS, can, listed_as_non_team
from accounts.services import invitation_create, management_token_create
from alerts.health import alert_rule_create
from alerts.services import budget_create
from analytics.ingest import ingest
from endpoints.services import api_key_create, endpoint_create, gateway_credential_create
from tests.fixtures import make_invoice
from webhooks.services import webhook_endpoint_create, webhook_test_send


@dataclass(frozen=True)
class Route:
    name: str
    pattern: str
    view: str
    actions: dict[str, str] | None  # None: not team-scoped

    def __str__(self) -> str:
        return self.name or self.pattern


def _walk(resolver: URLResolver, prefix: str = "") -> list[tuple[str, URLPattern]]:
    found = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            found += _walk(entry, prefix + str(entry.pattern))
        else:
            found.append((prefix + str(entry.pattern), entry))
    return found


def _routes() -> list[Route]:
    routes = []
    for pattern, entry in _walk(get_resolver()):
        callback = entry.callback
        view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        target = view_class or callback
        dotted = f"{target.__module__}.{target.__qualname__}"
        actions = getattr(callback, "permission_actions", None)
        if actions is None and view_class is not None:
            actions = getattr(view_class, "required_actions", None) or None
        routes.append(Route(entry.name or "", pattern, dotted, dict(actions) if actions else None))
    return routes


ROUTES = _routes()
TEAM_ROUTES = [r for r in ROUTES if r.actions is not None]


def test_every_view_is_team_scoped_through_the_table_or_listed_as_not_team_scoped():
    uncovered = [
        f"{r.pattern} → {r.view}" for r in ROUTES if r.actions is None and not listed_as_non_team(r.view, r.pattern)
    ]
    assert uncovered == [], "add these views to accounts.permissions (team_view / required_actions / NON_TEAM_VIEWS)"


def test_team_routes_exist_and_name_only_known_actions():
    assert len(TEAM_ROUTES) >= 20
    for route in TEAM_ROUTES:
        assert "<slug:team_slug>" in route.pattern, route
        assert set(route.actions.values()) <= set(ACTIONS), route


def test_every_action_is_used_by_some_route_or_reserved_for_later_issues():
    used = {action for route in TEAM_ROUTES for action in route.actions.values()}
    assert set(ACTIONS) - used == set()


# --- building real URLs for the team routes -----------------------------------------------------


@pytest.fixture
def objects(team_a, owner_a, member_of):
    """Objects of team A that team routes point at (a member, an invitation, a token)."""
    target = member_of(Role.VIEWER, email="target@a.example")
    owner_membership = Membership.objects.get(team=team_a, user=owner_a)
    invitation, _ = invitation_create(
        team=team_a, email="invitee@x.example", role=Role.VIEWER, invited_by=owner_membership
    )
    token, _ = management_token_create(team=team_a, name="ci", scopes=["read"], actor=owner_a)
    endpoint = endpoint_create(team=team_a, name="Route target", services=["eth-mainnet"], actor=owner_a)
    key, _ = api_key_create(endpoint=endpoint, name="route target", actor=owner_a)
    gateway, _secret = gateway_credential_create(name="routes")
    relay_id = "route-relay-1"
    record = {"id": relay_id, "ts": timezone.now().isoformat(), "key_id": key.key_id, "endpoint_id": endpoint.public_id,
              "service": "eth-mainnet", "method": "eth_call", "status": 200, "latency_ms": 12, "req_bytes": 1,
              "resp_bytes": 1, "units": 1, "region": "eu"}  # fmt: skip
    batch = ingest(gateway=gateway, idempotency_key="routes", body=json.dumps(record).encode())
    invoice = make_invoice(team_a)
    budget = budget_create(team=team_a, actor=owner_a, scope="team", name="Route target", amount=1000)
    alert_rule = alert_rule_create(team=team_a, actor=owner_a, name="Route target", metric="error_rate", threshold=5)
    webhook, _secret = webhook_endpoint_create(
        team=team_a, url="http://127.0.0.1:9/hook", event_types=[], actor=owner_a
    )
    delivery = webhook_test_send(endpoint=webhook, actor=owner_a)
    return {
        "budget_id": budget.pk,
        "alert_rule_id": alert_rule.pk,
        "webhook_id": webhook.pk,
        "delivery_id": delivery.pk,
        "invoice_id": invoice.pk,
        "membership_id": Membership.objects.get(user=target).pk,
        "invitation_id": invitation.pk,
        "token_id": token.pk,
        "endpoint_id": endpoint.public_id,
        "key_id": key.key_id,
        "batch_id": batch.batch_id,
        "relay_id": relay_id,
    }


STATIC_PARAMETERS = {"<str:name>": "cards"}  # route parameters that name no team object (a dashboard panel)


def _url(route: Route, team_slug: str, objects: dict[str, int]) -> str:
    url = "/" + route.pattern.replace("<slug:team_slug>", team_slug).replace("^", "").replace("$", "")
    for parameter, value in STATIC_PARAMETERS.items():
        url = url.replace(parameter, value)
    for key, value in objects.items():
        for converter in ("int", "str", "path"):
            url = url.replace(f"<{converter}:{key}>", str(value))
    assert "<" not in url, f"no object for a parameter of {route.pattern}"
    return url


def _request(client, method: str, url: str):
    send = getattr(client, method.lower())
    return send(url, content_type="application/json") if url.startswith("/api/") else send(url)


MATRIX = [
    pytest.param(route, method, action, role, id=f"{route}-{method}-{role.value}")
    for route in TEAM_ROUTES
    for method, action in route.actions.items()
    for role in Role
]


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method", "action", "role"), MATRIX)
def test_role_gets_exactly_what_the_table_grants(
    route, method, action, role, team_a, owner_a, member_of, objects, client_for
):
    user = owner_a if role == Role.OWNER else member_of(role)
    response = _request(client_for(user), method, _url(route, team_a.slug, objects))
    if can(role, action):
        assert response.status_code not in (403, 404, 405), f"{role} should be allowed {action}: {response.status_code}"
    else:
        assert response.status_code == 403, f"{role} should be refused {action}: {response.status_code}"


def _snapshot() -> dict[str, list]:
    skip = {"sessions.session"}
    return {
        model._meta.label_lower: list(model._base_manager.order_by("pk").values())
        for model in apps.get_models()
        if model._meta.label_lower not in skip and model._meta.managed
    }


OUTSIDER_CASES = [
    pytest.param(route, method, id=f"{route}-{method}") for route in TEAM_ROUTES for method in route.actions
]


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method"), OUTSIDER_CASES)
def test_outsider_gets_404_and_changes_nothing(route, method, team_a, team_b, outsider_b, objects, client_for):
    client = client_for(outsider_b)
    before = _snapshot()
    # Team A's URL, and team A's objects under the outsider's own team B.
    assert _request(client, method, _url(route, team_a.slug, objects)).status_code == 404
    own_team_response = _request(client, method, _url(route, team_b.slug, objects))
    if any(f":{key}>" in route.pattern for key in objects):
        assert own_team_response.status_code == 404
    assert _snapshot() == before


API_CASES = [case for case in OUTSIDER_CASES if case.values[0].pattern.startswith("api/")]


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method"), API_CASES)
def test_another_teams_management_token_gets_404(route, method, team_a, team_b, outsider_b, objects, client):
    _token, secret = management_token_create(team=team_b, name="b", scopes=["read", "write"], actor=outsider_b)
    before = _snapshot()
    response = getattr(client, method.lower())(
        _url(route, team_a.slug, objects), HTTP_AUTHORIZATION=f"Bearer {secret}", content_type="application/json"
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    snapshot = _snapshot()
    for label in ("accounts.managementtoken",):  # last_used_at moves on the caller's own token; nothing else does
        snapshot.pop(label), before.pop(label)
    assert snapshot == before


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_sign_in(client, team_a):
    response = client.get(f"/t/{team_a.slug}/members/")
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/?next=")


@pytest.mark.django_db
def test_unlisted_methods_are_405(client_for, owner_a, team_a):
    client = client_for(owner_a)
    assert client.put(f"/t/{team_a.slug}/settings/delete").status_code == 405
    assert client.delete(f"/t/{team_a.slug}/members/").status_code == 405


# The issue's role descriptions, written out independently of accounts.permissions.ACTIONS.
SPEC_ALLOWED = {
    Role.OWNER: set(ACTIONS) - {"team.leave"},  # everything; leaving needs a transfer first
    Role.ADMIN: {
        "team.view", "team.update", "team.leave", "members.view", "members.manage", "audit.view", "tokens.manage",
        "endpoints.view", "endpoints.manage", "keys.view", "keys.manage", "usage.view",
        "billing.view", "billing.payment_method", "billing.manage", "budgets.view", "budgets.manage", "webhooks.view",
        "webhooks.manage", "alerts.view", "alerts.manage",
    },
    Role.DEVELOPER: {
        "team.view", "team.leave", "endpoints.view", "endpoints.manage", "keys.view", "keys.manage", "usage.view",
        "budgets.view", "webhooks.view", "alerts.view", "alerts.manage",
    },
    Role.FINANCE: {"team.view", "team.leave", "usage.view", "billing.view", "billing.payment_method", "budgets.view",
                   "budgets.manage", "webhooks.view", "alerts.view"},
    Role.VIEWER: {"team.view", "team.leave", "endpoints.view", "keys.view", "usage.view", "budgets.view",
                  "alerts.view"},
}  # fmt: skip


@pytest.mark.parametrize("role", list(Role))
def test_the_table_matches_the_documented_roles(role):
    assert {action for action in ACTIONS if can(role, action)} == SPEC_ALLOWED[role]


def test_readme_role_table_is_the_permission_table():
    from accounts.permissions import role_table_markdown
    from tests.fixtures import BASE_DIR

    assert role_table_markdown() in (BASE_DIR / "README.md").read_text()
