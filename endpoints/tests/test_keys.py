from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from endpoints import keys as key_format
from endpoints.models import ApiKey
from endpoints.selectors import endpoint_list, key_by_secret
from endpoints.services import api_key_create, api_key_revoke, api_key_rotate, endpoint_create, endpoint_delete


@pytest.mark.parametrize("environment", ["production", "test"])
def test_a_new_secret_is_typed_long_and_well_formed(environment):
    secret = key_format.generate_secret(environment)
    assert secret.startswith({"production": "gk_live_", "test": "gk_test_"}[environment])
    assert len(secret) == 8 + 32 + 6
    assert key_format.is_well_formed(secret)
    assert len(key_format.secret_hash(secret)) == 64


@settings(max_examples=300)
@given(
    environment=st.sampled_from(["production", "test"]),
    position=st.integers(min_value=0, max_value=45),
    replacement=st.sampled_from(key_format.BASE62 + "_-"),
)
def test_the_checksum_catches_every_single_character_change(environment, position, replacement):
    secret = key_format.generate_secret(environment)
    if secret[position] == replacement:
        replacement = "0" if replacement != "0" else "1"
    changed = secret[:position] + replacement + secret[position + 1 :]
    assert not key_format.is_well_formed(changed)


def test_every_single_character_substitution_of_one_key_is_caught():
    # Exhaustive for one key: all 46 positions × all 63 other characters.
    secret = key_format.generate_secret("production")
    alphabet = key_format.BASE62 + "_"
    for position in range(len(secret)):
        for char in alphabet:
            if char != secret[position]:
                assert not key_format.is_well_formed(secret[:position] + char + secret[position + 1 :])


@pytest.mark.parametrize(
    "raw",
    ["", "gk_live_", "gk_live_short", "gk_prod_" + "a" * 38, "GK_LIVE_" + "a" * 38, "gk_live_" + "a" * 39, None, 42],
)
def test_malformed_shapes_are_refused(raw):
    assert not key_format.is_well_formed(raw)


def test_no_two_of_100k_secrets_or_key_ids_collide():
    secrets = {key_format.generate_secret("production") for _ in range(100_000)}
    assert len(secrets) == 100_000
    assert len({key_format.public_id("key_", 16) for _ in range(100_000)}) == 100_000


@pytest.mark.django_db
def test_a_malformed_secret_is_refused_without_a_query(team_a):
    with CaptureQueriesContext(connection) as queries:
        assert key_by_secret(team=team_a, secret="gk_live_" + "x" * 38) is None
        assert key_by_secret(team=team_a, secret="not a key") is None
    assert queries.captured_queries == []


@pytest.mark.django_db
def test_a_well_formed_secret_is_looked_up_by_its_hash(team_a, team_b, owner_a):
    endpoint = endpoint_create(team=team_a, name="e", services=["eth-mainnet"], actor=owner_a)
    key, secret = api_key_create(endpoint=endpoint, name="k", actor=owner_a)
    assert key.secret_hash == key_format.secret_hash(secret)
    assert secret not in str(type(key).objects.filter(pk=key.pk).values().first())
    assert key.secret_hint == f"{secret[:12]}…{secret[-4:]}"
    assert key_by_secret(team=team_a, secret=secret) == key
    assert key_by_secret(team=team_b, secret=secret) is None  # another team's key is not found


@pytest.mark.django_db
def test_usable_keys_are_the_keys_is_usable_accepts_and_only_those_are_counted(team_a, owner_a):
    """ApiKey.objects.usable() is is_usable as a filter: revoked, rotated out, expired and deleted-endpoint keys are
    not usable; the feed's unrevoked() keeps the expired one (so the gateway can say "expired")."""
    endpoint = endpoint_create(team=team_a, name="e", services=["eth-mainnet"], actor=owner_a)
    other = endpoint_create(team=team_a, name="other", services=["base"], actor=owner_a)
    active, _ = api_key_create(endpoint=endpoint, name="active", actor=owner_a)
    revoked, _ = api_key_create(endpoint=endpoint, name="revoked", actor=owner_a)
    api_key_revoke(key=revoked, actor=owner_a)
    expired, _ = api_key_create(endpoint=endpoint, name="expired", actor=owner_a)
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    rotated, _ = api_key_create(endpoint=endpoint, name="rotated", actor=owner_a)
    replacement, _ = api_key_rotate(key=rotated, overlap="1h", actor=owner_a)
    gone, _ = api_key_create(endpoint=other, name="gone", actor=owner_a)
    endpoint_delete(endpoint=other, actor=owner_a)

    now = timezone.now()
    for at in (now, now + timedelta(hours=2)):
        assert set(ApiKey.objects.usable(at)) == {key for key in ApiKey.objects.all() if key.is_usable(at)}
    assert set(ApiKey.objects.usable(now)) == {active, rotated, replacement}
    assert set(ApiKey.objects.usable(now + timedelta(hours=2))) == {active, replacement}
    assert set(ApiKey.objects.unrevoked(now)) == {active, expired, rotated, replacement}
    assert gone not in ApiKey.objects.unrevoked(now)
    (listed,) = endpoint_list(team=team_a)
    assert listed.key_count == 3
