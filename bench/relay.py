"""Relay benchmark: the reference relay in front of a real Ethereum node, on the real stack.

Starts, on a database of its own (gatehouse_bench_relay; bench/ingest.py's machinery: gunicorn sync workers, one
Celery worker, celery beat), Anvil (the binary `make anvil` installs) and one relay process — `python -m relay`,
configured by environment variables as an operator would, following gunicorn's config feed with its long-poll
(`?since=&wait=25`) and pushing its usage to gunicorn. Before anything starts, --keys keys (100,000) are seeded as
bulk rows (bench/config_feed.py's seeding: teams × 10 endpoints × 10 keys), so the feed serves them and the relay
holds them all; the keys the bench itself uses are made through the services.

1. Throughput and added latency. One asyncio client (aiohttp, --concurrency keep-alive connections) sends
   `eth_blockNumber` for --duration seconds straight to Anvil and as long through the relay, in --rounds alternating
   rounds (each after a 2 s warm-up), so a drifting machine weighs alike on both: requests/s and their ratio.
   Latency is measured apart, at concurrency 1 so it is latency, not queueing: --latency-requests sequential calls on
   one connection each, alternating direct / through the relay so both see the same machine; added p50 (p99) = the
   relay's p50 (p99) minus the direct one.
2. Revocation → refusal at the edge. --tries times: a key made with api_key_create, polled through the relay until
   it is served, then api_key_revoke; the clock runs from the service call to the first 401 through the relay
   (polled back to back, ~1 ms apart). Then, on a team of its own, team_suspend → the first 402 and team_unsuspend
   → the first 200, --tries times each. p50 / p95 / max.
3. Usage completeness. The relay is stopped with SIGTERM (it flushes its buffer and delivers its spool), the worker
   aggregates, beat compacts; then for every key the bench used, the raw log and the minute, hour and day rollups
   must hold exactly what the client was answered: its 200s as status_2xx, and every answer the relay records
   (all but unknown-key refusals) once as a request.

    .venv/bin/python bench/relay.py [--duration 15 --rounds 3 --concurrency 32 --tries 24 --keys 100000] [--quick]

Exit status: 0 when every target is met, 1 when a result is wrong (a usage total off, a key never refused or never
restored, an error answer under load), 2 when a target is missed. Every process it starts and its database are
removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # first: `relay` is the package, not this file

import aiohttp
import config_feed  # bench/config_feed.py: 100,000 keys as bulk rows
import ingest  # bench/ingest.py: stores, the running stack, waiting for aggregation
from faults import calibrate, exit_status, spawn, stop_group  # bench/faults.py: cu, exit status, child processes

from relay.anvil import anvil_binary

ingest.BENCH_DB = "gatehouse_bench_relay"
BASE_DIR = ingest.BASE_DIR
SERVICE = "eth-mainnet"
CALL = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
HEADERS = {"Content-Type": "application/json"}  # the endpoints do not require the secret: a URL is all a client has
UNRECORDED = frozenset({"unknown_key", "unknown_service", "not_ready"})  # refusals the relay attributes to no key
SUSPENSION_REASON = "bench: suspended by the relay benchmark"
POLL_PAUSE_S = 0.001
TRY_TIMEOUT_S = 10.0
WARMUP_S = 2.0
RATE_LIMIT_RPS = 1_000_000  # the plan's limit for the bench's teams: the token bucket runs, but never refuses

TARGET_THROUGHPUT_SHARE = 0.5
TARGET_ADDED_P50_MS = 2.0
TARGET_ADDED_P99_MS = 10.0
TARGET_REFUSAL_P95_S = 1.0
MIN_TRIES = 20


def pct(values: list[float], q: float) -> float:
    return ingest.pct(values, q)


def reason_of(body: bytes) -> str | None:
    """The relay's refusal reason (error.data.reason) in an answer, if any."""
    try:
        data = json.loads(body)["error"]["data"]
    except (ValueError, KeyError, TypeError):
        return None
    return data.get("reason") if isinstance(data, dict) else None


