"""The simulator's live phase through a relay (analytics/relay_traffic.py): which relays go through it, and the exact
requests a client of each key would send, against a real HTTP server standing in for the relay."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from analytics.relay_traffic import DEMO_ACCOUNT, RelayTraffic

ENDPOINTS = {
    "ep_open": {"secret_key_required": False, "allowlists": {"origins": ["*.acme.dev", "https://x.dev"]}},
    "ep_secret": {"secret_key_required": True, "allowlists": {}},
}


def record(method: str, *, service: str = "eth-mainnet", key: str = "key_a", endpoint: str = "ep_open") -> dict:
    return {"key_id": key, "endpoint_id": endpoint, "service": service, "method": method, "input_tokens": 40}


class Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str], Any]] = []
    close_next = False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Recorder.seen.append((self.path, dict(self.headers), body))
        if Recorder.close_next:  # as a relay restarting would: the connection goes, unanswered
            Recorder.close_next = False
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def relay_url() -> Iterator[str]:
    Recorder.seen, Recorder.close_next = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_only_relays_the_relay_can_serve_and_authenticate_go_through_it() -> None:
    traffic = RelayTraffic("http://relay", frozenset({"eth-mainnet", "llama"}), ENDPOINTS, {"key_b": "gk_b"})
    through, synthetic = traffic.split(
        [
            record("eth_call"),  # served, no secret needed
            record("eth_call", service="solana"),  # no upstream
            record("eth_call", key="key_b", endpoint="ep_secret"),  # the secret is on file
            record("eth_call", key="key_c", endpoint="ep_secret"),  # needs a secret the simulator lacks
            record("eth_call", endpoint="ep_gone"),  # an endpoint the feed no longer has
        ]
    )
    assert [(r["key_id"], r["service"]) for r in through] == [("key_a", "eth-mainnet"), ("key_b", "eth-mainnet")]
    assert [(r["key_id"], r["service"], r["endpoint_id"]) for r in synthetic] == [
        ("key_a", "solana", "ep_open"),
        ("key_c", "eth-mainnet", "ep_secret"),
        ("key_a", "eth-mainnet", "ep_gone"),
    ]


def test_each_relay_becomes_the_request_its_client_would_send(relay_url: str) -> None:
    traffic = RelayTraffic(relay_url, frozenset({"eth-mainnet", "llama"}), ENDPOINTS, {"key_b": "gk_b"})
    relays = [
        record("eth_getBalance"),
        record("eth_blockNumber", key="key_b", endpoint="ep_secret"),
        record("chat.completions", service="llama", key="key_b", endpoint="ep_secret"),
        record("embeddings", service="llama", key="key_b", endpoint="ep_secret"),
    ]

    assert traffic.send(relays, random.Random(7)) == 4

    assert traffic.answers == {200: 4}
    (balance, block, chat, embed) = Recorder.seen
    assert balance[0] == "/eth-mainnet/v1/key_a"
    assert balance[2]["method"] == "eth_getBalance"
    assert balance[2]["params"] == [DEMO_ACCOUNT, "latest"]
    assert balance[1]["Origin"] == "https://app.acme.dev"  # a browser app's own origin, within the allowlist
    assert "Authorization" not in balance[1]
    assert block[1]["Authorization"] == "Bearer gk_b"
    assert (block[2]["method"], block[2]["params"]) == ("eth_blockNumber", [])
    assert chat[0] == "/llama/v1/key_b/chat/completions"
    assert chat[2]["model"] == "llama"
    assert len(chat[2]["messages"][0]["content"].split()) == 10  # 40 tokens → about 10 words
    assert embed[0] == "/llama/v1/key_b/embeddings"
    assert len(embed[2]["input"].split()) == 10


def test_a_connection_the_relay_dropped_is_reopened_once(relay_url: str) -> None:
    traffic = RelayTraffic(relay_url, frozenset({"eth-mainnet"}), ENDPOINTS)
    assert traffic.send([record("eth_chainId")], random.Random(1)) == 1
    Recorder.close_next = True

    assert traffic.send([record("eth_chainId")], random.Random(2)) == 1

    assert len(Recorder.seen) == 3  # the dropped request, then the same on a new connection
    assert traffic.answers == {200: 2}
    traffic.close()


def test_a_relay_that_is_not_there_answers_nothing() -> None:
    traffic = RelayTraffic("http://127.0.0.1:9", frozenset({"eth-mainnet"}), ENDPOINTS)
    assert traffic.send([record("eth_chainId")], random.Random(1)) == 0
    assert traffic.answers == {}


# --- simulate_relays --relay against a live server ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_live_phase_goes_through_the_relay_for_the_services_it_serves(
    live_server, team_a, owner_a, team_b, outsider_b, relay_url: str
) -> None:
    from io import StringIO

    from django.core.management import call_command

    from analytics.models import Relay
    from endpoints.services import api_key_create, endpoint_create

    endpoint = endpoint_create(
        team=team_a, name="Simulated", services=["eth-mainnet", "llama-3.1-8b-instruct"], actor=owner_a
    )
    key, _secret = api_key_create(endpoint=endpoint, name="sim", actor=owner_a)
    other = endpoint_create(team=team_b, name="Not simulated", services=["eth-mainnet"], actor=outsider_b)
    api_key_create(endpoint=other, name="other", actor=outsider_b)  # another team's: --team leaves it out
    out = StringIO()

    call_command(
        "simulate_relays", url=live_server.url, backfill_days=0, live_rate=40, duration=2.5, seed=3,
        team=[team_a.slug], relay=relay_url, relay_services="eth-mainnet", stdout=out, stderr=StringIO(),
    )  # fmt: skip

    text = out.getvalue()
    assert "through the relay at" in text
    assert "1 of 2 key × service pairs" in text
    assert Recorder.seen
    assert {path for path, _headers, _body in Recorder.seen} == {f"/eth-mainnet/v1/{key.key_id}"}
    assert f"and {len(Recorder.seen)} requests through the relay" in text
    # What the relay serves is its to report; the rest is pushed as synthetic usage, as before.
    assert set(Relay.objects.filter(key_id=key.pk).values_list("service", flat=True)) <= {"llama-3.1-8b-instruct"}


@pytest.mark.django_db
def test_a_relay_that_is_not_an_http_url_is_refused() -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--relay must be"):
        call_command("simulate_relays", relay="127.0.0.1:8645", stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '{"key_a": "gk_a", "key_b": {"name": "b", "endpoint": "E", "secret": "gk_b"}}',
            {"key_a": "gk_a", "key_b": "gk_b"},
        ),
        (None, {}),  # not written yet: those keys stay synthetic
        ("[1, 2]", "expected a JSON object"),
        ("{not json", "--key-secrets"),
    ],
    ids=["secrets and seed_demo's records", "missing", "not an object", "not json"],
)
def test_the_key_secrets_file(tmp_path, content: str | None, expected: dict[str, str] | str) -> None:
    from django.core.management.base import CommandError

    from analytics.management.commands.simulate_relays import Command

    path = tmp_path / "secrets.json"
    if content is not None:
        path.write_text(content)
    if isinstance(expected, dict):
        assert Command._secrets(str(path)) == expected
    else:
        with pytest.raises(CommandError, match=expected):
            Command._secrets(str(path))
