"""Caps beyond what a ledger can count are refused with a clear 400 (they used to overflow the database: a 500)."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.services import management_token_create
from endpoints.models import MAX_UNIT_CAP, ApiKey


@pytest.fixture
def api(team_a, owner_a):
    _token, secret = management_token_create(team=team_a, name="ci", scopes=["read", "write"], actor=owner_a)
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


@pytest.mark.parametrize("cap", [MAX_UNIT_CAP + 1, 2**63])
def test_a_key_cap_beyond_the_maximum_is_refused(api, team_a, usage, cap):
    base = f"/api/v1/teams/{team_a.slug}"
    created = api.post(f"{base}/endpoints/{usage.endpoint.public_id}/keys/", {"name": "k", "daily_unit_cap": cap},
                       content_type="application/json")  # fmt: skip
    assert created.status_code == 400, created.content
    assert "daily_unit_cap" in created.content.decode()
    changed = api.patch(f"{base}/keys/{usage.key.key_id}/", {"daily_unit_cap": cap}, content_type="application/json")
    assert changed.status_code == 400
    assert ApiKey.objects.filter(daily_unit_cap__isnull=False).count() == 0
    endpoint = api.patch(f"{base}/endpoints/{usage.endpoint.public_id}/", {"monthly_unit_cap": cap},
                         content_type="application/json")  # fmt: skip
    assert endpoint.status_code == 400


def test_the_maximum_itself_is_accepted(api, team_a, usage):
    response = api.patch(f"/api/v1/teams/{team_a.slug}/keys/{usage.key.key_id}/", {"daily_unit_cap": MAX_UNIT_CAP},
                         content_type="application/json")  # fmt: skip
    assert response.status_code == 200, response.content
    assert response.json()["daily_unit_cap"] == MAX_UNIT_CAP
