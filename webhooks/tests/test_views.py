"""The Webhooks pages: who may see and do what, the secret shown once, refusals next to their field, and another
team's webhooks are 404 with nothing changed."""

from __future__ import annotations

import pytest
from django.test import override_settings

from accounts.models import AuditEvent, Role
from webhooks import services
from webhooks.models import (
    ALERT_FIRING,
    BUDGET_EXCEEDED,
    WEBHOOK_TEST,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookFormat,
)

pytestmark = pytest.mark.django_db

URL = "http://127.0.0.1:9/hook"  # tests allow loopback (tests/settings.py); nothing is sent in these tests


@pytest.fixture
def endpoint(make_endpoint):
    return make_endpoint(URL, description="Ops channel")[0]


@pytest.fixture
def failed_delivery(endpoint, team_a):
    event = WebhookEvent.objects.create(team=team_a, type=BUDGET_EXCEEDED, payload={})
    return WebhookDelivery.objects.create(
        event=event, endpoint=endpoint, status=DeliveryStatus.FAILED, attempts=3, response_status=500
    )


def _user(role, owner_a, member_of):
    return owner_a if role == Role.OWNER else member_of(role)


@pytest.mark.parametrize(
    ("role", "view", "manage"),
    [
        (Role.OWNER, 200, True),
        (Role.ADMIN, 200, True),
        (Role.DEVELOPER, 200, False),
        (Role.FINANCE, 200, False),
        (Role.VIEWER, 403, False),
    ],
)
def test_roles(role, view, manage, team_a, owner_a, member_of, client_for, endpoint, failed_delivery, queue):
    client = client_for(_user(role, owner_a, member_of))
    base = f"/t/{team_a.slug}/webhooks/"
    assert client.get(base).status_code == view
    assert client.get(f"{base}{endpoint.pk}/").status_code == view
    if view == 200:
        page = client.get(base).content.decode()
        assert (">Add webhook<" in page) is manage
        assert (f'href="{base}"' in client.get(f"/t/{team_a.slug}/").content.decode()) is True  # the sidebar link
        detail = client.get(f"{base}{endpoint.pk}/").content.decode()
        assert ("Send test event" in detail) is manage
        assert (">Resend<" in detail) is manage
    posts = {
        base: {"url": URL, "format": "gatehouse"},
        f"{base}{endpoint.pk}/": {"url": URL, "format": "gatehouse"},
        f"{base}{endpoint.pk}/enable": {"enabled": "1"},
        f"{base}{endpoint.pk}/rotate-secret": {},
        f"{base}{endpoint.pk}/test": {},
        f"{base}deliveries/{failed_delivery.pk}/resend": {},
        f"{base}{endpoint.pk}/delete": {},  # last: it removes the endpoint
    }
    for url, data in posts.items():
        status = client.post(url, data).status_code
        assert (status not in (403, 404, 405)) if manage else status == 403, f"{role} POST {url}: {status}"
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists() is not manage


def test_a_viewer_has_no_sidebar_link(team_a, member_of, client_for):
    page = client_for(member_of(Role.VIEWER)).get(f"/t/{team_a.slug}/").content.decode()
    assert "/webhooks/" not in page


def test_another_teams_webhooks_are_404_and_nothing_changes(
    team_a, team_b, outsider_b, client_for, endpoint, failed_delivery, queue
):
    client = client_for(outsider_b)
    for team in (team_a.slug, team_b.slug):  # team A's URLs, and team A's ids under the outsider's own team
        base = f"/t/{team}/webhooks/"
        assert client.get(f"{base}{endpoint.pk}/").status_code == 404
        paths = ["/", "/enable", "/rotate-secret", "/test", "/delete"]
        for path in [f"{endpoint.pk}{p}" for p in paths] + [f"deliveries/{failed_delivery.pk}/resend"]:
            assert client.post(base + path, {"url": "http://127.0.0.1:9/x", "format": "slack"}).status_code == 404
    assert client.get(f"/t/{team_a.slug}/webhooks/").status_code == 404
    endpoint_before = WebhookEndpoint.objects.values().get(pk=endpoint.pk)
    assert WebhookEndpoint.objects.values().get(pk=endpoint.pk) == endpoint_before
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == DeliveryStatus.FAILED
    assert WebhookEvent.objects.filter(type=WEBHOOK_TEST).count() == 0
    assert queue.delayed == []
    assert team_b.slug not in "".join(WebhookEndpoint.objects.values_list("team__slug", flat=True))


