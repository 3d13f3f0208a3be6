"""Serving the relay in-process for tests: an event loop in a thread runs it (and any fake server), the test talks
to it over real HTTP. The fakes answer as Gatehouse and a JSON-RPC node do, so the relay's own tests need no
database; the end-to-end test puts the real Gatehouse and the real Anvil in their place."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from relay.app import RELAY, Relay, create_app
from relay.config import Settings

T = TypeVar("T")
GATEWAY_SECRET = "ggw_relaytests"
KEY_SECRET = "gk_test_secret"  # the secret of key_record()
CATALOG = [
    {
        "id": "eth-mainnet",
        "kind": "rpc",
        "chain_family": "evm",
        "compute_units": 10,
        "method_compute_units": {"eth_blockNumber": 10, "eth_getBalance": 19, "eth_call": 26, "eth_chainId": 0},
    },
    {"id": "base", "kind": "rpc", "chain_family": "evm", "compute_units": 10, "method_compute_units": {}},
]


class LoopThread:
    """An asyncio loop running in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relay-test-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def serve(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    address = runner.addresses[0]
    return runner, f"http://127.0.0.1:{address[1]}"


def relay_settings(gatehouse_url: str, spool_dir: Path, **overrides: Any) -> Settings:
    """Settings for a relay under test: quick flushes and polls, a spool in the test's own directory."""
    values: dict[str, Any] = {
        "gatehouse_url": gatehouse_url,
        "gateway_secret": GATEWAY_SECRET,
        "port": 0,
        "region": "test-1",
        "spool_dir": spool_dir,
        "flush_interval": 0.05,
        "feed_wait": 0,
        "feed_poll_interval": 0.05,
        "upstream_timeout": 2.0,
        "shutdown_flush_seconds": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class RunningRelay:
    loop: LoopThread
    runner: web.AppRunner
    url: str
    relay: Relay
    stopped: bool = False

    @classmethod
    def start(cls, loop: LoopThread, settings: Settings, *, ready: bool = True) -> RunningRelay:
        app = create_app(settings)
        runner, url = loop.run(serve(app))
        running = cls(loop, runner, url, app[RELAY])
        if ready:
            running.wait_for(lambda: running.relay.store.loaded, "the relay's first snapshot")
        return running

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def flush(self) -> bool:
        """Spool the buffered usage and deliver the spool now; True when nothing is left."""
        usage = self.relay.usage
        assert usage is not None

        async def flush_and_deliver() -> bool:
            await usage.flush()
            return await usage.deliver()

        return self.loop.run(flush_and_deliver())

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.loop.run(self.runner.cleanup())


# --- a fake Gatehouse: the config feed and usage ingestion, as the contract describes them ------------------------


def endpoint_record(endpoint_id: str = "ep_one", **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "endpoint_id": endpoint_id,
        "team": "acme",
        "environment": "production",
        "status": "active",
        "status_reason": None,
        "services": ["eth-mainnet"],
        "rate_limit_rps": 1000,
        "monthly_unit_cap": None,
        "secret_key_required": False,
        "allowlists": {"origins": [], "user_agents": [], "ips": [], "contracts": {}, "methods": {}},
    }
    record.update(overrides)
    return record


def key_record(key_id: str = "key_one", secret: str = KEY_SECRET, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "key_id": key_id,
        "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "team": "acme",
        "endpoint_id": "ep_one",
        "environment": "production",
        "status": "active",
        "status_reason": None,
        "expires_at": None,
        "valid_until": None,
        "daily_unit_cap": None,
    }
    record.update(overrides)
    return record


@dataclass
class FakeGatehouse:
    """The gateway API of Gatehouse, in memory. `changes` are feed entries ({seq, type, key|endpoint}); a cursor
    below `horizon` is expired (410); `usage_answers` are the statuses to answer before accepting (202)."""

    endpoints: list[dict[str, Any]] = field(default_factory=lambda: [endpoint_record()])
    keys: list[dict[str, Any]] = field(default_factory=lambda: [key_record()])
    services: list[dict[str, Any]] | None = field(default_factory=lambda: list(CATALOG))
    changes: list[dict[str, Any]] = field(default_factory=list)
    horizon: int = 0
    usage_answers: list[int] = field(default_factory=list)
    retry_after: str | None = None
    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    posts: list[str] = field(default_factory=list)
    feed_requests: list[dict[str, str]] = field(default_factory=list)

    def cursor(self) -> int:
        return max([change["seq"] for change in self.changes], default=self.horizon)

    def change(self, kind: str, record: dict[str, Any]) -> None:
        """Publish a change (and keep the snapshot in step, as Gatehouse's would be)."""
        self.changes.append({"seq": self.cursor() + 1, "type": kind, kind: record})
        listing, id_field = (self.keys, "key_id") if kind == "key" else (self.endpoints, "endpoint_id")
        listing[:] = [item for item in listing if item[id_field] != record[id_field]] + [record]

    def records(self) -> list[dict[str, Any]]:
        return [record for batch in self.batches.values() for record in batch]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/gateway/v1/config", self._config)
        app.router.add_post("/api/gateway/v1/usage", self._usage)
        return app

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {GATEWAY_SECRET}"

    async def _config(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"code": "not_authenticated"}, status=401)
        self.feed_requests.append(dict(request.query))
        since = request.query.get("since")
        if since is None:
            body: dict[str, Any] = {
                "version": "v1",
                "cursor": str(self.cursor()),
                "generated_at": "2026-12-01T00:00:00Z",
                "endpoints": self.endpoints,
                "keys": [key for key in self.keys if key["status"] != "revoked"],
            }
            if self.services is not None:
                body["services"] = self.services
            return web.json_response(body)
        if int(since) < self.horizon:
            return web.json_response({"code": "cursor_expired"}, status=410)
        entries = [change for change in self.changes if change["seq"] > int(since)]
        body = {"version": "v1", "since": since, "cursor": str(max([c["seq"] for c in entries], default=int(since)))}
        body |= {"has_more": False, "generated_at": "2026-12-01T00:00:00Z", "changes": entries}
        response = web.json_response(body)
        if self.retry_after:
            response.headers["Retry-After"] = self.retry_after
        return response

    async def _usage(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"code": "not_authenticated"}, status=401)
        key = request.headers["Idempotency-Key"]
        self.posts.append(key)
        if self.usage_answers:
            return web.json_response({"code": "unavailable"}, status=self.usage_answers.pop(0))
        body = await request.read()  # aiohttp inflates a gzip body itself
        if request.headers.get("Content-Encoding") != "gzip":
            return web.json_response({"code": "expected gzip"}, status=400)
        records = [json.loads(line) for line in body.splitlines() if line.strip()]
        replayed = key in self.batches
        self.batches.setdefault(key, records)
        return web.json_response({"records": len(records), "status": "accepted", "replayed": replayed}, status=202)


