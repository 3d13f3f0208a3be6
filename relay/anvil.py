"""Where Anvil, Foundry's local Ethereum node, is: `make anvil` installs the pinned npm package @foundry-rs/anvil
(which ships the native binary) into .tools/ (git-ignored). `make run`, the relay's tests and bench/relay.py use it
as the demo chain's real JSON-RPC upstream."""

from __future__ import annotations

import platform
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]
NODE_MODULES = BASE_DIR / ".tools" / "node_modules"
# The platform packages @foundry-rs/anvil depends on (optionalDependencies), by (system, machine).
_PLATFORM_PACKAGES = {
    ("Linux", "x86_64"): "anvil-linux-amd64",
    ("Linux", "aarch64"): "anvil-linux-arm64",
    ("Darwin", "x86_64"): "anvil-darwin-amd64",
    ("Darwin", "arm64"): "anvil-darwin-arm64",
}


def anvil_binary() -> Path | None:
    """The native binary npm installed (no node wrapper in between: signals reach Anvil itself), if any."""
    package = _PLATFORM_PACKAGES.get((platform.system(), platform.machine()))
    binary = NODE_MODULES / "@foundry-rs" / package / "bin" / "anvil" if package else None
    if binary is not None and binary.is_file():
        return binary
    shim = NODE_MODULES / ".bin" / "anvil"
    return shim if shim.is_file() else None
