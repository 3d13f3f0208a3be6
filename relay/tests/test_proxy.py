"""The relay over HTTP, in front of a fake node and a fake Gatehouse: addressing, JSON-RPC single and batch, what
each outcome answers, and the usage record each call becomes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests

from relay.tests.helpers import FakeGatehouse, RunningRelay, endpoint_record, fake_node, key_record

BLOCK_NUMBER = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


def post(relay: RunningRelay, payload: Any, path: str = "/eth-mainnet/v1/key_one", **headers: str) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    return requests.post(
        relay.url + path, data=body, headers={"Content-Type": "application/json", **headers}, timeout=10
    )


def records(relay: RunningRelay, gatehouse: FakeGatehouse) -> list[dict[str, Any]]:
    assert relay.flush()
    return gatehouse.records()


def summary(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["method"], record["status"], record["error_class"], record["units"])


def test_a_call_through_the_path_prefix_is_relayed_and_metered(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    body = json.dumps(BLOCK_NUMBER, separators=(",", ":")).encode()
    response = post(relay, body)

    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "id": 1, "result": "0x10"}
    (record,) = records(relay, gatehouse)
    assert record.keys() == {
        "id", "ts", "key_id", "endpoint_id", "service", "method", "status", "error_class", "latency_ms", "req_bytes",
        "resp_bytes", "units", "region",
    }  # fmt: skip
    assert {k: record[k] for k in ("key_id", "endpoint_id", "service", "method", "status", "error_class")} == {
        "key_id": "key_one",
        "endpoint_id": "ep_one",
        "service": "eth-mainnet",
        "method": "eth_blockNumber",
        "status": 200,
        "error_class": None,
    }
    assert (record["units"], record["region"]) == (10, "test-1")
    assert (record["req_bytes"], record["resp_bytes"]) == (len(body), len(response.content))
    assert 0 < record["latency_ms"] < 5000
    assert record["ts"].endswith("Z")
    assert len(record["id"]) == 24


def test_the_host_header_names_the_service_too(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    response = post(relay, BLOCK_NUMBER, path="/v1/key_one", Host="eth-mainnet.gw.localhost:8545")

    assert response.json()["result"] == "0x10"
    assert records(relay, gatehouse)[0]["service"] == "eth-mainnet"


@pytest.mark.parametrize(
    ("path", "host"),
    [("/v1/key_one", "127.0.0.1"), ("/v1/key_one", "polygon.gw.localhost"), ("/solana/v1/key_one", "127.0.0.1")],
)
def test_a_service_the_relay_does_not_know_is_404(relay: RunningRelay, path: str, host: str) -> None:
    response = post(relay, BLOCK_NUMBER, path=path, Host=host)

    assert response.status_code == 404
    assert response.json()["error"]["data"]["reason"] == "unknown_service"


def test_a_batch_is_relayed_as_sent_and_each_call_is_one_record(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"},
        {"jsonrpc": "2.0", "id": "b", "method": "eth_getBalance", "params": ["0x0", "latest"]},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_nope"},
        {"jsonrpc": "2.0", "id": 4, "method": "revert"},
        {"jsonrpc": "2.0", "id": 5, "method": "fail"},
    ]
    response = post(relay, batch)

    assert response.status_code == 200
    assert [answer["id"] for answer in response.json()] == [1, "b", 3, 4, 5]
    assert [summary(r) for r in records(relay, gatehouse)] == [
        ("eth_blockNumber", 200, None, 10),
        ("eth_getBalance", 200, None, 19),
        ("eth_nope", 200, "user", 0),  # method not found: the caller's mistake
        ("revert", 200, None, 10),  # a revert is the node's correct answer
        ("fail", 200, "upstream", 0),  # the node's internal error
    ]
    assert [r["req_bytes"] for r in gatehouse.records()] == [len(json.dumps(c, separators=(",", ":"))) for c in batch]


def test_a_call_the_node_leaves_unanswered_is_an_upstream_error_and_a_notification_gets_none(
    relay: RunningRelay, gatehouse: FakeGatehouse
) -> None:
    batch = post(relay, [BLOCK_NUMBER, {"jsonrpc": "2.0", "id": 2, "method": "silent"}])
    notification = post(relay, {"jsonrpc": "2.0", "method": "eth_blockNumber"})

    assert batch.status_code == 200
    assert batch.json()[0] == {"jsonrpc": "2.0", "id": 1, "result": "0x10"}
    assert batch.json()[1]["error"]["data"] == {"reason": "upstream_no_answer", "http_status": 502}
    assert notification.status_code == 200
    assert [summary(r) for r in records(relay, gatehouse)] == [
        ("eth_blockNumber", 200, None, 10),
        ("silent", 502, "upstream", 0),
        ("eth_blockNumber", 200, None, 10),
    ]


def test_a_call_refused_by_an_allowlist_is_answered_in_place_and_not_sent(
    gatehouse: FakeGatehouse, servers: Callable[..., str], start_relay: Callable[..., RunningRelay]
) -> None:
    seen: list[bytes] = []
    node = servers(fake_node(seen=seen))
    lists = {
        "origins": [],
        "user_agents": [],
        "ips": [],
        "contracts": {},
        "methods": {"eth-mainnet": ["eth_blockNumber"]},
    }
    gatehouse.endpoints = [endpoint_record(allowlists=lists)]
    relay = start_relay(servers(gatehouse.app()), upstreams={"eth-mainnet": node})
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber"},
    ]

    response = post(relay, batch)
    single = post(relay, {"jsonrpc": "2.0", "id": 7, "method": "eth_getBalance", "params": []})

    assert response.status_code == 200
    first, second = response.json()
    assert first == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {
            "code": -32003,
            "message": "Method 'eth_getBalance' is not on this endpoint's allowlist for eth-mainnet.",
            "data": {"reason": "method_not_allowed", "http_status": 403},
        },
    }
    assert second == {"jsonrpc": "2.0", "id": 2, "result": "0x10"}
    assert [json.loads(body) for body in seen] == [[{"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber"}]]
    assert (single.status_code, single.json()["id"], single.json()["error"]["code"]) == (403, 7, -32003)
    assert [summary(r) for r in records(relay, gatehouse)] == [
        ("eth_getBalance", 403, "user", 0),
        ("eth_blockNumber", 200, None, 10),
        ("eth_getBalance", 403, "user", 0),
    ]


@pytest.mark.parametrize(
    ("body", "reason", "code"),
    [
        (b"{not json", "parse_error", -32700),
        (b"[]", "invalid_request", -32600),
        (b'"just a string"', "invalid_request", -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":42}', "invalid_request", -32600),
        (json.dumps([BLOCK_NUMBER] * 101).encode(), "batch_too_large", -32600),
    ],
)
def test_a_malformed_request_is_400_and_a_user_error(
    relay: RunningRelay, gatehouse: FakeGatehouse, body: bytes, reason: str, code: int
) -> None:
    response = post(relay, body)

    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["data"]["reason"]) == (code, reason)
    assert [summary(r) for r in records(relay, gatehouse)] == [("invalid", 400, "user", 0)]


def test_a_malformed_call_in_a_batch_is_answered_in_place(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    response = post(relay, [BLOCK_NUMBER, {"id": 9, "params": []}, 5])

    assert [answer.get("error", {}).get("code") for answer in response.json()] == [None, -32600, -32600]
    assert [summary(r) for r in records(relay, gatehouse)] == [
        ("eth_blockNumber", 200, None, 10),
        ("invalid", 400, "user", 0),
        ("invalid", 400, "user", 0),
    ]


def test_an_unknown_key_is_refused_and_not_recorded(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    response = post(relay, BLOCK_NUMBER, path="/eth-mainnet/v1/key_nobody")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="gatehouse-relay"'
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {
            "code": -32001,
            "message": "Unknown API key: check the key id in the URL.",
            "data": {"reason": "unknown_key", "http_status": 401},
        },
    }
    assert records(relay, gatehouse) == []


def test_a_refused_batch_is_one_error_and_one_record_per_call(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    gatehouse.change("key", key_record(status="suspended", status_reason="budget_exceeded"))
    relay.wait_for(lambda: relay.relay.store.keys["key_one"].status == "suspended", "the suspension")

    response = post(relay, [BLOCK_NUMBER, BLOCK_NUMBER | {"id": 2}])

    assert response.status_code == 402
    assert response.json()["id"] is None
    assert response.json()["error"]["data"] == {
        "reason": "budget_exceeded",
        "http_status": 402,
        "status_reason": "budget_exceeded",
    }
    assert [summary(r) for r in records(relay, gatehouse)] == [("eth_blockNumber", 402, "user", 0)] * 2


def test_the_rate_limit_answers_429_with_retry_after(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    gatehouse.endpoints = [endpoint_record(rate_limit_rps=1)]
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url})

    assert post(relay, BLOCK_NUMBER).status_code == 200
    limited = post(relay, BLOCK_NUMBER)

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.json()["error"]["data"]["reason"] == "rate_limited"
    assert [summary(r) for r in records(relay, gatehouse)] == [
        ("eth_blockNumber", 200, None, 10),
        ("eth_blockNumber", 429, "user", 0),
    ]


def test_the_daily_cap_stops_the_key_locally_once_it_is_used(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    gatehouse.keys = [key_record(daily_unit_cap=20)]
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url})

    statuses = [post(relay, BLOCK_NUMBER).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]  # 10 + 10 units: the cap of 20 is used


@pytest.mark.parametrize(
    ("node", "status", "reason"),
    [
        ({"status": 500}, 502, "upstream_error"),
        ({"delay": 1.0}, 504, "upstream_timeout"),
    ],
)
def test_upstream_failures_are_upstream_errors(
    gatehouse: FakeGatehouse,
    gatehouse_url: str,
    servers: Callable[..., str],
    start_relay: Callable[..., RunningRelay],
    node: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": servers(fake_node(**node))}, upstream_timeout=0.3)

    response = post(relay, {"jsonrpc": "2.0", "id": 1, "method": "slow"})

    assert response.status_code == status
    assert response.json()["error"]["code"] == -32603
    assert response.json()["error"]["data"]["reason"] == reason
    assert [summary(r) for r in records(relay, gatehouse)] == [("slow", status, "upstream", 0)]


def test_an_unreachable_upstream_is_502(
    gatehouse: FakeGatehouse, gatehouse_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": "http://127.0.0.1:9"})

    response = post(relay, [BLOCK_NUMBER])

    assert (response.status_code, response.json()["error"]["data"]["reason"]) == (502, "upstream_unavailable")
    assert [summary(r) for r in records(relay, gatehouse)] == [("eth_blockNumber", 502, "upstream", 0)]


def test_a_service_without_an_upstream_is_the_gateways_fault(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    gatehouse.endpoints = [endpoint_record(services=["eth-mainnet", "base"])]
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url})

    response = post(relay, BLOCK_NUMBER, path="/base/v1/key_one")

    assert (response.status_code, response.json()["error"]["data"]["reason"]) == (503, "no_upstream")
    assert [summary(r) for r in records(relay, gatehouse)] == [("eth_blockNumber", 503, "gateway", 0)]


def test_an_oversized_body_is_413(gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]) -> None:
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url}, max_body_bytes=1024)

    response = post(relay, {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": ["0" * 2000]})

    assert (response.status_code, response.json()["error"]["data"]["reason"]) == (413, "body_too_large")


def test_browsers_get_cors_headers_and_the_origin_allowlist_decides(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    lists = {"origins": ["https://app.example.com"], "user_agents": [], "ips": [], "contracts": {}, "methods": {}}
    gatehouse.endpoints = [endpoint_record(allowlists=lists)]
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url})

    preflight = requests.options(
        relay.url + "/eth-mainnet/v1/key_one", headers={"Origin": "https://app.example.com"}, timeout=5
    )
    allowed = post(relay, BLOCK_NUMBER, Origin="https://app.example.com")
    refused = post(relay, BLOCK_NUMBER, Origin="https://evil.example.net")

    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert preflight.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert (allowed.status_code, allowed.headers["Access-Control-Allow-Origin"]) == (200, "https://app.example.com")
    assert (refused.status_code, refused.json()["error"]["data"]["reason"]) == (403, "origin_not_allowed")


def test_the_client_address_comes_from_trusted_proxies_only(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    lists = {"origins": [], "user_agents": [], "ips": ["203.0.113.0/24"], "contracts": {}, "methods": {}}
    gatehouse.endpoints = [endpoint_record(allowlists=lists)]
    direct = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url})
    behind_proxy = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url}, trusted_proxy_count=1)
    forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}

    assert post(direct, BLOCK_NUMBER, **forwarded).status_code == 403  # 127.0.0.1 itself is not listed
    assert post(behind_proxy, BLOCK_NUMBER, **forwarded).status_code == 200
    assert post(behind_proxy, BLOCK_NUMBER, **{"X-Forwarded-For": "203.0.113.9, 198.51.100.1"}).status_code == 403


def test_the_secret_travels_as_a_bearer_token(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    gatehouse.endpoints = [endpoint_record(secret_key_required=True)]
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url})

    assert post(relay, BLOCK_NUMBER).json()["error"]["data"]["reason"] == "secret_key_required"
    assert post(relay, BLOCK_NUMBER, Authorization="Bearer gk_test_secret").status_code == 200
    assert post(relay, BLOCK_NUMBER, Authorization="Bearer gk_test_other").json()["error"]["data"]["reason"] == (
        "invalid_secret"
    )


def test_metrics_count_requests_calls_and_the_spool(relay: RunningRelay) -> None:
    post(relay, BLOCK_NUMBER)
    post(relay, BLOCK_NUMBER, path="/eth-mainnet/v1/key_nobody")

    text = requests.get(relay.url + "/metrics", timeout=5).text

    assert 'relay_requests_total{service="eth-mainnet",code="200"} 1' in text
    assert 'relay_requests_total{service="eth-mainnet",code="401"} 1' in text
    assert 'relay_calls_total{service="eth-mainnet",code="200",error_class="none"} 1' in text
    assert 'relay_request_duration_seconds_count{service="eth-mainnet"} 2' in text
    assert "relay_feed_snapshots_total 1" in text
    assert "relay_config_keys 1" in text
    assert "relay_spool_files 0" in text
