"""The webhooks REST API (management tokens): the signing secret shown once, refusals per field with a code, the
delivery log paged, test events and resends, roles, and another team's webhooks 404 with nothing changed."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from accounts.models import AuditEvent, Membership, Role
from accounts.services import management_token_create
from webhooks.models import (
    ALERT_FIRING,
    BUDGET_EXCEEDED,
    WEBHOOK_TEST,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

pytestmark = pytest.mark.django_db

URL = "http://127.0.0.1:9/hook"  # tests allow loopback (tests/settings.py); nothing is sent: the queue is a list


def token_client(team, user, scopes=("read", "write")) -> Client:
    _token, secret = management_token_create(team=team, name="ci", scopes=list(scopes), actor=user)
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


@pytest.fixture
def api(team_a, owner_a):
    return token_client(team_a, owner_a)


@pytest.fixture
def base(team_a):
    return f"/api/v1/teams/{team_a.slug}/webhooks/"


@pytest.fixture
def endpoint(make_endpoint):
    return make_endpoint(URL, description="Ops channel")[0]


@pytest.fixture
def failed_delivery(endpoint, team_a):
    event = WebhookEvent.objects.create(team=team_a, type=BUDGET_EXCEEDED, payload={"summary": "Over"})
    return WebhookDelivery.objects.create(
        event=event, endpoint=endpoint, status=DeliveryStatus.FAILED, attempts=3, response_status=500
    )


def test_the_secret_is_shown_once_and_never_read_back(api, base, team_a):
    created = api.post(
        base,
        {"url": URL, "event_types": [BUDGET_EXCEEDED, ALERT_FIRING], "description": "Ops"},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created["Cache-Control"] == "no-store"
    body = created.json()
    endpoint = WebhookEndpoint.objects.get(team=team_a)
    assert body == {
        "id": endpoint.pk,
        "url": URL,
        "description": "Ops",
        "event_types": [BUDGET_EXCEEDED, ALERT_FIRING],
        "format": "gatehouse",
        "enabled": True,
        "disabled_reason": "",
        "secret_hint": endpoint.secret_hint,
        "previous_secret_valid_until": None,
        "created_at": body["created_at"],
        "secret": endpoint.secret,
    }
    assert body["secret"].startswith("ghw_")
    listed = api.get(base).json()
    assert [w["id"] for w in listed] == [endpoint.pk]
    read = api.get(f"{base}{endpoint.pk}/")
    for answer in (listed[0], read.json()):
        assert "secret" not in answer
        assert endpoint.secret not in str(answer)
    assert AuditEvent.objects.filter(action="webhook.created", team=team_a).count() == 1


def test_change_rotate_test_resend_and_delete(
    api, base, team_a, endpoint, failed_delivery, queue, django_capture_on_commit_callbacks
):
    url = f"{base}{endpoint.pk}/"
    changed = api.patch(
        url, {"event_types": [ALERT_FIRING], "format": "slack", "description": ""}, content_type="application/json"
    )
    assert changed.status_code == 200
    assert (changed.json()["event_types"], changed.json()["format"], changed.json()["description"]) == (
        [ALERT_FIRING],
        "slack",
        "",
    )
    old_secret = endpoint.secret
    rotated = api.post(f"{url}rotate-secret/")
    assert rotated.status_code == 200
    assert rotated["Cache-Control"] == "no-store"
    assert rotated.json()["secret"] not in (old_secret, "")
    assert rotated.json()["previous_secret_valid_until"] is not None
    endpoint.refresh_from_db()
    assert endpoint.signing_secrets() == [rotated.json()["secret"], old_secret]

    with django_capture_on_commit_callbacks(execute=True):
        tested = api.post(f"{url}test/")
    assert tested.status_code == 201
    test_delivery = tested.json()
    assert (test_delivery["webhook_id"], test_delivery["event"]["type"], test_delivery["status"]) == (
        endpoint.pk,
        WEBHOOK_TEST,
        "pending",
    )
    assert queue.delayed == [test_delivery["id"]]
    assert api.get(f"{base}deliveries/{test_delivery['id']}/").json() == test_delivery

    with django_capture_on_commit_callbacks(execute=True):
        resent = api.post(f"{base}deliveries/{failed_delivery.pk}/resend/")
    assert (resent.status_code, resent.json()["status"]) == (200, "pending")
    assert queue.delayed == [test_delivery["id"], failed_delivery.pk]
    assert resent.json()["event"]["id"] == failed_delivery.event.event_id  # the same event, the same id
    again = api.post(f"{base}deliveries/{failed_delivery.pk}/resend/")
    assert (again.status_code, again.json()["code"]) == (409, "not_failed")

    disabled = api.patch(url, {"enabled": False}, content_type="application/json").json()
    assert (disabled["enabled"], disabled["disabled_reason"]) == (False, "Disabled by alice@a.example")
    refused = api.post(f"{url}test/")
    assert (refused.status_code, refused.json()["code"]) == (409, "endpoint_disabled")

    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    assert list(AuditEvent.objects.filter(team=team_a, action__startswith="webhook.").values_list("action", flat=True)
                .order_by("pk")) == [
        "webhook.created", "webhook.updated", "webhook.secret_rotated", "webhook.test_sent", "webhook.delivery_resent",
        "webhook.updated", "webhook.deleted",
    ]  # fmt: skip


def test_the_delivery_log_is_paged_newest_first(api, base, team_a, endpoint, django_assert_max_num_queries):
    for n in range(5):
        event = WebhookEvent.objects.create(team=team_a, type=BUDGET_EXCEEDED, payload={"n": n})
        WebhookDelivery.objects.create(event=event, endpoint=endpoint)
    with django_assert_max_num_queries(8):
        first = api.get(f"{base}{endpoint.pk}/deliveries/?limit=2").json()
    assert first["count"] == 5
    assert [d["event"]["data"]["n"] for d in first["results"]] == [4, 3]
    assert first["previous"] is None
    assert first["next"].endswith(f"/api/v1/teams/{team_a.slug}/webhooks/{endpoint.pk}/deliveries/?limit=2&offset=2")
    last = api.get(f"{base}{endpoint.pk}/deliveries/?limit=2&offset=4").json()
    assert ([d["event"]["data"]["n"] for d in last["results"]], last["next"]) == ([0], None)
    assert len(api.get(f"{base}{endpoint.pk}/deliveries/").json()["results"]) == 5  # default page: 50


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"url": "not a url"}, 400, "url_invalid", "url"),
        ({"url": "ftp://example.com/hook"}, 400, "url_invalid", "url"),
        ({"url": "https://user:pw@example.com/hook"}, 400, "url_invalid", "url"),
        ({"url": "http://10.0.0.5/hook"}, 400, "url_refused", "url"),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, 400, "url_refused", "url"),
        ({"url": "https://" + "a" * 2000 + ".example/"}, 400, "url_too_long", "url"),
        ({"url": ""}, 400, "invalid", "url"),
        ({}, 400, "invalid", "url"),
        ({"url": URL, "event_types": ["budget.exceeded", "nope.happened"]}, 400, "invalid", "event_types"),
        ({"url": URL, "event_types": "budget.exceeded"}, 400, "invalid", "event_types"),
        ({"url": URL, "format": "xml"}, 400, "invalid", "format"),
        ({"url": URL, "description": "x" * 201}, 400, "invalid", "description"),
    ],
)
def test_bad_input_is_refused_per_field_and_nothing_is_created(api, base, body, status, code, field):
    response = api.post(base, body, content_type="application/json")
    assert response.status_code == status
    answer = response.json()
    assert answer["code"] == code
    if code == "invalid":
        assert list(answer["errors"]) == [field]
    else:
        assert answer["field"] == field
    assert not WebhookEndpoint.objects.exists()
    assert not AuditEvent.objects.filter(action="webhook.created").exists()


def test_a_loopback_address_is_refused_where_loopback_is_not_allowed(api, base):
    with override_settings(OUTGOING_ALLOW_LOOPBACK=False):
        response = api.post(base, {"url": "https://127.0.0.1/hook"}, content_type="application/json")
    assert (response.status_code, response.json()["code"], response.json()["field"]) == (400, "url_refused", "url")
    assert "loopback" in response.json()["detail"]


def test_a_bad_change_changes_nothing(api, base, endpoint):
    before = WebhookEndpoint.objects.filter(pk=endpoint.pk).values().get()
    response = api.patch(
        f"{base}{endpoint.pk}/", {"url": "http://10.1.2.3/", "description": "new"}, content_type="application/json"
    )
    assert (response.status_code, response.json()["code"]) == (400, "url_refused")
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).values().get() == before


def test_another_teams_webhooks_are_404_and_nothing_changes(
    team_a, team_b, outsider_b, client_for, endpoint, failed_delivery, queue
):
    before = (list(WebhookEndpoint.objects.values()), list(WebhookDelivery.objects.values()))
    for client, slug in (
        (token_client(team_b, outsider_b), team_b.slug),  # team A's objects under the outsider's own team
        (token_client(team_b, outsider_b), team_a.slug),
        (client_for(outsider_b), team_a.slug),
    ):
        base = f"/api/v1/teams/{slug}/webhooks/"
        calls = [
            ("get", f"{base}{endpoint.pk}/"),
            ("patch", f"{base}{endpoint.pk}/"),
            ("delete", f"{base}{endpoint.pk}/"),
            ("post", f"{base}{endpoint.pk}/rotate-secret/"),
            ("post", f"{base}{endpoint.pk}/test/"),
            ("get", f"{base}{endpoint.pk}/deliveries/"),
            ("get", f"{base}deliveries/{failed_delivery.pk}/"),
            ("post", f"{base}deliveries/{failed_delivery.pk}/resend/"),
        ]
        for method, url in calls:
            response = getattr(client, method)(url, {"description": "x"}, content_type="application/json")
            assert (response.status_code, response.json()["code"]) == (404, "not_found"), f"{method} {url}"
    assert token_client(team_b, outsider_b).get(f"/api/v1/teams/{team_b.slug}/webhooks/").json() == []
    assert (list(WebhookEndpoint.objects.values()), list(WebhookDelivery.objects.values())) == before
    assert queue.delayed == []


@pytest.mark.parametrize(
    ("role", "read", "write"),
    [
        (Role.ADMIN, 200, 201),
        (Role.DEVELOPER, 200, 403),
        (Role.FINANCE, 200, 403),
        (Role.VIEWER, 403, 403),
    ],
)
def test_roles(role, read, write, team_a, member_of, client_for, base, endpoint):
    client = client_for(member_of(role))
    assert client.get(base).status_code == read
    assert client.get(f"{base}{endpoint.pk}/deliveries/").status_code == read
    assert client.post(base, {"url": URL}, content_type="application/json").status_code == write
    assert client.patch(f"{base}{endpoint.pk}/", {"description": "x"}, content_type="application/json").status_code == (
        200 if write == 201 else write
    )
    assert WebhookEndpoint.objects.filter(description="x").exists() is (write == 201)


def test_a_token_acts_with_its_creators_role_and_scope(team_a, member_of, owner_a, base):
    admin = member_of(Role.ADMIN)
    developer_token = token_client(team_a, admin)
    Membership.objects.filter(team=team_a, user=admin).update(role=Role.DEVELOPER)  # demoted after creating it
    refused = developer_token.post(base, {"url": URL}, content_type="application/json")
    assert refused.status_code == 403
    assert "creator's role (Developer)" in refused.json()["detail"]
    assert developer_token.get(base).status_code == 200
    read_only = token_client(team_a, owner_a, scopes=("read",))
    assert read_only.post(base, {"url": URL}, content_type="application/json").status_code == 403
    assert not WebhookEndpoint.objects.exists()


def test_the_openapi_schema_documents_the_webhooks_api(client):
    paths = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    prefix = "/api/v1/teams/{team_slug}/webhooks/"
    assert {path: sorted(operations) for path, operations in paths.items() if path.startswith(prefix)} == {
        prefix: ["get", "post"],
        prefix + "{webhook_id}/": ["delete", "get", "patch"],
        prefix + "{webhook_id}/rotate-secret/": ["post"],
        prefix + "{webhook_id}/test/": ["post"],
        prefix + "{webhook_id}/deliveries/": ["get"],
        prefix + "deliveries/{delivery_id}/": ["get"],
        prefix + "deliveries/{delivery_id}/resend/": ["post"],
    }
    created = paths[prefix]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"$ref": "#/components/schemas/WebhookWithSecretOutput"}
    listed = paths[prefix + "{webhook_id}/deliveries/"]["get"]
    assert {p["name"] for p in listed["parameters"]} >= {"limit", "offset"}
