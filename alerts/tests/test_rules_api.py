"""The health alert rules REST API (management tokens): the page's services behind it, refusals per field, read-only
state, roles, and another team's rules 404."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import AuditEvent, Membership, Role
from accounts.services import management_token_create
from alerts.health import alert_rule_create
from alerts.models import AlertRule
from endpoints.services import endpoint_create


def token_client(team, user, scopes=("read", "write")) -> Client:
    _token, secret = management_token_create(team=team, name="ci", scopes=list(scopes), actor=user)
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


@pytest.fixture
def api(team_a, owner_a):
    return token_client(team_a, owner_a)


@pytest.fixture
def base(team_a):
    return f"/api/v1/teams/{team_a.slug}/alert-rules/"


@pytest.fixture
def rule(team_a, owner_a):
    return alert_rule_create(team=team_a, actor=owner_a, name="Errors", metric="error_rate", threshold=5)


def test_create_read_change_and_delete(api, base, team_a, owner_a, usage, member_of):
    developer = member_of(Role.DEVELOPER, "dev@a.example")
    membership = Membership.objects.get(team=team_a, user=developer)
    body = {"name": "Wallet p95", "metric": "p95_latency", "threshold": "800", "window_minutes": 10,
            "endpoint": usage.endpoint.public_id, "service": "eth-mainnet", "min_relays": 50,
            "notify_roles": ["owner"], "notify_members": [str(membership.pk)],
            "state": "firing", "last_value": "1"}  # fmt: skip  # read-only fields: ignored
    created = api.post(base, body, content_type="application/json")
    assert created.status_code == 201, created.content
    answer = created.json()
    rule = AlertRule.objects.get(team=team_a)
    assert answer | {"state_since": None, "evaluated_at": None, "created_at": None} == {
        "id": rule.pk, "name": "Wallet p95", "metric": "p95_latency", "threshold": "800.00", "window_minutes": 10,
        "endpoint_id": usage.endpoint.public_id, "service": "eth-mainnet", "min_relays": 50, "enabled": True,
        "notify_roles": ["owner"], "notify_members": ["dev@a.example"], "state": "ok", "state_since": None,
        "last_value": None, "last_relays": 0, "evaluated_at": None, "created_at": None,
    }  # fmt: skip
    assert answer["evaluated_at"] is not None  # evaluated at once (no traffic: nothing to measure)

    assert api.get(base).json() == [api.get(f"{base}{rule.pk}/").json()]
    change = {"threshold": "1200.5", "endpoint": None, "enabled": False}
    changed = api.patch(f"{base}{rule.pk}/", change, content_type="application/json")
    assert changed.status_code == 200, changed.content
    after = changed.json()
    assert (after["threshold"], after["endpoint_id"], after["enabled"]) == ("1200.50", None, False)
    assert after["service"] == "eth-mainnet"  # fields left out keep their value
    assert api.delete(f"{base}{rule.pk}/").status_code == 204
    assert not AlertRule.objects.exists()
    assert api.get(f"{base}{rule.pk}/").status_code == 404
    actions = AuditEvent.objects.filter(team=team_a, action__startswith="alert_rule.").values_list("action", flat=True)
    assert sorted(actions) == ["alert_rule.created", "alert_rule.deleted", "alert_rule.updated"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metric": "error_rate", "threshold": "5"}, "name"),
        ({"name": "x", "threshold": "5"}, "metric"),
        ({"name": "x", "metric": "uptime", "threshold": "5"}, "metric"),
        ({"name": "x", "metric": "error_rate"}, "threshold"),
        ({"name": "x", "metric": "error_rate", "threshold": "lots"}, "threshold"),
        ({"name": "x", "metric": "error_rate", "threshold": "-1"}, "threshold"),
        ({"name": "x", "metric": "error_rate", "threshold": "100"}, "threshold"),  # the service's rule
        ({"name": "x", "metric": "error_rate", "threshold": "5", "window_minutes": 0}, "window_minutes"),
        ({"name": "x", "metric": "error_rate", "threshold": "5", "window_minutes": 1441}, "window_minutes"),
        ({"name": "x", "metric": "error_rate", "threshold": "5", "min_relays": 0}, "min_relays"),
        ({"name": "x", "metric": "error_rate", "threshold": "5", "endpoint": "ep_nope"}, "endpoint"),
        ({"name": "x", "metric": "error_rate", "threshold": "5", "service": "dogecoin"}, "service"),
        ({"name": "x", "metric": "error_rate", "threshold": "5", "notify_roles": ["boss"]}, "notify_roles"),
        ({"name": "x", "metric": "error_rate", "threshold": "5", "notify_members": ["999999"]}, "notify_members"),
        ({"name": "x", "metric": "error_rate", "threshold": "5", "notify_members": ["a@b.example"]}, "notify_members"),
        ({"name": "x", "metric": "error_rate", "threshold": "5", "notify_members": ["nobody"]}, "notify_members"),
    ],
)
def test_bad_input_is_refused_per_field_and_nothing_is_created(api, base, body, field):
    response = api.post(base, body, content_type="application/json")
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == "invalid"
    assert list(answer["errors"]) == [field]
    assert not AlertRule.objects.exists()
    assert not AuditEvent.objects.filter(action="alert_rule.created").exists()


def test_another_teams_endpoint_is_refused_like_a_missing_one(api, base, team_b, outsider_b):
    theirs = endpoint_create(team=team_b, name="B", services=["eth-mainnet"], actor=outsider_b)
    body = {"name": "x", "metric": "error_rate", "threshold": "5", "endpoint": theirs.public_id}
    response = api.post(base, body, content_type="application/json")
    assert (response.status_code, response.json()["errors"]) == (400, {"endpoint": ["The team has no such endpoint."]})


def test_a_bad_change_changes_nothing(api, base, rule):
    before = AlertRule.objects.filter(pk=rule.pk).values().get()
    response = api.patch(f"{base}{rule.pk}/", {"name": "New", "metric": "error_rate", "threshold": "150"},
                         content_type="application/json")  # fmt: skip
    assert (response.status_code, list(response.json()["errors"])) == (400, ["threshold"])
    assert AlertRule.objects.filter(pk=rule.pk).values().get() == before


def test_another_teams_rules_are_404_and_nothing_changes(team_a, team_b, owner_a, outsider_b, client_for, rule):
    before = list(AlertRule.objects.values())
    for client, slug in (
        (token_client(team_b, outsider_b), team_b.slug),  # team A's rule under the outsider's own team
        (token_client(team_b, outsider_b), team_a.slug),
        (client_for(outsider_b), team_a.slug),
    ):
        url = f"/api/v1/teams/{slug}/alert-rules/{rule.pk}/"
        for method in ("get", "patch", "delete"):
            response = getattr(client, method)(url, {"name": "x"}, content_type="application/json")
            assert (response.status_code, response.json()["code"]) == (404, "not_found"), f"{method} {url}"
    assert token_client(team_b, outsider_b).get(f"/api/v1/teams/{team_b.slug}/alert-rules/").json() == []
    assert list(AlertRule.objects.values()) == before


@pytest.mark.parametrize(
    ("role", "read", "write"),
    [(Role.ADMIN, 200, 201), (Role.DEVELOPER, 200, 201), (Role.FINANCE, 200, 403), (Role.VIEWER, 200, 403)],
)
def test_roles(role, read, write, member_of, client_for, base, rule):
    client = client_for(member_of(role))
    assert client.get(base).status_code == read
    assert client.get(f"{base}{rule.pk}/").status_code == read
    body = {"name": "New", "metric": "error_rate", "threshold": "5"}
    assert client.post(base, body, content_type="application/json").status_code == write
    patched = client.patch(f"{base}{rule.pk}/", {"name": "Renamed"}, content_type="application/json")
    assert patched.status_code == (200 if write == 201 else write)
    assert client.delete(f"{base}{rule.pk}/").status_code == (204 if write == 201 else write)
    assert AlertRule.objects.filter(name="New").exists() is (write == 201)


def test_a_read_only_token_cannot_write(team_a, owner_a, base):
    read_only = token_client(team_a, owner_a, scopes=("read",))
    assert read_only.get(base).status_code == 200
    body = {"name": "x", "metric": "error_rate", "threshold": "5"}
    assert read_only.post(base, body, content_type="application/json").status_code == 403
    assert not AlertRule.objects.exists()


def test_the_list_reads_a_fixed_number_of_queries(api, base, team_a, owner_a, usage, django_assert_max_num_queries):
    for n in range(5):
        alert_rule_create(team=team_a, actor=owner_a, name=f"R{n}", metric="error_rate", threshold=n,
                          endpoint=usage.endpoint, notify_members=[owner_a.email])  # fmt: skip
    with django_assert_max_num_queries(12):
        assert len(api.get(base).json()) == 5


def test_the_openapi_schema_documents_the_alert_rules_api(client):
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    prefix = "/api/v1/teams/{team_slug}/alert-rules/"
    assert {path: sorted(operations) for path, operations in paths.items() if path.startswith(prefix)} == {
        prefix: ["get", "post"],
        prefix + "{alert_rule_id}/": ["delete", "get", "patch"],
    }
    created = paths[prefix]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"$ref": "#/components/schemas/AlertRuleOutput"}
