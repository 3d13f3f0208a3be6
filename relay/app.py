"""The relay as an aiohttp application: routes, /healthz, /metrics, and the background work's lifetime.

`create_app(settings)` is all a server (python -m relay, a test, a benchmark) needs. On start it opens the HTTP
clients and starts following the feed and pushing usage; on shutdown (SIGTERM/SIGINT through aiohttp's runner, once
in-flight requests are answered) it stops following the feed, flushes the usage buffer to the spool and delivers
what it can within RELAY_SHUTDOWN_FLUSH_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from relay import llm
from relay.config import Settings
from relay.enforce import Enforcer
from relay.feed import ConfigStore, FeedFollower, snapshot_age
from relay.observability import Metrics
from relay.proxy import UPSTREAM_CONNECTIONS, Proxy
from relay.usage import UsagePusher

logger = logging.getLogger("relay")


@dataclass
class Relay:
    """Everything one relay process holds; created when the application starts."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    store: ConfigStore = field(default_factory=ConfigStore)
    follower: FeedFollower | None = None
    usage: UsagePusher | None = None
    proxy: Proxy | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def lifetime(self, _app: web.Application) -> AsyncIterator[None]:
        settings = self.settings
        gatehouse = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        upstreams = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=UPSTREAM_CONNECTIONS, limit_per_host=UPSTREAM_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=settings.upstream_timeout),
        )
        self.follower = FeedFollower(settings, self.store, gatehouse, self.metrics)
        self.usage = UsagePusher(settings, gatehouse, self.metrics)
        self.proxy = Proxy(settings, self.store, Enforcer(self.store), self.usage, self.metrics, upstreams)
        self._gauges()
        self.tasks = [
            asyncio.create_task(self.follower.run(), name="relay-feed"),
            asyncio.create_task(self.usage.run(), name="relay-usage"),
        ]
        logger.info(
            "relay started",
            extra={
                "gatehouse": settings.gatehouse_url,
                "region": settings.region,
                "services": sorted(settings.upstreams),
            },
        )
        try:
            yield
        finally:
            for task in self.tasks:
                task.cancel()
            for task in self.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.usage.close(settings.shutdown_flush_seconds)
            await upstreams.close()
            for pool in self.proxy.pools.values():
                pool.close()
            await gatehouse.close()
            logger.info("relay stopped")

    def _gauges(self) -> None:
        store, usage, gauge = self.store, self.usage, self.metrics.gauge
        assert usage is not None
        gauge("relay_config_keys", "Keys in the relay's config.", lambda: len(store.keys))
        gauge("relay_config_endpoints", "Endpoints in the relay's config.", lambda: len(store.endpoints))
        gauge("relay_config_cursor", "The config feed cursor the relay is at.", lambda: int(store.cursor or 0))
        gauge(
            "relay_config_age_seconds",
            "Seconds since the config feed last answered (-1 before the first snapshot).",
            lambda: age if (age := snapshot_age(store)) is not None else -1,
        )
        gauge("relay_usage_buffered_records", "Records waiting for the next flush.", lambda: len(usage.buffer))
        gauge("relay_spool_files", "Usage batches spooled, not yet acknowledged.", lambda: usage.spooled_files)
        gauge("relay_spool_records", "Usage records spooled, not yet acknowledged.", lambda: usage.spooled_records)

    def health(self) -> tuple[int, dict[str, object]]:
        age = snapshot_age(self.store)
        usage = self.usage
        body: dict[str, object] = {
            "status": "ok" if self.store.loaded else "starting",
            "config": {
                "loaded": self.store.loaded,
                "cursor": self.store.cursor,
                "keys": len(self.store.keys),
                "endpoints": len(self.store.endpoints),
                "age_seconds": None if age is None else round(age, 3),
            },
            "spool": {
                "files": usage.spooled_files if usage else 0,
                "records": usage.spooled_records if usage else 0,
            },
        }
        return (200 if self.store.loaded else 503), body


RELAY = web.AppKey("relay", Relay)


async def _healthz(request: web.Request) -> web.Response:
    status, body = request.app[RELAY].health()
    return web.json_response(body, status=status)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[RELAY].metrics.render(), content_type="text/plain", charset="utf-8")


def _proxy(request: web.Request) -> Proxy:
    proxy = request.app[RELAY].proxy
    if proxy is None:  # pragma: no cover - the routes answer only once the application started
        raise web.HTTPServiceUnavailable
    return proxy


def _guarded(handler: Handler) -> Handler:
    """An exception is the relay's own fault: a JSON-RPC internal error, logged with its traceback. (Wrapped around
    each proxying route rather than as a middleware: aiohttp's middleware chain costs the hot path measurably.)"""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            logger.exception("unhandled error", extra={"path": request.path})
            error = {"code": -32603, "message": "Internal gateway error.", "data": {"reason": "gateway_error"}}
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": error}, status=500)

    return guarded


@_guarded
async def _rpc(request: web.Request) -> web.StreamResponse:
    return await _proxy(request).handle(request)


def _llm_route(operation: str) -> Handler:
    async def route(request: web.Request) -> web.StreamResponse:
        return await llm.handle(_proxy(request), request, operation)

    return _guarded(route)


@_guarded
async def _preflight(request: web.Request) -> web.StreamResponse:
    return await _proxy(request).preflight(request)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    relay = Relay(settings)
    app[RELAY] = relay
    app.cleanup_ctx.append(relay.lifetime)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    for path in ("/v1/{key_id}", "/{service}/v1/{key_id}"):
        app.router.add_post(path, _rpc)
        app.router.add_route("OPTIONS", path, _preflight)
    for operation in llm.OPERATIONS:  # LLM services, OpenAI's API: /v1/<key_id>/chat/completions, …/embeddings
        for prefix in ("/v1/{key_id}", "/{service}/v1/{key_id}"):
            app.router.add_post(f"{prefix}/{operation}", _llm_route(operation))
            app.router.add_route("OPTIONS", f"{prefix}/{operation}", _preflight)
    return app
