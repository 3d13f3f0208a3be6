"""LLM services through the relay (OpenAI's API) in front of the demo upstream: addressing, the body passed through,
the usage record with the upstream's exact tokens, refusals in OpenAI's error shape, and the upstream's failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from aiohttp import web

from relay import demo_llm
from relay.tests.helpers import CATALOG, FakeGatehouse, RunningRelay, endpoint_record, key_record

MODEL = "llama-3.1-8b-instruct"
LLM_SERVICE = {
    "id": MODEL,
    "kind": "llm",
    "chain_family": "llm",
    "compute_units": 1,
    "method_compute_units": {},
    "input_price_per_million": "0.05",
    "output_price_per_million": "0.08",
}
CHAT = {
    "model": MODEL,
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
}
REPLY_WORDS = len(demo_llm.REPLY.split())


@pytest.fixture
def gatehouse() -> FakeGatehouse:
    return FakeGatehouse(
        endpoints=[endpoint_record(services=["eth-mainnet", MODEL])],
        services=[*CATALOG, LLM_SERVICE],
    )


@pytest.fixture
def llm_url(servers: Callable[..., str]) -> str:
    return servers(demo_llm.create_app()) + "/v1"


@pytest.fixture
def relay(start_relay: Callable[..., RunningRelay], gatehouse_url: str, llm_url: str, node_url: str) -> RunningRelay:
    return start_relay(gatehouse_url, upstreams={MODEL: llm_url, "eth-mainnet": node_url})


def chat(relay: RunningRelay, payload: Any = CHAT, path: str = f"/{MODEL}/v1/key_one/chat/completions", **headers: str):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return requests.post(
        relay.url + path, data=body, headers={"Content-Type": "application/json", **headers}, timeout=10
    )


def records(relay: RunningRelay, gatehouse: FakeGatehouse) -> list[dict[str, Any]]:
    assert relay.flush()
    return gatehouse.records()


def test_a_chat_completion_is_relayed_and_metered_with_the_upstreams_tokens(
    relay: RunningRelay, gatehouse: FakeGatehouse
) -> None:
    response = chat(relay)

    assert response.status_code == 200
    answer = response.json()
    assert answer["model"] == MODEL
    assert answer["choices"][0]["message"]["content"] == demo_llm.REPLY
    assert answer["usage"] == {"prompt_tokens": 4, "completion_tokens": REPLY_WORDS, "total_tokens": 4 + REPLY_WORDS}
    (record,) = records(relay, gatehouse)
    assert {k: record[k] for k in ("key_id", "service", "method", "status", "error_class")} == {
        "key_id": "key_one",
        "service": MODEL,
        "method": "chat.completions",
        "status": 200,
        "error_class": None,
    }
    assert (record["input_tokens"], record["output_tokens"]) == (4, REPLY_WORDS)
    assert record["units"] == round(4 * 0.05 + REPLY_WORDS * 0.08)  # tokens at list prices, 1,000,000 units = $1
    assert record["resp_bytes"] == len(response.content)


def test_the_catalogs_llm_host_names_the_model_in_the_body(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    response = chat(relay, path="/v1/key_one/chat/completions", Host="llm.gw.localhost:8545")

    assert response.status_code == 200
    assert records(relay, gatehouse)[0]["service"] == MODEL


def test_a_path_prefix_and_a_body_without_model(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    response = chat(
        relay,
        {"messages": [{"role": "user", "content": "one two three"}]},
    )  # (a model id such as llama-3.1-… cannot be a host label: its dots split it)

    assert response.status_code == 200
    assert response.json()["model"] == MODEL  # the service id, given to the upstream as the model
    assert records(relay, gatehouse)[0]["input_tokens"] == 3


def test_embeddings_are_metered_too(relay: RunningRelay, gatehouse: FakeGatehouse) -> None:
    response = chat(relay, {"model": MODEL, "input": "a b c d e"}, path=f"/{MODEL}/v1/key_one/embeddings")

    assert response.status_code == 200
    (record,) = records(relay, gatehouse)
    assert (record["method"], record["input_tokens"], record["output_tokens"]) == ("embeddings", 5, 0)


@pytest.mark.parametrize(
    ("path", "payload", "host"),
    [
        ("/v1/key_one/chat/completions", {**CHAT, "model": "gpt-nope"}, "llm.gw.localhost"),
        ("/eth-mainnet/v1/key_one/chat/completions", CHAT, "127.0.0.1"),  # an RPC service is not an LLM
    ],
)
def test_an_unknown_llm_service_is_404_in_openai_shape(relay: RunningRelay, path: str, payload: Any, host: str) -> None:
    response = chat(relay, payload, path=path, Host=host)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_service"


def _error(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert {"message", "type", "code", "param"} <= set(body["error"])
    return body["error"]


def test_refusals_come_in_openai_shape_with_the_rpc_sides_statuses(
    relay: RunningRelay, gatehouse: FakeGatehouse
) -> None:
    unknown = chat(relay, path=f"/{MODEL}/v1/key_nope/chat/completions")
    wrong_secret = chat(relay, Authorization="Bearer gk_wrong")
    streaming = chat(relay, {**CHAT, "stream": True})
    not_json = chat(relay, b"{nope")

    assert (unknown.status_code, _error(unknown)["code"], _error(unknown)["type"]) == (
        401,
        "unknown_key",
        "authentication_error",
    )
    assert unknown.headers["WWW-Authenticate"].startswith("Bearer")
    assert (wrong_secret.status_code, _error(wrong_secret)["code"]) == (401, "invalid_secret")
    assert (streaming.status_code, _error(streaming)["code"]) == (400, "streaming_not_supported")
    assert (not_json.status_code, _error(not_json)["code"]) == (400, "invalid_request")
    summaries = [(r["status"], r["error_class"], r["units"], r["input_tokens"]) for r in records(relay, gatehouse)]
    assert summaries == [(401, "user", 0, 0), (400, "user", 0, 0), (400, "user", 0, 0)]  # the unknown key: nobody


def test_suspension_allowlists_and_rate_limit(
    start_relay: Callable[..., RunningRelay], gatehouse: FakeGatehouse, gatehouse_url: str, llm_url: str
) -> None:
    gatehouse.endpoints = [
        endpoint_record(services=[MODEL], rate_limit_rps=1, allowlists={"origins": ["https://app.example.com"]}),
        endpoint_record("ep_two", services=[MODEL], status="suspended", status_reason="budget_exceeded"),
        endpoint_record("ep_three", services=[MODEL], allowlists={"methods": {MODEL: ["embeddings"]}}),
    ]
    gatehouse.keys = [
        key_record(),
        key_record("key_two", endpoint_id="ep_two"),
        key_record("key_three", endpoint_id="ep_three"),
    ]
    relay = start_relay(gatehouse_url, upstreams={MODEL: llm_url})
    origin = {"Origin": "https://app.example.com"}

    assert chat(relay, **origin).status_code == 200
    limited = chat(relay, **origin)
    no_origin = chat(relay)
    suspended = chat(relay, path=f"/{MODEL}/v1/key_two/chat/completions")
    method = chat(relay, path=f"/{MODEL}/v1/key_three/chat/completions")

    assert (limited.status_code, _error(limited)["code"], _error(limited)["type"]) == (
        429,
        "rate_limited",
        "rate_limit_error",
    )
    assert "Retry-After" in limited.headers
    assert (no_origin.status_code, _error(no_origin)["code"]) == (403, "origin_not_allowed")
    assert (suspended.status_code, _error(suspended)["code"], _error(suspended)["type"]) == (
        402,
        "budget_exceeded",
        "insufficient_quota",
    )
    assert (method.status_code, _error(method)["code"]) == (403, "method_not_allowed")


def test_upstream_failures_are_classified(
    start_relay: Callable[..., RunningRelay], gatehouse: FakeGatehouse, gatehouse_url: str, servers: Callable[..., str]
) -> None:
    statuses = iter([500, 400, 429, 200])

    async def upstream(request: web.Request) -> web.Response:
        status = next(statuses)
        if status == 200:
            return web.Response(text="not json")
        return web.json_response({"error": {"message": "upstream says no", "type": "x", "code": None}}, status=status)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream)
    base = servers(app) + "/v1"
    relay = start_relay(gatehouse_url, upstreams={"llm": base})  # one upstream for every model

    answers = [chat(relay) for _ in range(4)]

    assert [a.status_code for a in answers] == [502, 400, 429, 502]
    assert answers[1].json()["error"]["message"] == "upstream says no"  # the upstream's own refusal, passed through
    summaries = [(r["status"], r["error_class"], r["units"]) for r in records(relay, gatehouse)]
    assert summaries == [(502, "upstream", 0), (400, "user", 0), (429, "upstream", 0), (502, "upstream", 0)]


def test_no_upstream_is_503_gateway(
    start_relay: Callable[..., RunningRelay], gatehouse: FakeGatehouse, gatehouse_url: str
) -> None:
    relay = start_relay(gatehouse_url, upstreams={})

    response = chat(relay)

    assert (response.status_code, _error(response)["code"]) == (503, "no_upstream")
    assert [(r["status"], r["error_class"]) for r in records(relay, gatehouse)] == [(503, "gateway")]


def test_demo_upstream_counts_words_of_text_parts() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "two words"}, {"type": "image_url"}]}]
    assert demo_llm.prompt_tokens([*parts, {"role": "user", "content": "three more words"}]) == 5


def test_the_operators_api_key_goes_to_the_upstream_and_the_clients_secret_does_not(
    start_relay: Callable[..., RunningRelay],
    gatehouse_url: str,
    servers: Callable[..., str],
    gatehouse: FakeGatehouse,
) -> None:
    seen: list[str | None] = []

    async def completions(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", completions)
    url = servers(upstream) + "/v1"
    gatehouse.endpoints = [endpoint_record(services=[MODEL], secret_key_required=True)]
    relay = start_relay(gatehouse_url, upstreams={MODEL: url}, llm_api_key="sk-operator")

    response = chat(relay, Authorization="Bearer gk_test_secret")

    assert response.status_code == 200
    assert seen == ["Bearer sk-operator"]
    (record,) = records(relay, gatehouse)
    assert (record["input_tokens"], record["output_tokens"]) == (3, 2)
