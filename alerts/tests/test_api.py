"""The budgets REST API: a management token sets, reads, changes and deletes budgets through the same services as the
Budgets page; each budget comes with where it stands this period; bad input is named field by field; caps answer
409; other teams' budgets, endpoints and keys stay out of reach; every change is audited; the schema lists it all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from accounts.models import AuditEvent, Membership, Role
from accounts.services import management_token_create, member_change_role
from alerts import services
from alerts.api import BudgetDetailAPI
from alerts.models import Budget
from alerts.tests.test_budgets import CALL, _aggregate, _push
from endpoints.services import api_key_create, endpoint_create
from endpoints.tests.test_endpoint_views import api  # noqa: F401 - the owner's read-write token, as endpoints' tests

pytestmark = pytest.mark.django_db


def budgets_url(team) -> str:
    return f"/api/v1/teams/{team.slug}/budgets/"


def budget_url(team, budget_id: int) -> str:
    return f"{budgets_url(team)}{budget_id}/"


def _budget_rows(team) -> list[tuple]:
    return list(Budget.objects.filter(team=team).order_by("pk").values_list("pk", "name", "amount", "thresholds"))


def _budget_audit(team) -> list[tuple[str, str, str]]:
    events = AuditEvent.objects.filter(team=team, action__startswith="budget.").order_by("pk")
    return list(events.values_list("action", "target_id", "actor_email"))


@pytest.fixture
def token_as(team_a, owner_a, member_of):
    """token_as(role) → a client with a read-write token acting as `role`. Only owners and admins create tokens, and
    a token acts with its creator's current role: an admin makes it, then gets `role`."""

    def make(role: str) -> Client:
        creator = member_of(Role.ADMIN, email=f"{role}-token@a.example")
        _token, secret = management_token_create(team=team_a, name=role, scopes=["read", "write"], actor=creator)
        if role != Role.ADMIN:
            member_change_role(
                membership=Membership.objects.get(team=team_a, user=creator),
                role=role,
                actor=Membership.objects.get(team=team_a, user=owner_a),
            )
        return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")

    return make