def test_the_secret_is_shown_once(team_a, owner_a, client_for):
    client = client_for(owner_a)
    response = client.post(
        f"/t/{team_a.slug}/webhooks/",
        {"url": URL, "description": "Pager", "event_types": [BUDGET_EXCEEDED, ALERT_FIRING], "format": "slack"},
    )
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.url, endpoint.description, endpoint.format) == (URL, "Pager", WebhookFormat.SLACK)
    assert endpoint.event_types == [BUDGET_EXCEEDED, ALERT_FIRING]
    assert endpoint.secret.startswith("ghw_")
    assert endpoint.secret in response.content.decode()
    assert "copy its signing secret now" in response.content.decode()
    for page in (f"/t/{team_a.slug}/webhooks/", f"/t/{team_a.slug}/webhooks/{endpoint.pk}/"):
        content = client.get(page).content.decode()
        assert endpoint.secret not in content
        assert f"{endpoint.secret_hint}…" in content
    audit = AuditEvent.objects.get(action="webhook.created")
    assert endpoint.secret not in str(audit.after)
    assert audit.after["url"] == URL


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://10.0.0.1/hook", "10.0.0.1 points at a private address (10.0.0.1)"),
        ("https://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("https://127.0.0.1:9/hook", "a loopback address"),
        ("http://example.com/hook", "Use an https:// URL"),
        ("ftp://example.com/hook", "Use an http:// or https:// URL."),
        ("https://no-such-host.invalid/hook", "no-such-host.invalid does not resolve"),
        ("", "This field is required."),
    ],
)
@override_settings(OUTGOING_ALLOW_LOOPBACK=False)
def test_a_bad_url_is_refused_next_to_its_field_and_creates_nothing(url, message, team_a, owner_a, client_for):
    response = client_for(owner_a).post(f"/t/{team_a.slug}/webhooks/", {"url": url, "format": "gatehouse"})
    assert response.status_code == 400
    content = response.content.decode()
    assert 'id="id_url_error"' in content
    assert message in content
    assert "copy its signing secret" not in content
    assert WebhookEndpoint.objects.count() == 0
    assert not AuditEvent.objects.filter(action="webhook.created").exists()


def test_an_unknown_event_type_is_refused(team_a, owner_a, client_for):
    response = client_for(owner_a).post(
        f"/t/{team_a.slug}/webhooks/", {"url": URL, "format": "gatehouse", "event_types": ["webhook.test"]}
    )
    assert response.status_code == 400
    assert WebhookEndpoint.objects.count() == 0


def test_settings_can_be_changed_and_a_refusal_keeps_what_is_stored(team_a, owner_a, client_for, endpoint):
    client = client_for(owner_a)
    url = f"/t/{team_a.slug}/webhooks/{endpoint.pk}/"
    response = client.post(url, {"url": URL + "2", "event_types": [ALERT_FIRING], "format": "slack"})
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.event_types, endpoint.format, endpoint.description) == (
        URL + "2",
        [ALERT_FIRING],
        "slack",
        "",
    )
    audit = AuditEvent.objects.get(action="webhook.updated")
    assert audit.before == {"url": URL, "description": "Ops channel", "event_types": [], "format": "gatehouse"}
    with override_settings(OUTGOING_ALLOW_LOOPBACK=False):
        refused = client.post(url, {"url": "https://10.1.1.1/", "format": "slack"})
    assert refused.status_code == 400
    assert "a private address" in refused.content.decode()
    endpoint.refresh_from_db()
    assert endpoint.url == URL + "2"


def test_disable_and_enable(team_a, owner_a, client_for, endpoint):
    client = client_for(owner_a)
    url = f"/t/{team_a.slug}/webhooks/{endpoint.pk}/enable"
    assert client.post(url).status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "Disabled by alice@a.example")
    page = client.get(f"/t/{team_a.slug}/webhooks/").content.decode()
    assert ">disabled<" in page
    client.post(url, {"enabled": "1"})
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (True, "")
    assert list(AuditEvent.objects.filter(action="webhook.updated").values_list("after", flat=True)) == [
        {"enabled": False},
        {"enabled": True},
    ]


def test_rotating_shows_the_new_secret_once(team_a, owner_a, client_for, endpoint):
    old_secret = endpoint.secret
    response = client_for(owner_a).post(f"/t/{team_a.slug}/webhooks/{endpoint.pk}/rotate-secret")
    endpoint.refresh_from_db()
    assert endpoint.secret != old_secret
    assert endpoint.previous_secret == old_secret
    assert endpoint.secret in response.content.decode()
    assert response["Cache-Control"] == "no-store"
    assert endpoint.secret not in client_for(owner_a).get(f"/t/{team_a.slug}/webhooks/{endpoint.pk}/").content.decode()
    assert AuditEvent.objects.filter(action="webhook.secret_rotated", target_id=str(endpoint.pk)).exists()