# --- a fake JSON-RPC node -------------------------------------------------------------------------------------------


async def _answer(call: dict[str, Any], delay: float) -> dict[str, Any] | None:
    method = call.get("method")
    if "id" not in call or method == "silent":  # a notification; a node that drops a call
        return None
    if method == "slow":
        await asyncio.sleep(delay)
    results = {"eth_blockNumber": "0x10", "eth_getBalance": "0x0", "eth_call": "0x", "eth_chainId": "0x1", "slow": "0x"}
    if method == "fail":
        return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32603, "message": "internal error"}}
    if method == "revert":
        return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": 3, "message": "execution reverted"}}
    if method not in results:
        return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32601, "message": "Method not found"}}
    return {"jsonrpc": "2.0", "id": call["id"], "result": results[method]}


def fake_node(*, delay: float = 5.0, status: int = 200, seen: list[bytes] | None = None) -> web.Application:
    """A node that knows a few methods; `slow` takes `delay` seconds, `fail` is an internal error, `revert` a revert,
    `silent` gets no answer."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if seen is not None:
            seen.append(body)
        if status != 200:
            return web.Response(status=status, text="upstream trouble")
        payload = json.loads(body)
        if isinstance(payload, list):
            answers = [a for a in [await _answer(call, delay) for call in payload] if a is not None]
            return web.json_response(answers)
        return web.json_response(await _answer(payload, delay))

    app = web.Application()
    app.router.add_post("/", handle)
    return app