@dataclass
class Tally:
    """Every answer the client got through the relay, per key id: what the relay must have recorded."""

    served: Counter[str] = field(default_factory=Counter)  # 200s
    recorded: Counter[str] = field(default_factory=Counter)  # every answer the relay attributes to the key
    unrecorded: Counter[str] = field(default_factory=Counter)  # unknown-key refusals: nobody to attribute them to
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key_id: str, status: int, reason: str | None, count: int = 1) -> None:
        with self.lock:
            if status == 200:
                self.served[key_id] += count
            if reason in UNRECORDED:
                self.unrecorded[key_id] += count
            else:
                self.recorded[key_id] += count


# --- the processes ------------------------------------------------------------------------------------------------


def wait_until(
    check: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} (exit status {process.poll()}); its log:\n{tail}")
        time.sleep(0.05)


def get(port: int, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST" if body is not None else "GET", path, body=body, headers=HEADERS)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def running_anvil(log_dir: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    binary = anvil_binary()
    if binary is None:
        subprocess.run(["make", "-s", "anvil"], cwd=BASE_DIR, check=False)
        binary = anvil_binary()
    if binary is None:
        raise RuntimeError("Anvil is not installed and `make anvil` could not install it (it needs node and npm)")
    port = ingest.free_port()
    process = spawn("anvil", [str(binary), "--port", str(port), "--silent"], dict(os.environ), log_dir)
    try:
        wait_until(lambda: get(port, "/", CALL)[0] == 200, "Anvil did not start", process, log_dir / "anvil.log", 30)
        yield port, process
    finally:
        stop_group(process)


@dataclass
class RelayProcess:
    port: int
    process: subprocess.Popen[bytes]
    spool: Path
    log: Path
    ready_s: float
    keys: int

    def stop(self) -> int | None:
        """SIGTERM: it answers what is in flight, flushes its buffer and delivers its spool, then exits."""
        stop_group(self.process, timeout=30)
        return self.process.returncode


@contextlib.contextmanager
def running_relay(gatehouse_port: int, secret: str, anvil_port: int, log_dir: Path) -> Iterator[RelayProcess]:
    port = ingest.free_port()
    spool = log_dir / "relay-spool"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GATEHOUSE_", "RELAY_"))}
    env |= {
        "GATEHOUSE_URL": f"http://127.0.0.1:{gatehouse_port}",
        "GATEHOUSE_GATEWAY_SECRET": secret,
        "RELAY_PORT": str(port),
        "RELAY_UPSTREAMS": json.dumps({SERVICE: f"http://127.0.0.1:{anvil_port}"}),
        "RELAY_SPOOL_DIR": str(spool),
        "RELAY_REGION": "bench-1",
    }  # everything else at its default, as an operator would start it (RELAY_FEED_WAIT=25: the long-poll)
    started = time.perf_counter()
    process = spawn("relay", [sys.executable, "-m", "relay"], env, log_dir)
    relay = RelayProcess(port, process, spool, log_dir / "relay.log", 0.0, 0)
    try:
        wait_until(
            lambda: get(port, "/healthz")[0] == 200, "the relay did not load its config", process, relay.log, 180
        )
        relay.ready_s = time.perf_counter() - started
        relay.keys = json.loads(get(port, "/healthz")[1])["config"]["keys"]
        yield relay
    finally:
        relay.stop()


# --- 1. throughput and latency ------------------------------------------------------------------------------------


@dataclass
class Load:
    """What one load run got: requests completed in the measured window, and every answer (warm-up included)."""

    completed: int = 0
    seconds: float = 0.0
    answers: Counter[tuple[int, str | None]] = field(default_factory=Counter)  # (status, refusal reason)
    failures: Counter[str] = field(default_factory=Counter)
    not_results: int = 0  # 200s whose body carries no JSON-RPC result
    cpu: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0  # seconds of load, warm-ups included (what the CPU laps cover)

    def add(self, other: Load, cpu: dict[str, float]) -> None:
        """Another round's figures into these."""
        self.completed += other.completed
        self.seconds += other.seconds
        self.answers.update(other.answers)
        self.failures.update(other.failures)
        self.not_results += other.not_results
        self.wall += other.seconds + WARMUP_S
        for name, spent in cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + spent

    @property
    def total(self) -> int:
        """Every answer, warm-up included (what the CPU laps cover)."""
        return sum(self.answers.values())

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def wrong(self) -> list[str]:
        problems = [
            f"{count:,} answers {status} {reason}" for (status, reason), count in self.answers.items() if status != 200
        ]
        problems += [f"{count:,} × {failure}" for failure, count in self.failures.items()]
        if self.not_results:
            problems.append(f"{self.not_results:,} answers 200 without a result")
        return problems


async def load(url: str, concurrency: int, seconds: float) -> Load:
    """`concurrency` connections sending CALL back to back: WARMUP_S, then `seconds` counted."""
    result = Load(seconds=seconds)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + WARMUP_S
        end = start + seconds

        async def connection() -> None:
            while loop.time() < end:
                try:
                    async with session.post(url, data=CALL, headers=HEADERS) as response:
                        body = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as error:
                    result.failures[type(error).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                result.answers[(status, reason_of(body) if status != 200 else None)] += 1
                if status == 200 and b'"result"' not in body:
                    result.not_results += 1
                if start <= loop.time() < end:
                    result.completed += 1

        await asyncio.gather(*(connection() for _ in range(concurrency)))
    return result


@dataclass
class Latency:
    direct_ms: list[float] = field(default_factory=list)
    relay_ms: list[float] = field(default_factory=list)
    relay_statuses: Counter[int] = field(default_factory=Counter)
    direct_statuses: Counter[int] = field(default_factory=Counter)


async def paired_latency(direct_url: str, relay_url: str, count: int, warmup: int) -> Latency:
    """Sequential calls on one connection to each, alternating which goes first; the first `warmup` pairs untimed."""
    result = Latency()
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as direct,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as relayed,
    ):
        sides = [(direct, direct_url, result.direct_ms, result.direct_statuses),
                 (relayed, relay_url, result.relay_ms, result.relay_statuses)]  # fmt: skip
        for n in range(warmup + count):
            for session, url, timings, statuses in sides if n % 2 == 0 else reversed(sides):
                started = time.perf_counter()
                async with session.post(url, data=CALL, headers=HEADERS) as response:
                    await response.read()
                elapsed = (time.perf_counter() - started) * 1000
                statuses[response.status] += 1
                if n >= warmup:
                    timings.append(elapsed)
    return result


class CpuClock:
    """CPU time per group of processes (threads included; a group in `trees` with its roots' children), and of the
    whole machine."""

    def __init__(self, roots: dict[str, list[int]], trees: frozenset[str]):
        import psutil

        self.roots = {name: [psutil.Process(pid) for pid in pids] for name, pids in roots.items()}
        self.trees = trees
        self.seen: dict[int, float] = {}  # pid → CPU seconds at the last lap
        self.machine = self._machine()
        self.lap()

    @staticmethod
    def _machine() -> float:
        import psutil

        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def lap(self) -> dict[str, float]:
        """Core-seconds per group since the last lap; "postgres, redis, rest" is what the machine spent besides."""
        import psutil

        spent: dict[str, float] = {}
        for name, roots in self.roots.items():
            spent[name] = 0.0
            for root in roots:
                with contextlib.suppress(psutil.NoSuchProcess):
                    for process in [root, *(root.children(recursive=True) if name in self.trees else [])]:
                        with contextlib.suppress(psutil.NoSuchProcess):
                            times = process.cpu_times()
                            now = times.user + times.system
                            spent[name] += now - self.seen.get(process.pid, 0.0)  # a new child: all of it
                            self.seen[process.pid] = now
        machine = self._machine()
        spent["machine"], self.machine = machine - self.machine, machine
        spent["postgres, redis, rest"] = max(0.0, spent["machine"] - sum(v for k, v in spent.items() if k != "machine"))
        return spent


def cpu_line(spent: dict[str, float], wall: float, requests: int) -> str:
    parts = [f"{name} {spent[name] / wall:.2f}" for name in spent if name != "machine" and spent[name] >= 0.005 * wall]
    per_request = ", ".join(
        f"{name} {spent[name] / requests * 1e6:.0f}" for name in ("client", "relay", "anvil") if name in spent
    )
    return (
        ", ".join(parts)
        + f" cores (machine {spent['machine'] / wall:.2f} of {os.cpu_count()}); CPU µs per request: {per_request}"
    )


# --- 2. revocation, suspension, resumption ------------------------------------------------------------------------


class Poller:
    """Requests through the relay on one keep-alive connection, each answer tallied."""

    def __init__(self, port: int, tally: Tally):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.tally = tally

    def ask(self, key_id: str) -> tuple[int, str | None]:
        self.conn.request("POST", f"/{SERVICE}/v1/{key_id}", body=CALL, headers=HEADERS)
        response = self.conn.getresponse()
        body = response.read()
        reason = reason_of(body) if response.status != 200 else None
        self.tally.add(key_id, response.status, reason)
        return response.status, reason

    def until(self, key_id: str, status: int, reason: str | None, started: float) -> tuple[float | None, str]:
        """Seconds from `started` to the first answer `status` (with `reason`), or None; and the last answer seen."""
        last = "nothing"
        while time.perf_counter() - started < TRY_TIMEOUT_S:
            got, got_reason = self.ask(key_id)
            if got == status and got_reason == reason:
                return time.perf_counter() - started, f"{got} {got_reason}"
            last = f"{got} {got_reason}"
            time.sleep(POLL_PAUSE_S)
        return None, last

    def close(self) -> None:
        self.conn.close()


@dataclass
class Edge:
    """Seconds from a service call to the relay answering accordingly, per kind; and what never happened."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EDGE_KINDS})
    service_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in EDGE_KINDS})
    problems: list[str] = field(default_factory=list)


EDGE_KINDS = {
    "created": "api_key_create → first 200",
    "revoked": "api_key_revoke → first 401 key_revoked",
    "suspended": "team_suspend → first 402 suspended",
    "resumed": "team_unsuspend → first 200",
}


def edge_latencies(bench: BenchSetup, relay_port: int, tries: int, tally: Tally) -> Edge:
    from endpoints.services import api_key_create, api_key_revoke, team_suspend, team_unsuspend

    edge = Edge()
    poller = Poller(relay_port, tally)

    def timed(kind: str, key_id: str, status: int, reason: str | None, call: Callable[[], object]) -> bool:
        started = time.perf_counter()
        call()
        edge.service_ms[kind].append((time.perf_counter() - started) * 1000)
        seconds, last = poller.until(key_id, status, reason, started)
        if seconds is None:
            edge.problems.append(f"{EDGE_KINDS[kind]}: not within {TRY_TIMEOUT_S:.0f} s (last answer {last})")
            return False
        edge.seconds[kind].append(seconds)
        return True

    try:
        for n in range(tries):
            started = time.perf_counter()
            key, _secret = api_key_create(endpoint=bench.revoke_endpoint, name=f"try {n}", actor=bench.owner)
            edge.service_ms["created"].append((time.perf_counter() - started) * 1000)
            bench.key_pks[key.key_id] = key.pk
            seconds, last = poller.until(key.key_id, 200, None, started)
            if seconds is None:
                edge.problems.append(f"{EDGE_KINDS['created']}: not within {TRY_TIMEOUT_S:.0f} s (last answer {last})")
                continue
            edge.seconds["created"].append(seconds)
            timed("revoked", key.key_id, 401, "key_revoked", lambda key=key: api_key_revoke(key=key, actor=bench.owner))
        team, key_id = bench.suspend_team, bench.suspend_key_id
        for _ in range(tries):
            if not timed("suspended", key_id, 402, "suspended",
                         lambda: team_suspend(team=team, reason=SUSPENSION_REASON)):  # fmt: skip
                team_unsuspend(team=team)
            timed("resumed", key_id, 200, None, lambda: team_unsuspend(team=team))
    finally:
        poller.close()
    return edge


# --- 3. usage completeness ----------------------------------------------------------------------------------------


def usage_check(database_url: str, tally: Tally, key_pks: dict[str, int]) -> tuple[bool, list[str]]:
    """Per key: the raw log and every rollup grain against what the client was answered. (ok, report lines)."""
    import psycopg

    expected = {key_pks[k]: (tally.recorded[k], tally.served[k]) for k in set(tally.recorded) | set(tally.served)}
    pks = list(expected)
    queries = {
        "raw log": "SELECT key_id, count(*), count(*) FILTER (WHERE status BETWEEN 200 AND 299), "
        "count(*) - count(DISTINCT relay_id) FROM analytics_relay WHERE key_id = ANY(%s) GROUP BY key_id",
        **{
            f"{grain} rollups": f"SELECT key_id, sum(requests), sum(status_2xx), 0 FROM analytics_rollup_{grain} "  # noqa: S608 - constants
            "WHERE key_id = ANY(%s) GROUP BY key_id"
            for grain in ("minute", "hour", "day")
        },
    }
    ok = True
    lines = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name, query in queries.items():
            found = {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in conn.execute(query, [pks])}
            wrong = [pk for pk in pks if found.get(pk, (0, 0, 0)) != (*expected[pk], 0)]
            requests = sum(v[0] for v in found.values())
            served = sum(v[1] for v in found.values())
            duplicates = sum(v[2] for v in found.values())
            ok &= not wrong
            verdict = "OK" if not wrong else f"MISMATCH on {len(wrong)} of {len(pks)} keys"
            lines.append(f"  {name:<15} requests {requests:>9,}  2xx {served:>9,}"
                         + (f"  duplicate ids {duplicates}" if name == "raw log" else "") + f"  {verdict}")  # fmt: skip
        quarantined = conn.execute("SELECT count(*) FROM analytics_quarantinedrecord").fetchone()
    if quarantined and quarantined[0]:
        ok = False
        lines.append(f"  {quarantined[0]:,} records quarantined by the ingestion")
    return ok, lines


# --- setup --------------------------------------------------------------------------------------------------------


@dataclass
class BenchSetup:
    owner: Any
    load_key_id: str
    revoke_endpoint: Any
    suspend_team: Any
    suspend_key_id: str
    secret: str
    key_pks: dict[str, int]


def seed(keys: int) -> BenchSetup:
    """--keys keys as bulk rows, then the bench's own teams, endpoints and keys through the services."""
    from django.db import connection

    from accounts.services import team_create, user_create
    from endpoints.models import ApiKey
    from endpoints.services import api_key_create, endpoint_create, gateway_credential_create, plan_limit_set

    if keys:
        config_feed.seed(teams=max(1, keys // 100), endpoints_per_team=10, keys_per_endpoint=10)
    owner = user_create(email="relay-bench@bench.example", password=None, email_verified=True)
    team = team_create(name="Relay bench", owner=owner)
    suspend_team = team_create(name="Relay bench suspensions", owner=owner)
    for each in (team, suspend_team):
        plan_limit_set(team=each, rate_limit_rps=RATE_LIMIT_RPS)
    load_endpoint = endpoint_create(team=team, name="Load", actor=owner, services=[SERVICE])
    revoke_endpoint = endpoint_create(team=team, name="Revocations", actor=owner, services=[SERVICE])
    suspend_endpoint = endpoint_create(team=suspend_team, name="Suspensions", actor=owner, services=[SERVICE])
    load_key, _ = api_key_create(endpoint=load_endpoint, name="load", actor=owner)
    suspend_key, _ = api_key_create(endpoint=suspend_endpoint, name="suspensions", actor=owner)
    _credential, secret = gateway_credential_create(name="bench-relay")
    connection.cursor().execute("ANALYZE")
    print(f"{ApiKey.objects.count():,} keys in the feed ({keys:,} bulk-seeded, the bench's own through the services)")
    pks = {load_key.key_id: load_key.pk, suspend_key.key_id: suspend_key.pk}
    return BenchSetup(owner, load_key.key_id, revoke_endpoint, suspend_team, suspend_key.key_id, secret, pks)


# --- the run ------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load each, direct and relayed (15)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating direct / relayed rounds the load time is split into (3)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="client connections for throughput (32)")
    parser.add_argument("--latency-requests", type=int, default=3000, help="sequential calls each for latency (3000)")
    parser.add_argument("--tries", type=int, default=24, help="revocations, suspensions and resumptions (24 each)")
    parser.add_argument(
        "--keys", type=int, default=100_000, help="keys seeded in bulk first (100,000; multiples of 100)"
    )
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn sync workers (2)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 s, 300 calls, 20 tries, 1,000 keys")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.latency_requests, args.tries, args.keys = 3.0, 1, 300, MIN_TRIES, 1000
    if min(args.duration, args.rounds, args.concurrency, args.latency_requests, args.tries, args.web_workers) <= 0 or (
        args.keys < 0
    ):
        parser.error("durations and counts must be positive (--keys may be 0)")
    return args


@dataclass
class Results:
    direct: Load
    relayed: Load
    latency: Latency
    edge: Edge
    usage_ok: bool
    usage_lines: list[str]
    relay: RelayProcess
    relay_exit: int | None
    spool_left: list[str]
    drained_s: float


def measure(args: argparse.Namespace, stores: ingest.Stores, bench: BenchSetup, tally: Tally) -> Results:
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp, contextlib.ExitStack() as stack:
        log_dir = Path(tmp)
        gatehouse = stack.enter_context(ingest.running_stack(stores.child_env, args.web_workers, aggregators=1))
        anvil_port, anvil = stack.enter_context(running_anvil(log_dir))
        relay = stack.enter_context(running_relay(gatehouse.port, bench.secret, anvil_port, log_dir))
        print(f"stack up: gunicorn ({args.web_workers} sync workers), celery worker, beat; Anvil; one relay "
              f"(ready in {relay.ready_s:.1f} s with {relay.keys:,} keys from the snapshot)", flush=True)  # fmt: skip
        direct_url = f"http://127.0.0.1:{anvil_port}/"
        relay_url = f"http://127.0.0.1:{relay.port}/{SERVICE}/v1/{bench.load_key_id}"

        gatehouse_roots = [gatehouse.gunicorn.pid, gatehouse.worker.pid, gatehouse.beat.pid]
        gatehouse_group = "gatehouse (gunicorn, celery)"
        clock = CpuClock({"client": [os.getpid()], "anvil": [anvil.pid], "relay": [relay.process.pid],
                          gatehouse_group: gatehouse_roots}, trees=frozenset({gatehouse_group}))  # fmt: skip
        # Rounds alternate direct and relayed, so a machine whose speed drifts (a shared one does) is measured alike
        # on both sides.
        direct, relayed = Load(), Load()
        for _ in range(args.rounds):
            for total, url in ((direct, direct_url), (relayed, relay_url)):
                total.add(asyncio.run(load(url, args.concurrency, args.duration / args.rounds)), clock.lap())
        for (status, reason), count in relayed.answers.items():
            tally.add(bench.load_key_id, status, reason, count)
        print(f"throughput: direct {direct.rate:,.0f} req/s, relayed {relayed.rate:,.0f} req/s", flush=True)

        latency = asyncio.run(paired_latency(direct_url, relay_url, args.latency_requests, warmup=200))
        for status, count in latency.relay_statuses.items():
            tally.add(bench.load_key_id, status, None, count)
        print(f"latency: {args.latency_requests:,} pairs", flush=True)

        edge = edge_latencies(bench, relay.port, args.tries, tally)
        print(f"edge: {args.tries} tries of each", flush=True)

        stopped = time.perf_counter()
        relay_exit = relay.stop()
        spool_left = sorted(str(p.relative_to(relay.spool)) for p in relay.spool.rglob("*") if p.is_file())
        gatehouse.check_alive()
        ingest.wait_until_aggregated(stores.database_url, gatehouse, timeout=300)
        ingest.wait_until_compacted(stores.database_url, gatehouse, timeout=180)
        drained_s = time.perf_counter() - stopped
        usage_ok, usage_lines = usage_check(stores.database_url, tally, bench.key_pks)
    return Results(direct, relayed, latency, edge, usage_ok, usage_lines, relay, relay_exit, spool_left, drained_s)


def report(args: argparse.Namespace, r: Results, tally: Tally) -> int:
    share = r.relayed.rate / r.direct.rate if r.direct.rate else 0.0
    d, rl = r.latency.direct_ms, r.latency.relay_ms
    added_p50, added_p99 = pct(rl, 0.5) - pct(d, 0.5), pct(rl, 0.99) - pct(d, 0.99)
    edges = r.edge.seconds
    served, recorded = sum(tally.served.values()), sum(tally.recorded.values())

    print("\n== relay benchmark ==")
    print(f"throughput       direct to Anvil {r.direct.rate:,.0f} req/s; through one relay process "
          f"{r.relayed.rate:,.0f} req/s = {share:.1%} ({args.concurrency} connections, {args.duration:g} s each in "
          f"{args.rounds} alternating rounds, each after {WARMUP_S:g} s warm-up, eth_blockNumber, one aiohttp "
          "client)")  # fmt: skip
    print(f"CPU direct       {cpu_line(r.direct.cpu, r.direct.wall, r.direct.total)}")
    print(f"CPU relayed      {cpu_line(r.relayed.cpu, r.relayed.wall, r.relayed.total)}")
    print(f"latency          direct p50 {pct(d, 0.5):.3f} ms, p99 {pct(d, 0.99):.3f} ms; through the relay p50 "
          f"{pct(rl, 0.5):.3f} ms, p99 {pct(rl, 0.99):.3f} ms ({len(d):,} sequential calls each, one connection, "
          "alternating)")  # fmt: skip
    print(f"added latency    p50 {added_p50:.3f} ms, p99 {added_p99:.3f} ms")
    for kind, label in EDGE_KINDS.items():
        values = edges[kind]
        if values:
            print(f"{kind:<16} {label}: p50 {pct(values, 0.5) * 1000:.0f} ms, p95 {pct(values, 0.95) * 1000:.0f} ms, "
                  f"max {max(values) * 1000:.0f} ms over {len(values)} tries (the service call itself: p50 "
                  f"{pct(r.edge.service_ms[kind], 0.5):.0f} ms)")  # fmt: skip
    print(f"edge conditions  {r.relay.keys:,} keys in the relay's config; it follows the feed with its long-poll "
          f"(wait=25) on gunicorn; the client asks through the relay every {POLL_PAUSE_S * 1000:g} ms + a round "
          "trip")  # fmt: skip
    print(f"usage            the client got {served:,} × 200 through the relay and {recorded - served:,} refusals the "
          f"relay records (+{sum(tally.unrecorded.values()):,} unknown-key ones it does not), on {len(tally.recorded)} "
          f"keys; relay stopped (exit {r.relay_exit}, spool left: {len(r.spool_left)} files) → all aggregated and "
          f"compacted {r.drained_s:.1f} s later")  # fmt: skip
    print("\n".join(r.usage_lines))

    wrong = [f"direct: {p}" for p in r.direct.wrong()] + [f"relayed: {p}" for p in r.relayed.wrong()]
    wrong += [f"latency run answered {s} {c:,} times" for s, c in r.latency.relay_statuses.items() if s != 200]
    wrong += r.edge.problems
    wrong += [f"spool not delivered at shutdown: {name}" for name in r.spool_left]
    if r.relay_exit != 0:
        wrong.append(f"the relay exited with status {r.relay_exit} on SIGTERM")
    if not r.usage_ok:
        wrong.append("usage in the rollups differs from what the client was answered")
    for problem in wrong:
        print(f"WRONG {problem}")

    refusal_p95 = {kind: pct(edges[kind], 0.95) for kind in ("revoked", "suspended", "resumed")}
    targets = [
        (f"relay ≥ {TARGET_THROUGHPUT_SHARE:.0%} of Anvil's direct throughput, one process ({share:.1%})",
         share >= TARGET_THROUGHPUT_SHARE),
        (f"added latency p50 ≤ {TARGET_ADDED_P50_MS:g} ms ({added_p50:.3f} ms)", added_p50 <= TARGET_ADDED_P50_MS),
        (f"added latency p99 ≤ {TARGET_ADDED_P99_MS:g} ms ({added_p99:.3f} ms)", added_p99 <= TARGET_ADDED_P99_MS),
        *[(f"{EDGE_KINDS[kind]} p95 ≤ {TARGET_REFUSAL_P95_S:g} s ({p95 * 1000:.0f} ms)",
           bool(edges[kind]) and p95 <= TARGET_REFUSAL_P95_S) for kind, p95 in refusal_p95.items()],
        (f"≥ {MIN_TRIES} tries of each ({min(len(edges[k]) for k in refusal_p95)})",
         min(len(edges[k]) for k in refusal_p95) >= MIN_TRIES),
        ("every 200 the relay served is in the rollups exactly once", r.usage_ok),
    ]  # fmt: skip
    return exit_status(targets, wrong=bool(wrong))


def run(args: argparse.Namespace) -> int:
    cu = calibrate()
    print(f"cu {cu:.1f} ms (best of 5 × sum(range(10**6)) in a fresh process)", flush=True)
    stores = ingest.setup_stores()
    try:
        bench = seed(args.keys)
        tally = Tally()
        results = measure(args, stores, bench, tally)
        return report(args, results, tally)
    except RuntimeError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        ingest.drop_database(stores)
        if stores.servers is not None:
            stores.servers.stop()


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM behaves like Ctrl-C: the `finally` blocks stop the processes and drop the database."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    return run(args)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
