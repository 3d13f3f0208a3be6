"""The whole loop, for real: Gatehouse (live server, real PostgreSQL), Anvil (a real Ethereum JSON-RPC node, from
npm) and the relay between a client and Anvil. Keys are made through Gatehouse's services, requests are real
`eth_blockNumber` / `eth_getBalance` / batch calls, the usage goes through ingestion and aggregation, and the usage
API must show exactly what was sent. Revoking or suspending through the services stops the key at the edge."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from aiohttp import ClientSession, web
from django.test import Client

from accounts.services import management_token_create
from analytics.aggregation import aggregate_pending
from analytics.models import IngestBatch
from endpoints.services import api_key_create, api_key_revoke, endpoint_create, gateway_credential_create, team_suspend
from relay.tests.anvil import free_port, rpc, running_anvil
from relay.tests.helpers import LoopThread, RunningRelay, serve
from relay.usage import Spool

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ANVIL_ACCOUNT = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # Anvil's first funded dev account: 10,000 ETH


def compact(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@pytest.fixture
def anvil_url() -> Iterator[str]:
    with running_anvil() as url:
        yield url


@pytest.fixture
def setup(team_a: Any, owner_a: Any) -> dict[str, Any]:
    """An endpoint for eth-mainnet with two keys (one requires nothing more), a gateway credential, a usage token."""
    endpoint = endpoint_create(team=team_a, name="Relay", services=["eth-mainnet"], actor=owner_a)
    key, secret = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    spare, _spare_secret = api_key_create(endpoint=endpoint, name="spare", actor=owner_a)
    _credential, gateway_secret = gateway_credential_create(name="relay-e2e")
    _token, token = management_token_create(team=team_a, name="usage", scopes=["read"], actor=owner_a)
    return {"key": key, "secret": secret, "spare": spare, "gateway_secret": gateway_secret, "token": token}


def usage_api(team: Any, token: str, path: str, **params: str) -> Any:
    response = Client(HTTP_AUTHORIZATION=f"Bearer {token}").get(
        f"/api/v1/teams/{team.slug}/usage/{path}", {"range": "1h", **params}
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_real_requests_are_counted_exactly_and_revoking_or_suspending_stops_them_at_the_edge(
    live_server: Any,
    anvil_url: str,
    setup: dict[str, Any],
    team_a: Any,
    owner_a: Any,
    start_relay: Callable[..., RunningRelay],
) -> None:
    relay = start_relay(
        live_server.url, upstreams={"eth-mainnet": anvil_url}, gateway_secret=setup["gateway_secret"], feed_wait=1
    )
    key = setup["key"]
    url = f"{relay.url}/eth-mainnet/v1/{key.key_id}"
    auth = {"Authorization": f"Bearer {setup['secret']}", "Content-Type": "application/json"}

    block_number = compact({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    balance = compact({"jsonrpc": "2.0", "id": 2, "method": "eth_getBalance", "params": [ANVIL_ACCOUNT, "latest"]})
    batch_calls = [
        {"jsonrpc": "2.0", "id": 10, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 11, "method": "eth_getBalance", "params": [ANVIL_ACCOUNT, "latest"]},
        {"jsonrpc": "2.0", "id": 12, "method": "eth_chainId", "params": []},
    ]
    first = requests.post(url, data=block_number, headers=auth, timeout=10)
    # The same service, addressed by the Host header as the catalog's URLs do (eth-mainnet.gw.gatehouse.dev).
    second = requests.post(
        f"{relay.url}/v1/{key.key_id}", data=balance, headers=auth | {"Host": "eth-mainnet.localhost"}, timeout=10
    )
    batch = requests.post(url, data=compact(batch_calls), headers=auth, timeout=10)

    assert (first.status_code, first.json()["result"]) == (200, rpc(anvil_url, "eth_blockNumber"))
    assert (second.status_code, second.json()["result"]) == (
        200,
        rpc(anvil_url, "eth_getBalance", [ANVIL_ACCOUNT, "latest"]),
    )
    assert second.json()["result"] == hex(10_000 * 10**18)
    assert batch.status_code == 200
    assert [answer["result"] for answer in batch.json()] == [
        rpc(anvil_url, "eth_blockNumber"),
        hex(10_000 * 10**18),
        hex(31337),  # Anvil's chain id
    ]

    assert relay.flush()
    aggregate_pending()

    sent_bytes = len(block_number) + len(balance) + sum(len(compact(call)) for call in batch_calls)
    # Anvil answers compact JSON: a batch's answers are its body less the brackets and the commas between them.
    answered_bytes = len(first.content) + len(second.content) + len(batch.content) - 2 - (len(batch_calls) - 1)
    summary = usage_api(team_a, setup["token"], "summary")
    assert {name: summary[name] for name in ("requests", "successes", "errors_user", "status_2xx", "units")} == {
        "requests": 5,
        "successes": 5,
        "errors_user": 0,
        "status_2xx": 5,
        "units": 10 + 19 + 10 + 19 + 0,  # the catalog's compute units per method, from the feed
    }
    assert (summary["req_bytes"], summary["resp_bytes"]) == (sent_bytes, answered_bytes)
    by_method = usage_api(team_a, setup["token"], "breakdown", by="method")["rows"]
    assert sorted((row["value"], row["requests"], row["units"]) for row in by_method) == [
        ("eth_blockNumber", 2, 20),
        ("eth_chainId", 1, 0),
        ("eth_getBalance", 2, 38),
    ]

    # Revoked through the service: the relay hears of it from the feed, and the next request is refused.
    api_key_revoke(key=key, actor=owner_a)
    relay.wait_for(lambda: relay.relay.store.keys[key.key_id].status == "revoked", "the revocation in the feed")
    refused = requests.post(url, data=block_number, headers=auth, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["data"]["reason"] == "key_revoked"

    # A billing suspension of the team: every key of it is refused with 402 and the reason.
    spare_url = f"{relay.url}/eth-mainnet/v1/{setup['spare'].key_id}"
    plain = {"Content-Type": "application/json"}  # this key's endpoint does not require the secret
    assert requests.post(spare_url, data=block_number, headers=plain, timeout=10).status_code == 200
    team_suspend(team=team_a, reason="Payment overdue: an invoice is unpaid past the grace period.")
    relay.wait_for(lambda: relay.relay.store.keys[setup["spare"].key_id].status == "suspended", "the suspension")
    suspended = requests.post(spare_url, data=block_number, headers=plain, timeout=10)
    assert suspended.status_code == 402
    assert suspended.json()["error"]["data"] == {
        "reason": "suspended",
        "http_status": 402,
        "status_reason": "Payment overdue: an invoice is unpaid past the grace period.",
    }

    assert relay.flush()
    aggregate_pending()
    summary = usage_api(team_a, setup["token"], "summary")
    assert {name: summary[name] for name in ("requests", "successes", "errors_user", "status_4xx", "units")} == {
        "requests": 8,
        "successes": 6,
        "errors_user": 2,  # the 401 and the 402: the caller's, outside the success rate's denominator
        "status_4xx": 2,
        "units": 58 + 10,
    }
    assert summary["success_rate"] == 1.0


def gatehouse_forwarder(target: str) -> web.Application:
    """A stand-in for the network path to Gatehouse: forwards everything to `target`; stop it and Gatehouse is gone."""

    async def forward(request: web.Request) -> web.Response:
        # aiohttp has inflated a gzip body already: it goes on as it is now, without its old encoding and length.
        dropped = ("host", "content-length", "content-encoding")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
        async with (
            ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, target + request.path_qs, data=await request.read(), headers=headers
            ) as answer,
        ):
            body = await answer.read()
            passed = {
                k: v for k, v in answer.headers.items() if k.lower() not in ("transfer-encoding", "content-length")
            }
            return web.Response(status=answer.status, body=body, headers=passed)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def test_a_gatehouse_outage_and_a_relay_restart_lose_nothing_and_count_nothing_twice(
    live_server: Any,
    anvil_url: str,
    setup: dict[str, Any],
    team_a: Any,
    start_relay: Callable[..., RunningRelay],
    loop_thread: LoopThread,
    tmp_path: Any,
) -> None:
    spool = tmp_path / "spool"
    forwarder, path_to_gatehouse = loop_thread.run(serve(gatehouse_forwarder(live_server.url), free_port()))
    relay = start_relay(
        path_to_gatehouse,
        upstreams={"eth-mainnet": anvil_url},
        gateway_secret=setup["gateway_secret"],
        spool_dir=spool,
        shutdown_flush_seconds=0.5,
        flush_interval=30,  # one batch: the explicit flush below cuts it
    )
    url = f"{relay.url}/eth-mainnet/v1/{setup['key'].key_id}"
    call = compact({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    auth = {"Authorization": f"Bearer {setup['secret']}", "Content-Type": "application/json"}

    # Gatehouse becomes unreachable (its port closed): the relay serves from its last config and spools the usage.
    loop_thread.run(forwarder.cleanup())
    statuses = [requests.post(url, data=call, headers=auth, timeout=10).status_code for _ in range(4)]
    assert statuses == [200] * 4
    assert not relay.flush()
    relay.stop()  # a restart: the buffer went to the spool, delivery failed, the file stays

    (spooled,) = Spool(spool).pending()
    assert spooled.records == 4
    spooled_body = spooled.path.read_bytes()
    assert IngestBatch.objects.count() == 0

    # Pointed back at Gatehouse, the restarted relay delivers the spooled batch: once, under its first key.
    restarted = start_relay(
        live_server.url, upstreams={"eth-mainnet": anvil_url}, gateway_secret=setup["gateway_secret"], spool_dir=spool
    )
    restarted.wait_for(lambda: not Spool(spool).pending(), "the spool to drain")
    (batch,) = IngestBatch.objects.all()
    assert (batch.idempotency_key, batch.record_count) == (spooled.idempotency_key, 4)

    # The same batch once more (an answer lost on the way back): Gatehouse replays its answer, counts nothing.
    replay = requests.post(
        f"{live_server.url}/api/gateway/v1/usage",
        data=spooled_body,
        headers={
            "Authorization": f"Bearer {setup['gateway_secret']}",
            "Idempotency-Key": spooled.idempotency_key,
            "Content-Type": "application/x-ndjson",
            "Content-Encoding": "gzip",
        },
        timeout=10,
    )
    assert (replay.status_code, replay.json()["replayed"]) == (202, True)
    assert IngestBatch.objects.count() == 1
    aggregate_pending()
    summary = usage_api(team_a, setup["token"], "summary")
    assert (summary["requests"], summary["units"]) == (4, 40)
