"""The traffic simulator's live phase as real requests through the reference relay (`simulate_relays --relay`).

The simulator decides who calls what and when (simulator.live); here each of those relays becomes an HTTP request to
the relay — JSON-RPC for chains, OpenAI's chat completions and embeddings for models — which serves it from its
upstream (Anvil, the demo LLM upstream) and reports the usage itself. So what the dashboard shows of the live phase
is what the relay measured: its statuses, latencies, bytes and units, not the simulator's.

A relay can go through the relay when the relay has an upstream for its service and the simulator can authenticate
as its key: the endpoint does not require the secret, or the secret is in the key-secrets file `seed_demo` writes
when it creates the demo keys. The rest stays synthetic and is pushed to the usage API as before.
"""

from __future__ import annotations

import http.client
import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# Parameters Anvil (any EVM node) accepts for the methods the simulator samples (endpoints.catalog.METHOD_WEIGHTS);
# a method not here is sent with no parameters, and the node's answer (often "invalid params") is what it is.
DEMO_ACCOUNT = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # Anvil's first dev account
DEMO_CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ZERO_HASH = "0x" + "00" * 32
EVM_PARAMS: dict[str, list[Any]] = {
    "eth_call": [{"to": DEMO_CONTRACT, "data": "0x06fdde03"}, "latest"],
    "eth_getBalance": [DEMO_ACCOUNT, "latest"],
    "eth_getLogs": [{"fromBlock": "0x0", "toBlock": "latest", "address": DEMO_CONTRACT}],
    "eth_getTransactionReceipt": [ZERO_HASH],
    "eth_getTransactionByHash": [ZERO_HASH],
    "eth_getBlockByNumber": ["latest", False],
    "eth_getBlockReceipts": ["latest"],
    "eth_getTransactionCount": [DEMO_ACCOUNT, "latest"],
    "eth_getCode": [DEMO_CONTRACT, "latest"],
    "eth_getStorageAt": [DEMO_CONTRACT, "0x0", "latest"],
    "eth_estimateGas": [{"from": DEMO_ACCOUNT, "to": DEMO_CONTRACT, "value": "0x1"}],
    "eth_feeHistory": ["0x4", "latest", [25, 75]],
    "eth_sendRawTransaction": ["0x00"],  # not a signed transaction: the node refuses it, as it would a bad one
    "debug_traceTransaction": [ZERO_HASH],
    "trace_block": ["latest"],
}
PROMPT_WORDS = ("gas", "fees", "wallet", "bridge", "block", "nonce", "token", "receipt", "contract", "swap")
TIMEOUT_S = 30.0


@dataclass
class RelayTraffic:
    """Sends simulated relays through the relay at `base_url` (path addressing: /<service>/v1/<key_id>)."""

    base_url: str
    services: frozenset[str]  # the services the relay has an upstream for
    endpoints: Mapping[str, Mapping[str, Any]]  # endpoint_id → the config feed's endpoint record
    secrets: Mapping[str, str] = field(default_factory=dict)  # key_id → secret
    answers: Counter[int] = field(default_factory=Counter)  # HTTP statuses the relay answered
    _conn: http.client.HTTPConnection | None = None

    def routable(self, record: Mapping[str, Any]) -> bool:
        endpoint = self.endpoints.get(record["endpoint_id"])
        if record["service"] not in self.services or endpoint is None:
            return False
        return record["key_id"] in self.secrets or not endpoint.get("secret_key_required")

    def split(self, records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(the relays to send through the relay, the relays to push as synthetic usage)."""
        through: list[dict[str, Any]] = []
        synthetic: list[dict[str, Any]] = []
        for record in records:
            (through if self.routable(record) else synthetic).append(record)
        return through, synthetic

    def request(self, record: Mapping[str, Any], rng: random.Random) -> tuple[str, bytes, dict[str, str]]:
        """The path, body and headers of the request a client of this key would send for this relay."""
        service, key_id, method = record["service"], record["key_id"], record["method"]
        headers = {"Content-Type": "application/json", "User-Agent": "gatehouse-simulator"}
        if secret := self.secrets.get(key_id):
            headers["Authorization"] = f"Bearer {secret}"
        origins = (self.endpoints[record["endpoint_id"]].get("allowlists") or {}).get("origins") or []
        if origins:  # a browser app: it sends its own origin (a wildcard entry stands for a subdomain)
            origin = origins[0].replace("*.", "app.", 1)
            headers["Origin"] = origin if "://" in origin else f"https://{origin}"
        prefix = f"/{service}/v1/{key_id}"
        if method == "embeddings":
            body: dict[str, Any] = {"model": service, "input": self._words(rng, record.get("input_tokens"))}
            return f"{prefix}/embeddings", json.dumps(body).encode(), headers
        if method == "chat.completions":
            prompt = self._words(rng, record.get("input_tokens"))
            body = {"model": service, "messages": [{"role": "user", "content": prompt}]}
            return f"{prefix}/chat/completions", json.dumps(body).encode(), headers
        params = EVM_PARAMS.get(method, [])
        call = {"jsonrpc": "2.0", "id": rng.randrange(1, 1 << 31), "method": method, "params": params}
        return prefix, json.dumps(call).encode(), headers

    @staticmethod
    def _words(rng: random.Random, tokens: int | None) -> str:
        count = max(1, min(int(tokens or 0) // 4, 400))  # a prompt of that order, kept small: the upstream is a demo
        return " ".join(rng.choice(PROMPT_WORDS) for _ in range(count))

    def send(self, records: Iterable[Mapping[str, Any]], rng: random.Random) -> int:
        """Send each relay on one keep-alive connection; returns how many the relay answered."""
        answered = 0
        for record in records:
            path, body, headers = self.request(record, rng)
            status = self._post(path, body, headers)
            if status is not None:
                self.answers[status] += 1
                answered += 1
        return answered

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> int | None:
        for attempt in range(2):  # a keep-alive connection the relay closed is reopened once
            conn = self._connection()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                return response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                self._conn = None
                if attempt:
                    return None
        return None  # pragma: no cover - the loop returns

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = urlsplit(self.base_url)
            self._conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=TIMEOUT_S)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