def test_a_token_sets_lists_reads_changes_and_deletes_a_budget_each_change_audited(
    api,  # noqa: F811
    team_a,
    owner_a,
    teammate_a,
    usage,
):
    teammate = Membership.objects.get(team=team_a, user=teammate_a)
    created = api.post(
        budgets_url(team_a),
        {"name": "Server key", "scope": "key", "key": usage.key.key_id, "period": "day", "amount": 1000,
         "thresholds": [100, 50], "action": "stop", "notify_roles": ["finance", "owner"],
         "notify_members": [str(teammate.pk), owner_a.email]},
        content_type="application/json",
    )  # fmt: skip
    assert created.status_code == 201, created.json()
    body = created.json()
    budget = Budget.objects.get(team=team_a)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert body == {
        "id": budget.pk,
        "name": "Server key",
        "scope": "key",
        "endpoint_id": usage.endpoint.public_id,
        "key_id": usage.key.key_id,
        "measure": "units",
        "period": "day",
        "amount": "1000.00",
        "thresholds": [50, 100],
        "action": "stop",
        "forecast": False,
        "notify_roles": ["owner", "finance"],
        "notify_members": sorted([owner_a.email, teammate_a.email]),
        "origin": "budget",
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
        "standing": {
            "used": "0.000000",
            "percent": "0.00",
            "period_start": today.isoformat().replace("+00:00", "Z"),
            "period_end": (today + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
            "forecast_at": None,
            "traffic_stopped": False,
        },
        "firings": [],
    }
    assert datetime.fromisoformat(body["created_at"]) == budget.created_at

    listed = api.get(budgets_url(team_a))
    assert listed.status_code == 200
    assert listed.json() == [{key: value for key, value in body.items() if key != "firings"}]
    assert api.get(budget_url(team_a, budget.pk)).json() == body

    changed = api.patch(
        budget_url(team_a, budget.pk), {"name": "Renamed", "amount": "250.5", "notify_members": []},
        content_type="application/json",
    )  # fmt: skip
    assert changed.status_code == 200
    assert (changed.json()["name"], changed.json()["amount"], changed.json()["notify_members"]) == (
        "Renamed", "250.50", []
    )  # fmt: skip
    assert changed.json()["thresholds"] == [50, 100]  # what was not sent stays

    assert api.delete(budget_url(team_a, budget.pk)).status_code == 204
    assert api.get(budget_url(team_a, budget.pk)).status_code == 404
    assert not Budget.objects.exists()
    # The token acts for its creator, who is the actor of record.
    target = str(budget.pk)
    assert _budget_audit(team_a) == [
        ("budget.created", target, owner_a.email),
        ("budget.updated", target, owner_a.email),
        ("budget.deleted", target, owner_a.email),
    ]
    updated = AuditEvent.objects.get(action="budget.updated")
    assert (updated.before["amount"], updated.after["amount"]) == ("1000.00", "250.50")


def test_each_budget_carries_its_standing_its_stop_and_its_firings(
    api,  # noqa: F811
    team_a,
    owner_a,
    usage,
    django_capture_on_commit_callbacks,
):
    key_budget = services.budget_create(
        team=team_a, actor=owner_a, scope="key", key=usage.key, name="Key", amount=2 * CALL, thresholds=[50, 100],
        period="day", action="stop",
    )  # fmt: skip
    team_budget = services.budget_create(team=team_a, actor=owner_a, scope="team", name="Team", amount=8 * CALL)
    _push(usage, 2)
    _aggregate(django_capture_on_commit_callbacks)

    standings = {b["id"]: b["standing"] for b in api.get(budgets_url(team_a)).json()}
    assert {pk: (s["used"], s["percent"], s["traffic_stopped"]) for pk, s in standings.items()} == {
        key_budget.pk: (f"{2 * CALL}.000000", "100.00", True),
        team_budget.pk: (f"{2 * CALL}.000000", "25.00", False),
    }
    detail = api.get(budget_url(team_a, key_budget.pk)).json()
    firings = detail["firings"]
    assert [(f["kind"], f["threshold"], f["used"], f["amount"], f["forecast_at"]) for f in firings] == [
        ("threshold", 100, f"{2 * CALL}.000000", f"{2 * CALL}.00", None),
        ("threshold", 50, f"{2 * CALL}.000000", f"{2 * CALL}.00", None),
    ]
    assert {f["period_start"] for f in firings} == {detail["standing"]["period_start"]}
    assert all(f["fired_at"] for f in firings)

    raised = api.patch(budget_url(team_a, key_budget.pk), {"amount": 4 * CALL}, content_type="application/json")
    assert raised.json()["standing"]["traffic_stopped"] is False  # raising the amount lifts the stop at once
    assert raised.json()["standing"]["percent"] == "50.00"


def test_the_list_costs_the_same_queries_however_many_budgets(
    api,  # noqa: F811
    team_a,
    owner_a,
    teammate_a,
    usage,
    django_assert_max_num_queries,
):
    def add(n: int) -> None:
        for i in range(n):
            services.budget_create(team=team_a, actor=owner_a, scope="team", name=f"T{i}", amount=10,
                                   notify_members=[teammate_a.email])  # fmt: skip
            services.budget_create(team=team_a, actor=owner_a, scope="endpoint", endpoint=usage.endpoint,
                                   name=f"E{i}", amount=10)  # fmt: skip
            services.budget_create(team=team_a, actor=owner_a, scope="key", key=usage.key, name=f"K{i}", amount=10,
                                   period="day")  # fmt: skip

    add(1)
    with django_assert_max_num_queries(8):
        assert len(api.get(budgets_url(team_a)).json()) == 3
    add(5)
    with django_assert_max_num_queries(8):
        assert len(api.get(budgets_url(team_a)).json()) == 18


@pytest.fixture
def theirs(team_b, outsider_b):
    """Team B's endpoint and key."""
    endpoint = endpoint_create(team=team_b, name="B", services=["eth-mainnet"], actor=outsider_b)
    key, _secret = api_key_create(endpoint=endpoint, name="b", actor=outsider_b)
    return endpoint, key


BAD_INPUT = [
    pytest.param({"amount": 0}, "amount", "Enter an amount above zero.", id="zero-amount"),
    pytest.param({"amount": "lots"}, "amount", "A valid number is required.", id="amount-not-a-number"),
    pytest.param({"amount": "1.234"}, "amount", "Ensure that there are no more than 2 decimal places.",
                 id="amount-below-a-cent"),
    pytest.param({"scope": "planet"}, "scope", '"planet" is not a valid choice.', id="unknown-scope"),
    pytest.param({"period": "day"}, "period", "Daily budgets are for keys; a team or endpoint budget runs over the "
                 "billing month.", id="daily-team-budget"),
    pytest.param({"scope": "key", "key": "THEIRS"}, "key", "Choose one of the team's live keys.",
                 id="another-teams-key"),
    pytest.param({"scope": "key", "key": "key_doesnotexist"}, "key", "Choose one of the team's live keys.",
                 id="no-such-key"),
    pytest.param({"scope": "endpoint", "endpoint": "THEIRS"}, "endpoint",
                 "Choose one of the team's endpoints.", id="another-teams-endpoint"),
    pytest.param({"scope": "endpoint"}, "endpoint", "Choose one of the team's endpoints.", id="endpoint-missing"),
    pytest.param({"endpoint": "THEIRS"}, "endpoint", "Name an endpoint only for a budget with scope endpoint.",
                 id="endpoint-on-a-team-budget"),
    pytest.param({"thresholds": []}, "thresholds", "Give at least one threshold, e.g. 100.", id="no-thresholds"),
    pytest.param({"thresholds": [0]}, "thresholds", "Ensure this value is greater than or equal to 1.",
                 id="zero-threshold"),
    pytest.param({"notify_roles": ["boss"]}, "notify_roles", '"boss" is not a valid choice.', id="unknown-role"),
    pytest.param({"notify_members": ["999999"]}, "notify_members", "No member of the team has the id 999999.",
                 id="unknown-member-id"),
    pytest.param({"notify_members": ["charlie@b.example"]}, "notify_members",
                 "Every recipient must be a member of the team.", id="outsider-email"),
    pytest.param({"notify_members": ["²"]}, "notify_members", "Give each member as an email address or an id.",
                 id="member-neither-id-nor-email"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "field", "message"), BAD_INPUT)
def test_bad_input_is_a_400_naming_each_field_and_changes_nothing(
    api,  # noqa: F811
    team_a,
    usage,
    theirs,
    fields,
    field,
    message,
):
    their_endpoint, their_key = theirs
    body = {"name": "x", "scope": "team", "amount": 100, **fields}
    for target, their_id in (("endpoint", their_endpoint.public_id), ("key", their_key.key_id)):
        if body.get(target) == "THEIRS":
            body[target] = their_id
    response = api.post(budgets_url(team_a), body, content_type="application/json")
    assert response.status_code == 400
    error = response.json()
    if isinstance(error["errors"][field], dict):  # a list's entries are named by their index
        error["errors"][field] = [m for messages in error["errors"][field].values() for m in messages]
    assert (error["code"], error["errors"]) == ("invalid", {field: [message]})
    assert not Budget.objects.exists()
    assert _budget_audit(team_a) == []


def test_changes_are_checked_like_new_budgets(api, team_a, owner_a):  # noqa: F811
    budget = services.budget_create(team=team_a, actor=owner_a, scope="team", name="Team", amount=100)
    before = _budget_rows(team_a)
    for change, field in [({"amount": -1}, "amount"), ({"period": "day"}, "period"), ({"name": " "}, "name")]:
        response = api.patch(budget_url(team_a, budget.pk), change, content_type="application/json")
        assert response.status_code == 400, change
        assert list(response.json()["errors"]) == [field]
    assert _budget_rows(team_a) == before
    assert [action for action, _target, _actor in _budget_audit(team_a)] == ["budget.created"]


def test_a_caps_budget_is_changed_with_its_cap_so_the_api_answers_409(api, team_a, owner_a, usage):  # noqa: F811
    cap = services.budget_create(
        team=team_a, actor=owner_a, scope="key", key=usage.key, name="Daily cap · server", amount=500, period="day",
        thresholds=[100], action="stop", origin=Budget.Origin.KEY_CAP,
    )  # fmt: skip
    before = _budget_rows(team_a)
    assert api.get(budget_url(team_a, cap.pk)).json()["origin"] == "key_cap"
    for response in (
        api.patch(budget_url(team_a, cap.pk), {"amount": 900}, content_type="application/json"),
        api.patch(budget_url(team_a, cap.pk), {}, content_type="application/json"),
        api.delete(budget_url(team_a, cap.pk)),
    ):
        assert response.status_code == 409
        assert response.json()["code"] == "budget_is_a_cap"
        assert "key's page" in response.json()["detail"]
    assert _budget_rows(team_a) == before


def test_another_teams_budgets_are_404_and_stay_as_they_are(team_a, owner_a, team_b, outsider_b):
    ours = services.budget_create(team=team_a, actor=owner_a, scope="team", name="A's", amount=100)
    _token, secret = management_token_create(team=team_b, name="b", scopes=["read", "write"], actor=outsider_b)
    outsider = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    before = _budget_rows(team_a)
    for url in (budget_url(team_a, ours.pk), budget_url(team_b, ours.pk)):  # team A's URL, or A's id under B
        assert outsider.get(url).status_code == 404
        assert outsider.patch(url, {"amount": 1}, content_type="application/json").status_code == 404
        assert outsider.delete(url).status_code == 404
    assert outsider.get(budgets_url(team_a)).status_code == 404
    created = outsider.post(budgets_url(team_a), {"name": "x", "scope": "team", "amount": 1},
                            content_type="application/json")  # fmt: skip
    assert created.status_code == 404
    assert outsider.get(budgets_url(team_b)).json() == []
    assert _budget_rows(team_a) == before
    assert _budget_audit(team_a) == [("budget.created", str(ours.pk), owner_a.email)]


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
def test_developer_and_viewer_tokens_read_budgets_but_cannot_change_them(token_as, team_a, owner_a, role):
    budget = services.budget_create(team=team_a, actor=owner_a, scope="team", name="Team", amount=100)
    client = token_as(role)
    before = _budget_rows(team_a)
    assert [b["id"] for b in client.get(budgets_url(team_a)).json()] == [budget.pk]
    assert client.get(budget_url(team_a, budget.pk)).json()["name"] == "Team"
    for response in (
        client.post(budgets_url(team_a), {"name": "x", "scope": "team", "amount": 1}, content_type="application/json"),
        client.patch(budget_url(team_a, budget.pk), {"amount": 1}, content_type="application/json"),
        client.delete(budget_url(team_a, budget.pk)),
    ):
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"
    assert _budget_rows(team_a) == before


def test_finance_tokens_manage_budgets(token_as, team_a):
    created = token_as(Role.FINANCE).post(
        budgets_url(team_a), {"name": "Finance's", "scope": "team", "amount": 100}, content_type="application/json"
    )
    assert created.status_code == 201
    assert created.json()["notify_roles"] == ["owner", "admin", "finance"]  # the default recipients


def test_a_read_only_token_cannot_change_budgets(team_a, owner_a):
    _token, secret = management_token_create(team=team_a, name="r", scopes=["read"], actor=owner_a)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get(budgets_url(team_a)).status_code == 200
    refused = client.post(budgets_url(team_a), {"name": "x", "scope": "team", "amount": 1},
                          content_type="application/json")  # fmt: skip
    assert refused.status_code == 403
    assert not Budget.objects.exists()


def test_the_change_input_is_exactly_what_the_service_lets_change():
    assert set(BudgetDetailAPI.BudgetUpdateInput().fields) == set(services.EDITABLE_FIELDS)


def test_the_schema_documents_the_budgets_api(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert set(paths["/api/v1/teams/{team_slug}/budgets/"]) == {"get", "post"}
    detail = paths["/api/v1/teams/{team_slug}/budgets/{budget_id}/"]
    assert set(detail) == {"get", "patch", "delete"}
    for operation in (*paths["/api/v1/teams/{team_slug}/budgets/"].values(), *detail.values()):
        assert operation["tags"] == ["budgets"]
        assert operation["summary"]
    assert {"409", "400"} <= set(detail["patch"]["responses"])
    assert "409" in detail["delete"]["responses"]
    standing = schema["components"]["schemas"]["StandingOutput"]["properties"]
    assert set(standing) == {"used", "percent", "period_start", "period_end", "forecast_at", "traffic_stopped"}
    firing = schema["components"]["schemas"]["FiringOutput"]["properties"]
    assert {"kind", "threshold", "used", "amount", "fired_at", "forecast_at"} <= set(firing)