def test_send_a_test_event(team_a, owner_a, client_for, endpoint, queue, django_capture_on_commit_callbacks):
    client = client_for(owner_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/t/{team_a.slug}/webhooks/{endpoint.pk}/test", follow=True)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.event.type == WEBHOOK_TEST
    assert queue.delayed == [delivery.pk]
    assert f"Test event {delivery.event.event_id} queued" in response.content.decode()
    assert AuditEvent.objects.filter(action="webhook.test_sent").count() == 1


def test_test_events_are_throttled(team_a, owner_a, client_for, endpoint, queue):
    client = client_for(owner_a)
    for _ in range(services.TEST_SENDS_PER_MINUTE):
        client.post(f"/t/{team_a.slug}/webhooks/{endpoint.pk}/test")
    response = client.post(f"/t/{team_a.slug}/webhooks/{endpoint.pk}/test", follow=True)
    assert "enough test events for a minute" in response.content.decode()
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == services.TEST_SENDS_PER_MINUTE


def test_a_disabled_endpoint_gets_no_test_event(team_a, owner_a, client_for, endpoint):
    services.webhook_endpoint_update(endpoint=endpoint, actor=owner_a, enabled=False)
    response = client_for(owner_a).post(f"/t/{team_a.slug}/webhooks/{endpoint.pk}/test", follow=True)
    assert "Enable the endpoint before sending it a test event." in response.content.decode()
    assert WebhookDelivery.objects.count() == 0


def test_resend_a_failed_delivery(
    team_a, owner_a, client_for, failed_delivery, queue, django_capture_on_commit_callbacks
):
    client = client_for(owner_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/t/{team_a.slug}/webhooks/deliveries/{failed_delivery.pk}/resend")
    assert response.status_code == 302
    assert response.url == f"/t/{team_a.slug}/webhooks/{failed_delivery.endpoint_id}/"
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == DeliveryStatus.PENDING
    assert queue.delayed == [failed_delivery.pk]
    assert AuditEvent.objects.get(action="webhook.delivery_resent").after["event"] == failed_delivery.event.event_id


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (DeliveryStatus.DELIVERED, "This event was delivered; it is not sent twice."),
        (DeliveryStatus.RETRYING, "This delivery is still being retried."),
    ],
)
def test_only_a_failed_delivery_is_resent(status, message, team_a, owner_a, client_for, failed_delivery, queue):
    WebhookDelivery.objects.filter(pk=failed_delivery.pk).update(status=status)
    response = client_for(owner_a).post(
        f"/t/{team_a.slug}/webhooks/deliveries/{failed_delivery.pk}/resend", follow=True
    )
    assert message in response.content.decode()
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == status
    assert queue.delayed == []


def test_delete(team_a, owner_a, client_for, endpoint, failed_delivery):
    response = client_for(owner_a).post(f"/t/{team_a.slug}/webhooks/{endpoint.pk}/delete")
    assert response.status_code == 302
    assert response.url == f"/t/{team_a.slug}/webhooks/"
    assert WebhookEndpoint.objects.count() == 0
    assert WebhookDelivery.objects.count() == 0
    assert AuditEvent.objects.get(action="webhook.deleted").before["url"] == URL


def test_the_delete_button_asks_first(team_a, owner_a, client_for, endpoint):
    page = client_for(owner_a).get(f"/t/{team_a.slug}/webhooks/{endpoint.pk}/").content.decode()
    assert f'data-confirm="Delete the webhook to {URL}?' in page


def test_list_and_log_queries_do_not_grow_with_rows(
    team_a, owner_a, client_for, make_endpoint, django_assert_max_num_queries
):
    endpoints = [make_endpoint(f"{URL}/{n}")[0] for n in range(5)]
    for n in range(30):
        event = WebhookEvent.objects.create(team=team_a, type=BUDGET_EXCEEDED, payload={"n": n})
        for endpoint in endpoints[:2]:
            delivery = WebhookDelivery.objects.create(event=event, endpoint=endpoint, attempts=2)
            for number in (1, 2):
                delivery.attempt_log.create(number=number, started_at=event.created_at, response_status=500)
    client = client_for(owner_a)
    with django_assert_max_num_queries(12):
        assert client.get(f"/t/{team_a.slug}/webhooks/").status_code == 200
    with django_assert_max_num_queries(14):
        page = client.get(f"/t/{team_a.slug}/webhooks/{endpoints[0].pk}/").content.decode()
    assert "Page 1 of 2 · 30 deliveries" in page
    assert page.count("2 attempts") == 25
