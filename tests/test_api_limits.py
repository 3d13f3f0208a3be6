"""API rate limits per token, per user and per address (429 with Retry-After and a code), none on the gateway API;
and per-team limits on endpoints, keys and tokens (400 with a code, next to the form), so nobody bloats the feed."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.services import management_token_create
from endpoints.models import ApiKey
from endpoints.services import api_key_create, api_key_rotate, endpoint_create
from project.errors import ServiceError

pytestmark = pytest.mark.django_db


@pytest.fixture
def slow_api(settings):
    settings.API_THROTTLE_RATES = {"token": "3/min", "user": "2/min", "anon": "1/min"}


def token(team, owner, name="t"):
    return Client(
        HTTP_AUTHORIZATION=f"Bearer {management_token_create(team=team, name=name, scopes=['read'], actor=owner)[1]}"
    )


def test_a_token_is_throttled_on_its_own(slow_api, team_a, owner_a):
    first, second = token(team_a, owner_a, "one"), token(team_a, owner_a, "two")
    url = f"/api/v1/teams/{team_a.slug}/"
    assert [first.get(url).status_code for _ in range(3)] == [200, 200, 200]
    refused = first.get(url)
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert "Expected available in" in refused.json()["detail"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert second.get(url).status_code == 200  # another token has its own budget


def test_a_signed_in_user_is_throttled(slow_api, team_a, owner_a, client_for):
    client = client_for(owner_a)
    statuses = [client.get(f"/api/v1/teams/{team_a.slug}/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_the_anonymous_are_throttled_by_address(slow_api):
    assert Client(REMOTE_ADDR="198.51.100.1").get("/api/schema/").status_code == 200
    assert Client(REMOTE_ADDR="198.51.100.1").get("/api/schema/").status_code == 429
    assert Client(REMOTE_ADDR="198.51.100.2").get("/api/schema/").status_code == 200


def test_the_gateway_api_is_not_throttled(slow_api, usage):
    for n in range(4):
        assert usage.post([usage.record(n)]).status_code == 202
    for _ in range(4):
        assert usage.gateway.get("/api/gateway/v1/config").status_code == 200


def test_throttling_lets_requests_through_while_redis_is_down(slow_api, settings, team_a, owner_a):
    api = token(team_a, owner_a)
    nowhere = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    settings.CACHES = {"default": nowhere}
    assert [api.get(f"/api/v1/teams/{team_a.slug}/").status_code for _ in range(5)] == [200] * 5


# --- per-team limits ----------------------------------------------------------------------------------------


def test_endpoints_per_team_are_limited(settings, team_a, owner_a):
    settings.TEAM_MAX_ENDPOINTS = 2
    api = Client(HTTP_AUTHORIZATION="Bearer " + management_token_create(
        team=team_a, name="w", scopes=["read", "write"], actor=owner_a)[1])  # fmt: skip
    url = f"/api/v1/teams/{team_a.slug}/endpoints/"
    body = {"name": "e", "services": ["eth-mainnet"]}
    assert [api.post(url, body, content_type="application/json").status_code for _ in range(2)] == [201, 201]
    refused = api.post(url, body, content_type="application/json")
    assert refused.status_code == 400
    assert refused.json()["code"] == "quota_exceeded"
    assert "2 endpoints, the most it can have" in refused.json()["detail"]


def test_keys_per_team_are_limited_but_rotation_is_allowed(settings, team_a, owner_a, client_for):
    settings.TEAM_MAX_KEYS = 2
    endpoint = endpoint_create(team=team_a, name="e", services=["eth-mainnet"], actor=owner_a)
    first, _ = api_key_create(endpoint=endpoint, name="a", actor=owner_a)
    api_key_create(endpoint=endpoint, name="b", actor=owner_a)
    with pytest.raises(ServiceError) as refused:
        api_key_create(endpoint=endpoint, name="c", actor=owner_a)
    assert refused.value.code == "quota_exceeded"
    keys_page = f"/t/{team_a.slug}/endpoints/{endpoint.public_id}/keys/"
    page = client_for(owner_a).post(keys_page, {"name": "c", "expires_in": "never"})
    assert "2 API keys, the most it can have" in page.content.decode()
    api_key_rotate(key=first, overlap="1h", actor=owner_a)  # hygiene is never blocked by the limit
    assert ApiKey.objects.filter(team=team_a).count() == 3


def test_tokens_per_team_are_limited(settings, team_a, owner_a, client_for):
    settings.TEAM_MAX_TOKENS = 1
    management_token_create(team=team_a, name="one", scopes=["read"], actor=owner_a)
    response = client_for(owner_a).post(f"/t/{team_a.slug}/tokens/", {"name": "two", "scopes": ["read"],
                                                                      "expires_in": "90"})  # fmt: skip
    assert response.status_code == 400
    assert "1 active API tokens, the most it can have" in response.content.decode()
