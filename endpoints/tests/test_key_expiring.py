"""key.expiring: a webhook event a week before a key expires, once per expiry; a changed expiry is warned about again.
Revoked keys, keys far from expiry or already expired, and keys a rotation ends first are not warned about."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from endpoints import services, tasks
from endpoints.models import ApiKey, ApiKeyQuerySet
from endpoints.services import api_key_create, api_key_revoke, api_key_rotate, api_key_update, endpoint_create
from webhooks.models import KEY_EXPIRING, WebhookEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(team_a, owner_a):
    return endpoint_create(team=team_a, name="Mainnet", services=["eth-mainnet"], actor=owner_a)


@pytest.fixture
def make_key(endpoint, owner_a):
    def make(name: str, expires_in: timedelta | None) -> ApiKey:
        expires_at = timezone.now() + expires_in if expires_in is not None else None
        return api_key_create(endpoint=endpoint, name=name, actor=owner_a, expires_at=expires_at)[0]

    return make


def warned() -> list[tuple[str, str]]:
    """(key id, expires_at) of every key.expiring event, oldest first."""
    events = WebhookEvent.objects.filter(type=KEY_EXPIRING).order_by("pk")
    return [(e.payload["key"]["id"], e.payload["expires_at"]) for e in events]


def test_a_key_expiring_within_a_week_is_warned_about_once(team_a, endpoint, make_key):
    key = make_key("ci", timedelta(days=3, hours=1))
    assert services.keys_warn_expiring() == 1
    event = WebhookEvent.objects.get(type=KEY_EXPIRING)
    assert event.team == team_a
    expires = f"{key.expires_at:%Y-%m-%d %H:%M}"
    assert event.payload == {
        "key": {"id": key.key_id, "name": "ci"},
        "endpoint": {"id": endpoint.public_id, "name": "Mainnet"},
        "expires_at": key.expires_at.isoformat(),
        "days_left": 3,
        "summary": f"API key ci ({key.key_id}) of endpoint Mainnet expires in 3 days, at {expires} UTC: rotate it "
        "or change its expiry to keep it working.",
    }
    key.refresh_from_db()
    assert key.expiry_warned_for == key.expires_at
    assert services.keys_warn_expiring() == 0  # the next sweep
    assert len(warned()) == 1


def test_only_working_keys_within_the_window_are_warned_about(make_key, owner_a):
    due = make_key("due", timedelta(hours=5))
    make_key("far off", timedelta(days=30))
    make_key("never expires", None)
    api_key_revoke(key=make_key("revoked", timedelta(days=2)), actor=owner_a)
    expired = make_key("expired", timedelta(days=2))
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert services.keys_warn_expiring() == 1
    assert warned() == [(due.key_id, due.expires_at.isoformat())]
    assert "expires within a day" in WebhookEvent.objects.get().payload["summary"]


def test_the_window_is_seven_days(make_key):
    key = make_key("soon", timedelta(days=8))
    assert services.keys_warn_expiring() == 0
    assert services.keys_warn_expiring(now=timezone.now() + timedelta(days=1, minutes=1)) == 1
    assert warned() == [(key.key_id, key.expires_at.isoformat())]
    assert WebhookEvent.objects.get().payload["days_left"] == 6


def test_a_changed_expiry_is_warned_about_again(make_key, owner_a):
    key = make_key("ci", timedelta(days=2))
    assert services.keys_warn_expiring() == 1
    later = timezone.now() + timedelta(days=5)
    api_key_update(key=key, actor=owner_a, expires_at=later)
    assert services.keys_warn_expiring() == 1
    assert services.keys_warn_expiring() == 0
    assert warned() == [(key.key_id, key.expires_at.isoformat()), (key.key_id, later.isoformat())]


def test_a_rotated_key_is_warned_about_through_its_successor(make_key, owner_a):
    old = make_key("ci", timedelta(days=4))
    new, _secret = api_key_rotate(key=old, overlap="1h", actor=owner_a)  # the old one stops in an hour anyway
    assert services.keys_warn_expiring() == 1
    assert warned() == [(new.key_id, old.expires_at.isoformat())]


def test_a_key_another_sweep_claims_meanwhile_is_not_warned_about_twice(make_key, monkeypatch):
    """Two sweeps at once both find the key; the one whose conditional UPDATE comes second updates nothing and
    emits nothing."""
    make_key("ci", timedelta(days=2))
    find = ApiKeyQuerySet.__iter__

    def found_then_claimed_by_the_other_sweep(queryset):
        keys = list(find(queryset))
        ApiKey.objects.filter(pk__in=[k.pk for k in keys]).update(expiry_warned_for=F("expires_at"))
        return iter(keys)

    monkeypatch.setattr(ApiKeyQuerySet, "__iter__", found_then_claimed_by_the_other_sweep)
    assert services.keys_warn_expiring() == 0
    assert warned() == []


def test_the_beat_task_runs_the_sweep(make_key):
    key = make_key("ci", timedelta(days=1, hours=2))
    assert tasks.warn_expiring_keys.apply().get() == 1
    assert warned() == [(key.key_id, key.expires_at.isoformat())]
    schedule = settings.CELERY_BEAT_SCHEDULE["warn-expiring-keys"]
    assert schedule["task"] == tasks.warn_expiring_keys.name
    assert schedule["schedule"].minute == {0, 15, 30, 45}
