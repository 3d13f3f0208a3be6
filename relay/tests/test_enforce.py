"""Enforcement without a network: each status and reason → HTTP status and JSON-RPC error, every allowlist kind,
the token bucket and the daily cap counted locally."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import pytest

from relay.enforce import (
    Caller,
    DailyUnits,
    EndpointPolicy,
    Enforcer,
    OriginRule,
    TokenBucket,
    key_refusal,
    parse_origin,
    status_refusal,
)
from relay.feed import ConfigStore, EndpointRecord, KeyRecord, Snapshot
from relay.tests.helpers import endpoint_record, key_record

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "gk_test_secret"


def store_with(*, endpoint: dict[str, Any] | None = None, key: dict[str, Any] | None = None) -> ConfigStore:
    store = ConfigStore()
    snapshot = {
        "version": "v1",
        "cursor": "1",
        "endpoints": [endpoint or endpoint_record()],
        "keys": [key or key_record()],
    }
    store.replace(msgspec.convert(snapshot, Snapshot), 0.0)
    return store


def admit(store: ConfigStore, caller: Caller | None = None, service: str = "eth-mainnet", now: datetime = NOW) -> Any:
    return Enforcer(store).admit(caller or Caller("key_one"), service, now)


def policy(**allowlists: Any) -> EndpointPolicy:
    lists = {"origins": [], "user_agents": [], "ips": [], "contracts": {}, "methods": {}} | allowlists
    return EndpointPolicy.compile(msgspec.convert(endpoint_record(allowlists=lists), EndpointRecord))


# --- statuses ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "http", "code", "rpc_code"),
    [
        ("revoked", None, 401, "key_revoked", -32001),
        ("revoked", "replaced by rotation", 401, "key_revoked", -32001),
        ("revoked", "team deleted", 401, "key_revoked", -32001),
        ("deleted", None, 401, "key_revoked", -32001),
        ("expired", None, 401, "key_expired", -32001),
        ("suspended", "budget_exceeded", 402, "budget_exceeded", -32002),
        ("suspended", "Payment overdue: an invoice is unpaid past the grace period.", 402, "suspended", -32002),
        ("suspended", "endpoint paused by the team", 402, "suspended", -32002),
        ("suspended", "daily_cap_reached", 429, "daily_cap_reached", -32005),
        ("suspended", "monthly_cap_reached", 429, "monthly_cap_reached", -32005),
        ("quarantined", None, 403, "not_allowed", -32003),  # a status this relay does not know: refused
    ],
)
def test_each_status_and_reason_has_its_http_status_and_error(
    status: str, reason: str | None, http: int, code: str, rpc_code: int
) -> None:
    refusal = status_refusal(status, reason)

    assert refusal is not None
    assert (refusal.status, refusal.reason, refusal.code, refusal.error_class) == (http, code, rpc_code, "user")
    assert refusal.error()["data"]["reason"] == code
    assert refusal.error()["data"].get("status_reason") == reason


def test_the_error_body_says_why_in_words() -> None:
    budget = status_refusal("suspended", "budget_exceeded")
    billing = status_refusal("suspended", "Payment overdue: an invoice is unpaid past the grace period.")
    revoked = status_refusal("revoked", None)

    assert budget is not None
    assert budget.error() == {
        "code": -32002,
        "message": "This API key is suspended: budget exceeded.",
        "data": {"reason": "budget_exceeded", "http_status": 402, "status_reason": "budget_exceeded"},
    }
    assert billing is not None
    assert billing.message == "This API key is suspended: Payment overdue: an invoice is unpaid past the grace period."
    assert revoked is not None
    assert revoked.error() == {
        "code": -32001,
        "message": "This API key was revoked.",
        "data": {"reason": "key_revoked", "http_status": 401},
    }
    assert status_refusal("active", None) is None


def test_expiry_and_the_end_of_a_rotation_overlap_are_enforced_on_the_relays_clock() -> None:
    expiring = msgspec.convert(key_record(expires_at="2026-12-01T12:00:00Z"), KeyRecord)
    rotated = msgspec.convert(key_record(valid_until="2026-12-01T12:00:00Z"), KeyRecord)

    assert key_refusal(expiring, NOW - timedelta(seconds=1)) is None
    assert key_refusal(expiring, NOW).reason == "key_expired"  # type: ignore[union-attr]
    assert key_refusal(rotated, NOW - timedelta(seconds=1)) is None
    refusal = key_refusal(rotated, NOW)
    assert refusal is not None
    assert (refusal.status, refusal.reason, refusal.message) == (
        401,
        "key_revoked",
        "This API key was revoked: replaced by rotation.",
    )


def test_an_unknown_key_is_401_with_nobody_to_attribute_it_to() -> None:
    admission = admit(store_with(), Caller("key_other"))

    assert admission.key is None
    assert (admission.refusal.status, admission.refusal.reason) == (401, "unknown_key")


@pytest.mark.parametrize(
    ("endpoint", "key", "reason"),
    [
        ({"status": "suspended", "status_reason": "abuse report; contact support"}, {}, "suspended"),
        ({"status": "deleted", "status_reason": None}, {}, "key_revoked"),
        ({}, {"status": "suspended", "status_reason": "budget_exceeded"}, "budget_exceeded"),
        ({"services": ["base"]}, {}, "service_not_enabled"),
    ],
)
def test_the_endpoint_refuses_for_its_key(endpoint: dict[str, Any], key: dict[str, Any], reason: str) -> None:
    admission = admit(store_with(endpoint=endpoint_record(**endpoint), key=key_record(**key)))

    assert admission.key is not None  # a known key: the refusal is recorded as its usage
    assert admission.refusal.reason == reason


def test_the_secret_is_compared_by_its_hash_and_required_where_the_endpoint_says() -> None:
    optional = store_with()
    required = store_with(endpoint=endpoint_record(secret_key_required=True))

    assert admit(optional).refusal is None
    assert admit(optional, Caller("key_one", secret=SECRET)).refusal is None
    assert admit(optional, Caller("key_one", secret="gk_test_wrong")).refusal.reason == "invalid_secret"
    assert admit(required, Caller("key_one", secret=SECRET)).refusal is None
    missing = admit(required).refusal
    assert (missing.status, missing.reason, missing.code) == (401, "secret_key_required", -32001)
    assert admit(required, Caller("key_one", secret="gk_test_wrong")).refusal.reason == "invalid_secret"


# --- allowlists ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "origin", "allowed"),
    [
        ("https://app.example.com", "https://app.example.com", True),
        ("https://app.example.com", "https://APP.example.com:443", True),
        ("https://app.example.com", "http://app.example.com", False),
        ("https://app.example.com", "https://app.example.com:8443", False),
        ("https://app.example.com", "https://evil.example.com", False),
        ("http://localhost:3000", "http://localhost:3000", True),
        ("http://localhost:3000", "http://localhost", False),
        ("*.example.com", "https://a.example.com", True),
        ("*.example.com", "http://a.b.example.com", True),
        ("*.example.com", "https://example.com", False),
        ("*.example.com", "https://badexample.com", False),
        ("*.example.com", "https://a.example.com:8080", False),
        ("https://*.example.com", "http://a.example.com", False),
        ("http://[::1]:8080", "http://[0:0::1]:8080", True),
        ("https://app.example.com", "null", False),
    ],
)
def test_origins_match_exactly_or_by_subdomain_wildcard(entry: str, origin: str, allowed: bool) -> None:
    refusal = policy(origins=[entry]).origin_refusal(origin)

    assert (refusal is None) is allowed
    if not allowed:
        assert (refusal.status, refusal.reason) == (403, "origin_not_allowed")  # type: ignore[union-attr]


def test_an_origin_allowlist_needs_an_origin_and_an_empty_one_allows_all() -> None:
    assert policy(origins=["https://app.example.com"]).origin_refusal(None).message == (  # type: ignore[union-attr]
        "Origin (none sent) is not on this endpoint's allowlist."
    )
    assert policy().origin_refusal(None) is None
    assert parse_origin("ftp://files.example.com") is None
    assert OriginRule.parse("*.example.com:8080") == OriginRule(None, ".example.com", 8080, True)


def test_user_agents_match_as_case_sensitive_substrings() -> None:
    listed = policy(user_agents=["MyWallet/"])

    assert listed.user_agent_refusal("Mozilla/5.0 MyWallet/2.1") is None
    assert listed.user_agent_refusal("mywallet/2.1").reason == "user_agent_not_allowed"  # type: ignore[union-attr]
    assert listed.user_agent_refusal(None).status == 403  # type: ignore[union-attr]
    assert policy().user_agent_refusal(None) is None


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("203.0.113.5", True),
        ("198.51.100.77", True),
        ("::ffff:198.51.100.77", True),  # IPv4-mapped: the IPv4 address it is
        ("2001:db8::1", True),
        ("198.51.101.1", False),
        ("2001:db9::1", False),
        ("not an address", False),
        (None, False),
    ],
)
def test_ips_match_single_addresses_and_cidr_ranges(ip: str | None, allowed: bool) -> None:
    refusal = policy(ips=["203.0.113.5", "198.51.100.0/24", "2001:db8::/32"]).ip_refusal(ip)

    assert (refusal is None) is allowed
    if not allowed:
        assert (refusal.status, refusal.reason) == (403, "ip_not_allowed")  # type: ignore[union-attr]


def test_an_ip_list_of_unreadable_entries_matches_nothing() -> None:
    assert policy(ips=["not-a-range"]).ip_refusal("203.0.113.5").reason == "ip_not_allowed"  # type: ignore[union-attr]


def test_methods_are_allowlisted_per_service() -> None:
    listed = policy(methods={"eth-mainnet": ["eth_blockNumber", "eth_call"]})

    assert listed.call_refusal("eth-mainnet", "eth_blockNumber", []) is None
    refusal = listed.call_refusal("eth-mainnet", "eth_getBalance", [])
    assert refusal is not None
    assert (refusal.status, refusal.reason, refusal.code, refusal.message) == (
        403,
        "method_not_allowed",
        -32003,
        "Method 'eth_getBalance' is not on this endpoint's allowlist for eth-mainnet.",
    )
    assert listed.call_refusal("base", "eth_getBalance", []) is None  # another service's list is its own


TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
OTHER = "0xdAC17F958D2ee523a2206206994597C13D831ec7"


@pytest.mark.parametrize(
    ("method", "params", "allowed"),
    [
        ("eth_call", [{"to": TOKEN, "data": "0x70a08231"}, "latest"], True),
        ("eth_call", [{"to": TOKEN.lower(), "data": "0x"}, "latest"], True),  # compared case-insensitively
        ("eth_call", [{"to": OTHER, "data": "0x"}, "latest"], False),
        ("eth_call", [{"data": "0x6080"}, "latest"], False),  # no `to`: a contract creation, not allowlisted
        ("eth_estimateGas", [{"to": OTHER}], False),
        ("eth_getLogs", [{"address": TOKEN, "fromBlock": "0x1"}], True),
        ("eth_getLogs", [{"address": [TOKEN, TOKEN.lower()]}], True),
        ("eth_getLogs", [{"address": [TOKEN, OTHER]}], False),
        ("eth_getLogs", [{"fromBlock": "0x1"}], False),  # every contract's logs
        ("eth_getLogs", "not a list", False),
        ("eth_getBalance", [OTHER, "latest"], True),  # names an account, not a contract call
    ],
)
def test_contract_addresses_are_allowlisted_for_calls_and_log_filters(method: str, params: Any, allowed: bool) -> None:
    refusal = policy(contracts={"eth-mainnet": [TOKEN]}).call_refusal("eth-mainnet", method, params)

    assert (refusal is None) is allowed
    if not allowed:
        assert (refusal.status, refusal.reason) == (403, "contract_not_allowed")  # type: ignore[union-attr]


def test_request_wide_allowlists_are_checked_at_admission() -> None:
    lists = {"origins": ["https://app.example.com"], "user_agents": [], "ips": ["10.0.0.0/8"], "contracts": {}}
    store = store_with(endpoint=endpoint_record(allowlists=lists | {"methods": {}}))
    good = Caller("key_one", origin="https://app.example.com", ip="10.1.2.3")

    assert admit(store, good).refusal is None
    assert admit(store, Caller("key_one", origin="https://x.example.com", ip="10.1.2.3")).refusal.reason == (
        "origin_not_allowed"
    )
    assert admit(store, Caller("key_one", origin="https://app.example.com", ip="192.0.2.1")).refusal.reason == (
        "ip_not_allowed"
    )


# --- rate limit and daily cap --------------------------------------------------------------------------------------


def test_the_token_bucket_refills_at_its_rate_and_holds_one_second() -> None:
    bucket = TokenBucket.full(10.0, now=0.0)

    assert [bucket.take(1, now=0.0) for _ in range(10)] == [0.0] * 10
    assert bucket.take(1, now=0.0) == pytest.approx(0.1)
    assert bucket.take(1, now=0.1) == 0.0  # 0.1 s later: one token back
    assert bucket.take(5, now=10.0) == 0.0  # long idle: full again, never more than a second's worth
    assert bucket.tokens == pytest.approx(5.0)


def test_a_batch_larger_than_the_bucket_passes_when_full_and_leaves_it_in_debt() -> None:
    bucket = TokenBucket.full(10.0, now=0.0)

    assert bucket.take(25, now=0.0) == 0.0
    assert bucket.take(1, now=0.5) == pytest.approx(1.1)  # 15 in debt, 5 back: 11 tokens short at 10 a second


def test_the_endpoints_rate_limit_refuses_with_429_and_retry_after() -> None:
    store = store_with(endpoint=endpoint_record(rate_limit_rps=2))
    enforcer = Enforcer(store)
    admission = enforcer.admit(Caller("key_one"), "eth-mainnet", NOW)

    assert enforcer.spend(admission.key, admission.policy, 2, NOW, 100.0) is None
    refusal = enforcer.spend(admission.key, admission.policy, 1, NOW, 100.0)

    assert refusal is not None
    assert (refusal.status, refusal.reason, refusal.code, refusal.retry_after) == (429, "rate_limited", -32005, 0.5)
    assert refusal.error()["data"]["retry_after_seconds"] == 1
    assert enforcer.spend(admission.key, admission.policy, 1, NOW, 100.5) is None


def test_the_daily_cap_is_counted_locally_and_resets_at_midnight_utc() -> None:
    store = store_with(key=key_record(daily_unit_cap=30))
    enforcer = Enforcer(store)
    admission = enforcer.admit(Caller("key_one"), "eth-mainnet", NOW)

    enforcer.count("key_one", 19, NOW)
    assert enforcer.spend(admission.key, admission.policy, 1, NOW, 0.0) is None
    enforcer.count("key_one", 19, NOW)
    refusal = enforcer.spend(admission.key, admission.policy, 1, NOW, 0.0)

    assert refusal is not None
    assert (refusal.status, refusal.reason, refusal.message) == (
        429,
        "daily_cap_reached",
        "This API key used its daily cap of 30 units; it resumes at 00:00 UTC.",
    )
    tomorrow = NOW + timedelta(days=1)
    assert enforcer.spend(admission.key, admission.policy, 1, tomorrow, 0.0) is None


def test_daily_units_forget_yesterday() -> None:
    units = DailyUnits()
    units.add("key_one", 5, date(2026, 12, 1))

    assert units.of("key_one", date(2026, 12, 1)) == 5
    assert units.of("key_one", date(2026, 12, 2)) == 0
