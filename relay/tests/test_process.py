"""The relay as an operator runs it: settings from the environment (every problem named at once), and
`python -m relay` — JSON log lines, and SIGTERM answering what is in flight and flushing the usage it holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from relay.config import ConfigError, Settings, settings_from_env
from relay.tests.anvil import BASE_DIR, free_port
from relay.tests.helpers import GATEWAY_SECRET, FakeGatehouse

REQUIRED = {"GATEHOUSE_URL": "http://127.0.0.1:8000/", "GATEHOUSE_GATEWAY_SECRET": "ggw_abc"}


def test_settings_come_from_the_environment_with_defaults() -> None:
    settings = settings_from_env(REQUIRED)

    assert settings == Settings(gatehouse_url="http://127.0.0.1:8000", gateway_secret="ggw_abc")
    assert "ggw_abc" not in repr(settings)
    assert (settings.port, settings.feed_wait, settings.flush_records, settings.flush_interval) == (8545, 25, 1000, 1.0)


def test_upstreams_come_as_json_or_one_variable_per_service() -> None:
    settings = settings_from_env(
        REQUIRED
        | {
            "RELAY_UPSTREAMS": '{"eth-mainnet": "http://127.0.0.1:8545", "base": "http://127.0.0.1:9545"}',
            "RELAY_UPSTREAM_BASE": "http://base-node:8545",
            "RELAY_UPSTREAM_BASE_SEPOLIA": "https://sepolia.example/rpc",
            "RELAY_PORT": "9000",
            "RELAY_REGION": "eu-west-1",
            "RELAY_SPOOL_DIR": "/var/spool/relay",
        }
    )

    assert dict(settings.upstreams) == {
        "eth-mainnet": "http://127.0.0.1:8545",
        "base": "http://base-node:8545",
        "base-sepolia": "https://sepolia.example/rpc",
    }
    assert (settings.port, settings.region, settings.spool_dir) == (9000, "eu-west-1", Path("/var/spool/relay"))


def test_every_problem_is_named_at_once() -> None:
    environ = {
        "GATEHOUSE_URL": "ftp://gatehouse",
        "GATEHOUSE_GATEWAY_SECRET": "gk_live_not_a_gateway_credential",
        "RELAY_PORT": "eighty",
        "RELAY_FLUSH_INTERVAL": "0",
        "RELAY_UPSTREAMS": '["http://node"]',
        "RELAY_UPSTREAM_ETH_MAINNET": "node:8545",
        "RELAY_REGION": "eu west",
        "RELAY_LOG_LEVEL": "loud",
    }

    with pytest.raises(ConfigError) as refused:
        settings_from_env(environ)

    assert str(refused.value).splitlines() == [
        "The relay cannot start:",
        "  - GATEHOUSE_URL='ftp://gatehouse' is not an http(s) URL",
        "  - GATEHOUSE_GATEWAY_SECRET must be set to a gateway credential (ggw_…)",
        "  - RELAY_REGION='eu west': 1–32 printable ASCII characters, no spaces",
        "  - RELAY_LOG_LEVEL='LOUD': one of DEBUG, INFO, WARNING, ERROR",
        "  - RELAY_PORT='eighty' is not an integer",
        '  - RELAY_UPSTREAMS must be a JSON object: {"eth-mainnet": "http://…"}',
        "  - the upstream of eth-mainnet ('node:8545') is not an http(s) URL",
        "  - RELAY_FLUSH_INTERVAL=0 is outside 0.01–60",
    ]
    with pytest.raises(ConfigError, match="GATEHOUSE_URL must be set"):
        settings_from_env({})


def test_python_dash_m_relay_refuses_to_start_without_its_settings() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GATEHOUSE_", "RELAY_"))}
    result = subprocess.run(
        [sys.executable, "-m", "relay"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=30, check=False
    )

    assert result.returncode == 2
    assert "GATEHOUSE_URL must be set" in result.stderr


def test_sigterm_answers_in_flight_requests_and_flushes_usage(
    gatehouse: FakeGatehouse, gatehouse_url: str, node_url: str, tmp_path: Path, servers: Callable[..., str]
) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GATEHOUSE_", "RELAY_"))}
    env |= {
        "GATEHOUSE_URL": gatehouse_url,
        "GATEHOUSE_GATEWAY_SECRET": GATEWAY_SECRET,
        "RELAY_PORT": str(port),
        "RELAY_UPSTREAMS": json.dumps({"eth-mainnet": node_url}),
        "RELAY_SPOOL_DIR": str(tmp_path / "spool"),
        "RELAY_FLUSH_INTERVAL": "60",  # only the shutdown flushes
        "RELAY_FEED_WAIT": "0",
        "RELAY_FEED_POLL_INTERVAL": "0.1",
        "RELAY_REGION": "proc-1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "relay"], cwd=BASE_DIR, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, "the relay exited"
            assert time.monotonic() < deadline, "the relay did not become ready"
            time.sleep(0.05)
        call = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}
        answers = [requests.post(url + "/eth-mainnet/v1/key_one", json=call, timeout=5).status_code for _ in range(3)]
        assert gatehouse.records() == []
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert answers == [200, 200, 200]
    assert process.returncode == 0
    assert [(r["method"], r["region"]) for r in gatehouse.records()] == [("eth_blockNumber", "proc-1")] * 3
    lines = [json.loads(line) for line in err.decode().splitlines()]
    messages = [line["message"] for line in lines]
    assert "relay started" in messages
    assert "relay stopped" in messages
    assert GATEWAY_SECRET not in err.decode()
    assert {"ts", "level", "logger", "message"} <= lines[0].keys()
