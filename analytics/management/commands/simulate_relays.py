"""`manage.py simulate_relays`: play a gateway against a running Gatehouse, through its real HTTP API only.

It reads the config feed and pushes usage batches exactly as a gateway does (gzip'ed NDJSON, one
Idempotency-Key per batch, retries of the same body under the same key), so the demo's charts are fed
by the same code path production traffic takes. The traffic itself comes from analytics.simulator.

With --relay, the live phase sends real requests through the reference relay instead (analytics.relay_traffic):
the relay serves them from its upstreams and reports their usage; relays it cannot serve stay synthetic.
"""

from __future__ import annotations

import gzip
import http.client
import json
import math
import random
import secrets
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections

from analytics import simulator
from analytics.ingest import MAX_AGE, MAX_BYTES, MAX_RECORDS
from analytics.relay_traffic import RelayTraffic
from endpoints.models import GatewayCredential
from endpoints.services import gateway_credential_create, gateway_credential_revoke, gateway_credentials_revoke

CREDENTIAL_PREFIX = "simulator-"
CONFIG_PATH = "/api/gateway/v1/config"
USAGE_PATH = "/api/gateway/v1/usage"
MAX_BACKFILL_DAYS = 35
# The oldest records go first, so a small margin keeps them inside ingestion's 35-day window.
AGE_MARGIN = timedelta(minutes=10)
LIVE_TICK_SECONDS = 2.0
PROGRESS_EVERY_BATCHES = 10
ATTEMPTS = 6
BACKOFF_SECONDS = 0.5
GZIP_LEVEL = 5


# --- the gateway's side of the HTTP API ------------------------------------------------------------


