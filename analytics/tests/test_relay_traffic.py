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
