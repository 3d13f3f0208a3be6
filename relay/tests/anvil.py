"""Anvil, Foundry's local Ethereum node, as a real JSON-RPC upstream for tests (relay/anvil.py finds the binary)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from relay.anvil import anvil_binary

BASE_DIR = Path(__file__).resolve().parents[2]


def require_anvil() -> Path:
    """Anvil's binary; installed with `make anvil` when missing. Skips only where node is missing (CI has it)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: Anvil comes from the npm registry (@foundry-rs/anvil)")
    binary = anvil_binary()
    if binary is None:
        make = subprocess.run(["make", "-s", "anvil"], cwd=BASE_DIR, capture_output=True, text=True, check=False)
        binary = anvil_binary()
        if binary is None:
            pytest.fail(f"`make anvil` did not install Anvil:\n{make.stdout}\n{make.stderr}")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rpc(url: str, method: str, params: list[object] | None = None, timeout: float = 5.0) -> object:
    """One JSON-RPC call straight to a node; the result (or the error object)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})  # noqa: S310 - a local node
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        answer = json.loads(response.read())
    return answer.get("result", answer.get("error"))


@contextmanager
def running_anvil() -> Iterator[str]:
    """Anvil on a free port (`anvil --port P --silent`); yields its URL once it answers, stops it afterwards."""
    binary = require_anvil()
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--silent"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                rpc(url, "eth_chainId", timeout=1)
                break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Anvil did not start on port {port} (exit code {process.poll()})") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
