"""The relay's settings, from environment variables only. A missing or malformed value stops the process at start,
with every problem listed at once (the relay is a separate process: it cannot use project/env.py, which is Django's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# RELAY_UPSTREAM_ETH_MAINNET=http://… names the upstream of service eth-mainnet (upper case, "-" and "." as "_").
UPSTREAM_PREFIX = "RELAY_UPSTREAM_"
_SERVICE_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
_REGION = re.compile(r"[\x21-\x7e]{1,32}")  # the usage record's region: printable ASCII, at most 32
MAX_RECORDS_PER_BATCH = 50_000  # Gatehouse's limit per batch (analytics.ingest.MAX_RECORDS, from the contract)


class ConfigError(Exception):
    """The environment does not describe a relay that can start; the message lists every problem."""


@dataclass(frozen=True)
class Settings:
    gatehouse_url: str
    gateway_secret: str = field(repr=False)  # never in a log line or a repr
    host: str = "127.0.0.1"
    port: int = 8545
    region: str = "local"
    upstreams: Mapping[str, str] = field(default_factory=dict)
    spool_dir: Path = Path(".data/relay-spool")
    flush_records: int = 1000
    flush_interval: float = 1.0
    feed_wait: int = 25
    feed_poll_interval: float = 1.0
    resnapshot_interval: float = 3600.0
    upstream_timeout: float = 15.0
    llm_api_key: str | None = field(default=None, repr=False)  # sent to LLM upstreams as a Bearer token
    max_body_bytes: int = 1024 * 1024
    max_batch_calls: int = 100
    trusted_proxy_count: int = 0
    shutdown_flush_seconds: float = 5.0
    log_level: str = "INFO"

    def upstream_for(self, service: str) -> str | None:
        return self.upstreams.get(service)


def _http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class _Reader:
    """Reads typed values from the environment, collecting every problem instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def text(self, name: str, default: str = "") -> str:
        return (self.environ.get(name) or "").strip() or default

    def number(self, name: str, default: float, *, minimum: float, maximum: float, integer: bool = False) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not {'an integer' if integer else 'a number'}")
            return default
        if not minimum <= value <= maximum:
            self.problems.append(f"{name}={raw} is outside {minimum:g}–{maximum:g}")
            return default
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        return int(self.number(name, default, minimum=minimum, maximum=maximum, integer=True))

    def upstreams(self) -> dict[str, str]:
        upstreams: dict[str, str] = {}
        raw = self.text("RELAY_UPSTREAMS")
        if raw:
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as error:
                self.problems.append(f"RELAY_UPSTREAMS is not JSON: {error}")
                parsed = {}
            if not isinstance(parsed, dict):
                self.problems.append('RELAY_UPSTREAMS must be a JSON object: {"eth-mainnet": "http://…"}')
                parsed = {}
            upstreams.update({str(k): v for k, v in parsed.items()})
        # One variable per service overrides the JSON entry: handy in process managers that template one line each.
        for name, value in self.environ.items():
            if name.startswith(UPSTREAM_PREFIX) and value.strip():
                service = name.removeprefix(UPSTREAM_PREFIX).lower().replace("_", "-")
                upstreams[service] = value.strip()
        for service, url in upstreams.items():
            if not _SERVICE_ID.fullmatch(service):
                self.problems.append(f"upstream service id {service!r} is not a catalog id such as eth-mainnet")
            elif not isinstance(url, str) or not _http_url(url):
                self.problems.append(f"the upstream of {service} ({url!r}) is not an http(s) URL")
        return upstreams


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    """The settings the environment describes, or ConfigError naming every problem."""
    read = _Reader(environ)
    gatehouse_url = read.text("GATEHOUSE_URL").rstrip("/")
    if not gatehouse_url:
        read.problems.append("GATEHOUSE_URL must be set (e.g. http://127.0.0.1:8000)")
    elif not _http_url(gatehouse_url):
        read.problems.append(f"GATEHOUSE_URL={gatehouse_url!r} is not an http(s) URL")
    secret = read.text("GATEHOUSE_GATEWAY_SECRET")
    if not secret.startswith("ggw_"):
        read.problems.append("GATEHOUSE_GATEWAY_SECRET must be set to a gateway credential (ggw_…)")
    region = read.text("RELAY_REGION", "local")
    if not _REGION.fullmatch(region):
        read.problems.append(f"RELAY_REGION={region!r}: 1–32 printable ASCII characters, no spaces")
    level = read.text("RELAY_LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        read.problems.append(f"RELAY_LOG_LEVEL={level!r}: one of DEBUG, INFO, WARNING, ERROR")
    settings = Settings(
        gatehouse_url=gatehouse_url,
        gateway_secret=secret,
        host=read.text("RELAY_HOST", "127.0.0.1"),
        port=read.integer("RELAY_PORT", 8545, minimum=0, maximum=65535),
        region=region,
        upstreams=read.upstreams(),
        spool_dir=Path(read.text("RELAY_SPOOL_DIR", ".data/relay-spool")),
        flush_records=read.integer("RELAY_FLUSH_RECORDS", 1000, minimum=1, maximum=MAX_RECORDS_PER_BATCH),
        flush_interval=read.number("RELAY_FLUSH_INTERVAL", 1.0, minimum=0.01, maximum=60),
        feed_wait=read.integer("RELAY_FEED_WAIT", 25, minimum=0, maximum=30),
        feed_poll_interval=read.number("RELAY_FEED_POLL_INTERVAL", 1.0, minimum=0.01, maximum=60),
        resnapshot_interval=read.number("RELAY_RESNAPSHOT_INTERVAL", 3600.0, minimum=1, maximum=7 * 86400),
        upstream_timeout=read.number("RELAY_UPSTREAM_TIMEOUT", 15.0, minimum=0.1, maximum=600),
        llm_api_key=read.text("RELAY_LLM_API_KEY") or None,
        max_body_bytes=read.integer("RELAY_MAX_BODY_BYTES", 1024 * 1024, minimum=1024, maximum=64 * 1024 * 1024),
        max_batch_calls=read.integer("RELAY_MAX_BATCH", 100, minimum=1, maximum=10_000),
        trusted_proxy_count=read.integer("RELAY_TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10),
        shutdown_flush_seconds=read.number("RELAY_SHUTDOWN_FLUSH_SECONDS", 5.0, minimum=0, maximum=300),
        log_level=level,
    )
    if read.problems:
        raise ConfigError("The relay cannot start:\n  - " + "\n  - ".join(read.problems))
    return settings