class GatewayRefusedError(Exception):
    """A 4xx answer: sending the same thing again cannot help."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        super().__init__(describe_refusal(status, body))


class GatewayUnavailableError(Exception):
    """Connection errors or 5xx answers on every attempt."""


class StoppedWhileRetryingError(Exception):
    """SIGINT/SIGTERM arrived while waiting to retry; the batch in flight was not confirmed."""


def describe_refusal(status: int, body: Any) -> str:
    """The refusal as the operator needs to read it: code, detail and the first invalid lines."""
    if not isinstance(body, dict):
        return f"HTTP {status}: {str(body)[:300]}"
    text = f"HTTP {status} {body.get('code', '?')}: {body.get('detail', '')}"
    for error in (body.get("errors") or [])[:3]:
        text += f"\n  line {error.get('line')}: {error.get('reason')}"
    return text


@dataclass
class Batch:
    body: bytes  # NDJSON, not yet compressed
    records: int
    last_ts: str


def ndjson_batches(records: Iterable[dict[str, Any]], *, batch_size: int, max_bytes: int) -> Iterator[Batch]:
    """Cut records into NDJSON bodies of at most batch_size records and max_bytes (the server's limits)."""
    encode = msgspec.json.Encoder().encode
    lines: list[bytes] = []
    size = 0
    last_ts = ""
    for record in records:
        line = encode(record) + b"\n"
        if lines and (len(lines) >= batch_size or size + len(line) > max_bytes):
            yield Batch(b"".join(lines), len(lines), last_ts)
            lines, size = [], 0
        lines.append(line)
        size += len(line)
        last_ts = record["ts"]
    if lines:
        yield Batch(b"".join(lines), len(lines), last_ts)


class GatewayClient:
    """The two gateway calls, with retries that are safe because the server deduplicates by Idempotency-Key."""

    def __init__(
        self,
        base_url: str,
        secret: str,
        *,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF_SECONDS,
        timeout: float = 60.0,
        stop: threading.Event | None = None,
        warn: Callable[[str], None] = lambda message: None,
    ):
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.stop = stop or threading.Event()
        self.warn = warn

    def config(self) -> dict[str, Any]:
        """The full config snapshot."""
        headers, data = self._call("GET", CONFIG_PATH, None, {"Accept-Encoding": "gzip"})
        if headers.get("Content-Encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        return json.loads(data)

    def send(self, body: bytes) -> dict[str, Any]:
        """POST one NDJSON batch (gzip'ed); returns the 202 answer. Every attempt sends the same bytes
        under the same Idempotency-Key, so a batch whose answer was lost is counted once, not twice."""
        payload = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        headers = {
            "Content-Type": "application/x-ndjson",
            "Content-Encoding": "gzip",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        _headers, data = self._call("POST", USAGE_PATH, payload, headers)
        return json.loads(data)

    def _call(self, method: str, path: str, payload: bytes | None, headers: dict[str, str]) -> tuple[Any, bytes]:
        url = self.base_url + path
        headers = {**headers, "Authorization": f"Bearer {self.secret}", "User-Agent": "gatehouse-simulator/1"}
        problem = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                delay = self.backoff * 2 ** (attempt - 2)
                self.warn(f"{method} {path}: {problem}; retrying the same request in {delay:g} s")
                if self.stop.wait(delay):
                    raise StoppedWhileRetryingError
            request = urllib.request.Request(url, data=payload, headers=headers, method=method)  # noqa: S310 - our --url
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    return response.headers, response.read()
            except urllib.error.HTTPError as error:
                data = error.read()
                if error.code < 500:
                    raise GatewayRefusedError(error.code, _json_or_text(data)) from None
                problem = f"HTTP {error.code}"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                problem = str(getattr(error, "reason", None) or error)
        raise GatewayUnavailableError(f"{method} {url}: {problem} (gave up after {self.attempts} attempts)")


def _json_or_text(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", errors="replace")


def sim_keys(config: dict[str, Any], teams: Iterable[str] = ()) -> list[simulator.SimKey]:
    """The active keys of the snapshot (of these team slugs, if any), with their endpoints' services."""
    wanted = set(teams)
    endpoints = {e["endpoint_id"]: e for e in config.get("endpoints", [])}
    keys = []
    for key in config.get("keys", []):
        endpoint = endpoints.get(key["endpoint_id"])
        if key["status"] != "active" or endpoint is None or (wanted and key["team"] not in wanted):
            continue
        sim_key = simulator.SimKey.from_catalog(
            key_id=key["key_id"],
            endpoint_id=key["endpoint_id"],
            team=key["team"],
            service_ids=endpoint["services"],
            allowed_methods=(endpoint.get("allowlists") or {}).get("methods") or {},
            environment=endpoint.get("environment", "production"),
        )
        if sim_key is not None:
            keys.append(sim_key)
    return keys


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM finish the batch in flight and stop cleanly; a second signal stops at once."""
    if threading.current_thread() is not threading.main_thread():  # e.g. call_command from a thread
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- the command ------------------------------------------------------------------------------------


@dataclass
class Totals:
    records: int = 0
    batches: int = 0
    backfill_records: int = 0
    live_records: int = 0
    relayed: int = 0  # live relays sent through the reference relay (it reports their usage)


class Command(BaseCommand):
    help = (
        "Act as a gateway: read the config feed and push realistic usage (RPC and LLM relays) to the usage API, "
        "first a backfill of past days, then live traffic every 2 seconds until stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Gatehouse's base URL")
        parser.add_argument(
            "--backfill-days", type=int, default=7, help=f"days of history to send first (0–{MAX_BACKFILL_DAYS})"
        )
        parser.add_argument("--backfill-rate", type=float, default=60.0, help="backfill: average records per minute")
        parser.add_argument(
            "--live-rate",
            type=float,
            default=5.0,
            help="live: average records per second, shaped by the time of day (0: no live phase)",
        )
        parser.add_argument("--batch-size", type=int, default=5000, help=f"records per batch (≤ {MAX_RECORDS:,})")
        parser.add_argument("--duration", type=float, default=0.0, help="seconds of live traffic (0: until stopped)")
        parser.add_argument(
            "--team", action="append", default=[], help="only keys of this team slug (repeatable; default: all)"
        )
        parser.add_argument(
            "--once-marker", help="skip the backfill if this file exists; create it after a successful backfill"
        )
        parser.add_argument("--seed", type=int, help="random seed, to reproduce a run's traffic")
        parser.add_argument("--relay", help="live: send requests through the reference relay at this base URL")
        parser.add_argument(
            "--relay-services", default="", help="live: the services the relay has upstreams for (comma-separated)"
        )
        parser.add_argument(
            "--key-secrets", help="live: a JSON file {key_id: secret} (seed_demo --key-secrets-file writes one)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._validate(options)
        seed = options["seed"] if options["seed"] is not None else secrets.randbits(32)
        rng = random.Random(seed)  # noqa: S311 - simulated traffic, not security
        self.stop = threading.Event()
        self.totals = Totals()
        self.started = time.monotonic()
        credential, secret = self._credential()
        try:
            client = GatewayClient(options["url"], secret, stop=self.stop, warn=self.stderr.write)
            with stop_on_signals(self.stop):
                self._run(client, rng, seed, options)
        finally:
            self._revoke(credential)
        elapsed = time.monotonic() - self.started
        t = self.totals
        self.stdout.write(
            f"sent {t.records} records in {t.batches} batches and {t.relayed} requests through the relay "
            f"({t.backfill_records} backfill, {t.live_records} live) in {elapsed:.1f} s"
            if t.relayed
            else f"sent {t.records} records in {t.batches} batches ({t.backfill_records} backfill, "
            f"{t.live_records} live) in {elapsed:.1f} s"
        )

    def _validate(self, options: dict[str, Any]) -> None:
        if not 0 <= options["backfill_days"] <= MAX_BACKFILL_DAYS:
            raise CommandError(f"--backfill-days must be 0–{MAX_BACKFILL_DAYS} (ingestion refuses older records).")
        if options["backfill_rate"] <= 0:
            raise CommandError("--backfill-rate must be positive.")
        if options["live_rate"] < 0 or options["duration"] < 0:
            raise CommandError("--live-rate and --duration cannot be negative.")
        if not 1 <= options["batch_size"] <= MAX_RECORDS:
            raise CommandError(f"--batch-size must be 1–{MAX_RECORDS:,}.")
        if options["relay"] and not options["relay"].startswith(("http://", "https://")):
            raise CommandError("--relay must be the relay's http(s) base URL, e.g. http://127.0.0.1:8545.")
        options["secrets"] = self._secrets(options["key_secrets"])

    @staticmethod
    def _secrets(path: str | None) -> dict[str, str]:
        if not path:
            return {}
        try:
            loaded = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return {}  # not written yet (a database seeded before the file existed): those keys stay synthetic
        except (OSError, ValueError) as error:
            raise CommandError(f"--key-secrets {path}: {error}") from None
        if not isinstance(loaded, dict):
            raise CommandError(f"--key-secrets {path}: expected a JSON object of key id → secret.")
        # A value is the secret, or seed_demo's {"name", "endpoint", "secret"}.
        return {str(key): str(value["secret"] if isinstance(value, dict) else value) for key, value in loaded.items()}

    def _credential(self) -> tuple[GatewayCredential, str]:
        """A fresh credential, kept in memory only; earlier simulators' credentials are revoked first,
        so restarts (or crashed runs) do not leave live credentials behind."""
        gateway_credentials_revoke(name_prefix=CREDENTIAL_PREFIX)
        name = f"{CREDENTIAL_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}"
        return gateway_credential_create(name=name)

    def _revoke(self, credential: GatewayCredential) -> None:
        close_old_connections()  # a long live phase may have outlived the database connection
        try:
            gateway_credential_revoke(credential=credential)
        except DatabaseError as error:
            self.stderr.write(f"could not revoke {credential.name} (the next run will): {error}")

    def _run(self, client: GatewayClient, rng: random.Random, seed: int, options: dict[str, Any]) -> None:
        try:
            config = client.config()
            keys = sim_keys(config, options["team"])
            if not keys:
                teams = f" of team(s) {', '.join(options['team'])}" if options["team"] else ""
                raise CommandError(
                    f"No active keys{teams} in the config feed: create an endpoint and an API key first "
                    "(e.g. manage.py seed_demo), or check --team."
                )
            endpoints = len({k.endpoint_id for k in keys})
            self.stdout.write(f"simulating {len(keys)} keys on {endpoints} endpoints (seed {seed})")
            live_from = datetime.now(UTC)
            if options["backfill_days"]:
                live_from = self._backfill(client, rng, keys, options)
            if options["live_rate"] and not self.stop.is_set():
                relay = None
                if options["relay"]:
                    relay = RelayTraffic(
                        options["relay"].rstrip("/"),
                        frozenset(s.strip() for s in options["relay_services"].split(",") if s.strip()),
                        {e["endpoint_id"]: e for e in config.get("endpoints", [])},
                        options["secrets"],
                    )
                    self._describe_relay(relay, keys)
                try:
                    self._live(client, rng, keys, live_from, options, relay)
                finally:
                    if relay is not None:
                        relay.close()
        except GatewayRefusedError as error:
            raise CommandError(f"the gateway API refused a request: {error}") from None
        except GatewayUnavailableError as error:
            raise CommandError(str(error)) from None
        except StoppedWhileRetryingError:
            self.stderr.write("stopped while retrying; the last batch was not confirmed")

    def _describe_relay(self, relay: RelayTraffic, keys: list[simulator.SimKey]) -> None:
        pairs = [(key.key_id, key.endpoint_id, s.service_id) for key in keys for s in key.services]
        routable = [p for p in pairs if relay.routable({"key_id": p[0], "endpoint_id": p[1], "service": p[2]})]
        self.stdout.write(
            f"live: through the relay at {relay.base_url}: {len(routable)} of {len(pairs)} key × service pairs "
            "(the others — no upstream for the service, or no secret on file for a key that needs one — stay "
            "synthetic)"
        )

    def _send(self, client: GatewayClient, batches: Iterable[Batch], *, final: bool = False) -> Iterator[Batch]:
        """Send each batch; yields it once the server has committed it (202). A stop signal ends the
        sending after the batch in flight, unless these are the final batches."""
        for batch in batches:
            answer = client.send(batch.body)
            if answer.get("records") != batch.records:
                self.stderr.write(f"batch {answer.get('batch_id')}: server counted {answer.get('records')}")
            self.totals.records += batch.records
            self.totals.batches += 1
            yield batch
            if self.stop.is_set() and not final:
                return

    def _backfill(
        self, client: GatewayClient, rng: random.Random, keys: list[simulator.SimKey], options: dict[str, Any]
    ) -> datetime:
        """Send [now − backfill days, now); returns its end, where live traffic picks up."""
        end = datetime.now(UTC)
        marker = Path(options["once_marker"]) if options["once_marker"] else None
        if marker is not None and marker.exists():
            self.stdout.write(f"{marker} exists: skipping the backfill")
            return end
        start = max(end - timedelta(days=options["backfill_days"]), end - MAX_AGE + AGE_MARGIN)
        rate = options["backfill_rate"]
        self.stdout.write(f"backfill {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC, ~{rate:g} records/minute")
        started = time.monotonic()
        records = simulator.backfill(rng, keys, start, end, rate)
        batches = ndjson_batches(records, batch_size=options["batch_size"], max_bytes=MAX_BYTES)
        sent = count = 0
        for batch in self._send(client, batches):
            sent += batch.records
            count += 1
            if count % PROGRESS_EVERY_BATCHES == 0:
                speed = sent / max(time.monotonic() - started, 1e-9)
                self.stdout.write(f"backfill: {sent:,} records sent, {speed:,.0f} records/s, up to {batch.last_ts}")
        self.totals.backfill_records = sent
        seconds = time.monotonic() - started
        if self.stop.is_set():
            self.stdout.write(f"backfill stopped after {sent:,} records; no marker written")
            return end
        self.stdout.write(
            f"backfill done: {sent:,} records in {count} batches, {seconds:.1f} s ({sent / max(seconds, 1e-9):,.0f}/s)"
        )
        if marker is not None:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"backfilled {sent} records, {start.isoformat()} to {end.isoformat()}\n")
        return end

    def _live(
        self,
        client: GatewayClient,
        rng: random.Random,
        keys: list[simulator.SimKey],
        cursor: datetime,
        options: dict[str, Any],
        relay: RelayTraffic | None = None,
    ) -> None:
        """Every 2 s, send the relays since the last send — through the relay, those it can serve. The first window
        starts where the backfill ended, so the charts have no gap; a slow send only makes the next window longer."""
        rate, duration = options["live_rate"], options["duration"]
        now = time.monotonic()
        deadline = now + duration if duration else math.inf
        next_tick, next_report = now + LIVE_TICK_SECONDS, now + 60
        minute_records = 0
        until = f"for {duration:g} s" if duration else "until stopped (Ctrl-C)"
        self.stdout.write(f"live: ~{rate:g} records/s (shaped by the time of day), {until}")
        while True:
            # On a stop signal, still send the relays since the last tick, as a gateway flushes on shutdown.
            stopping = self.stop.wait(max(0.0, min(next_tick, deadline) - time.monotonic()))
            window_end = datetime.now(UTC)
            records = simulator.live(rng, keys, cursor, window_end, rate)
            cursor = window_end
            if relay is not None:
                through, records = relay.split(records)
                answered = relay.send(through, rng)
                minute_records += answered
                self.totals.live_records += answered
                self.totals.relayed += answered
            batches = ndjson_batches(records, batch_size=options["batch_size"], max_bytes=MAX_BYTES)
            for batch in self._send(client, batches, final=stopping):
                minute_records += batch.records
                self.totals.live_records += batch.records
            now = time.monotonic()
            if now >= next_report:
                answers = ""
                if relay is not None and relay.answers:
                    statuses = ", ".join(f"{status} × {n:,}" for status, n in sorted(relay.answers.items()))
                    answers = f"; the relay answered {statuses}"
                    relay.answers.clear()
                self.stdout.write(
                    f"live: {minute_records:,} records in the last minute, "
                    f"{self.totals.records + self.totals.relayed:,} total{answers}"
                )
                minute_records, next_report = 0, now + 60
            if stopping or now >= deadline:
                break
            next_tick = max(next_tick + LIVE_TICK_SECONDS, now)
