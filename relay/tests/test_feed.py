"""Following the config feed: changes applied in order, a new snapshot when the cursor expires, the long-poll
parameter, Retry-After honoured, and serving the last config while Gatehouse is away."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from relay.tests.anvil import free_port
from relay.tests.helpers import FakeGatehouse, RunningRelay, endpoint_record, key_record

BLOCK_NUMBER = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}


def status_of(relay: RunningRelay, key_id: str = "key_one") -> int:
    return requests.post(f"{relay.url}/eth-mainnet/v1/{key_id}", json=BLOCK_NUMBER, timeout=5).status_code


def test_changes_are_applied_as_they_come(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    gatehouse.change("key", key_record("key_two", secret="gk_test_two"))
    relay.wait_for(lambda: "key_two" in relay.relay.store.keys, "the new key")
    assert status_of(relay, "key_two") == 200

    gatehouse.change("key", key_record("key_two", status="revoked"))
    relay.wait_for(lambda: status_of(relay, "key_two") == 401, "the revocation at the edge")
    gatehouse.change("endpoint", endpoint_record(status="suspended", status_reason="endpoint paused by the team"))
    relay.wait_for(lambda: status_of(relay) == 402, "the endpoint's suspension")

    assert relay.relay.store.cursor == "3"
    assert requests.get(relay.url + "/healthz", timeout=5).json()["config"]["cursor"] == "3"


def test_an_expired_cursor_takes_a_new_snapshot(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    gatehouse.change("key", key_record("key_two", secret="gk_test_two"))
    gatehouse.horizon = 5  # the change log was pruned past the relay's cursor
    gatehouse.changes.append({"seq": 6, "type": "key", "key": key_record("key_two", status="revoked")})
    gatehouse.keys = [key_record(), key_record("key_three", secret="gk_test_three")]

    relay.wait_for(lambda: "key_three" in relay.relay.store.keys, "the new snapshot")

    assert relay.relay.metrics.counters["relay_feed_snapshots_total"] >= 2
    assert relay.relay.store.cursor == "6"


def test_the_follower_asks_for_a_long_poll_and_honours_retry_after(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    gatehouse.retry_after = "1"  # a Gatehouse whose waiting slots are taken: ask again in a second
    start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url}, feed_wait=25)
    time.sleep(0.5)

    polls = [query for query in gatehouse.feed_requests if "since" in query]
    assert polls == [{"since": "0", "wait": "25"}]  # not one every 50 ms


def test_without_gatehouse_the_relay_is_not_ready_then_serves_once_it_is_back(
    gatehouse: FakeGatehouse,
    node_url: str,
    servers: Callable[..., str],
    start_relay: Callable[..., RunningRelay],
) -> None:
    port = free_port()
    relay = start_relay(f"http://127.0.0.1:{port}", upstreams={"eth-mainnet": node_url}, ready=False)
    time.sleep(0.2)

    health = requests.get(relay.url + "/healthz", timeout=5)
    refused = requests.post(relay.url + "/eth-mainnet/v1/key_one", json=BLOCK_NUMBER, timeout=5)
    assert (health.status_code, health.json()["status"]) == (503, "starting")
    assert (refused.status_code, refused.json()["error"]["data"]["reason"]) == (503, "not_ready")
    assert relay.relay.metrics.counters["relay_feed_errors_total"] >= 1

    servers(gatehouse.app(), port)
    relay.wait_for(lambda: relay.relay.store.loaded, "the snapshot once Gatehouse is back", timeout=15)
    assert status_of(relay) == 200


def test_a_gatehouse_without_a_catalog_in_its_feed_meters_zero_units(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, start_relay: Callable[..., RunningRelay]
) -> None:
    gatehouse.services = None
    relay = start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url})

    assert status_of(relay) == 200
    assert relay.flush()
    assert [record["units"] for record in gatehouse.records()] == [0]
