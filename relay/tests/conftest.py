"""Fixtures of the relay's tests: a loop thread, servers on it (fakes or the relay), and a relay factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay.tests.helpers import FakeGatehouse, LoopThread, RunningRelay, fake_node, relay_settings, serve


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def servers(loop_thread: LoopThread) -> Iterator[Callable[..., str]]:
    """servers(app, port=0) → its URL, served on the loop thread until the test ends."""
    runners: list[web.AppRunner] = []

    def start(app: web.Application, port: int = 0) -> str:
        runner, url = loop_thread.run(serve(app, port))
        runners.append(runner)
        return url

    yield start
    for runner in reversed(runners):
        loop_thread.run(runner.cleanup())


@pytest.fixture
def gatehouse() -> FakeGatehouse:
    return FakeGatehouse()


@pytest.fixture
def gatehouse_url(gatehouse: FakeGatehouse, servers: Callable[..., str]) -> str:
    return servers(gatehouse.app())


@pytest.fixture
def node_url(servers: Callable[..., str]) -> str:
    return servers(fake_node())


@pytest.fixture
def start_relay(
    loop_thread: LoopThread, tmp_path: Path, servers: Callable[..., str]
) -> Iterator[Callable[..., RunningRelay]]:
    """start_relay(gatehouse_url, ready=True, **settings) → a relay serving on a free port; stopped after the test,
    before the servers it talks to (its shutdown delivers the usage it holds)."""
    started: list[RunningRelay] = []

    def start(gatehouse_url: str, *, ready: bool = True, **overrides: Any) -> RunningRelay:
        overrides.setdefault("spool_dir", tmp_path / "spool")
        relay = RunningRelay.start(loop_thread, relay_settings(gatehouse_url, **overrides), ready=ready)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def relay(start_relay: Callable[..., RunningRelay], gatehouse_url: str, node_url: str) -> RunningRelay:
    """A relay in front of the fake node for eth-mainnet, following the fake Gatehouse."""
    return start_relay(gatehouse_url, upstreams={"eth-mainnet": node_url, "base": node_url})
