"""Usage ingestion benchmark: the real stack end to end, against a plain binary COPY ceiling.

Starts the production-style processes (gunicorn sync workers, one Celery worker, celery beat) on a
database of its own (gatehouse_bench_ingest, dropped and recreated) on the PostgreSQL that tests use:
DATABASE_URL's server, else 127.0.0.1:5432, else an embedded one; Redis from REDIS_URL, else
127.0.0.1:6379, else embedded, on db 9 (flushed first). It seeds teams, endpoints and keys through the
services, posts pre-generated NDJSON batches to POST /api/gateway/v1/usage from a few client threads,
waits until every batch is aggregated, checks the rollup totals against what was acknowledged, and
times a plain binary COPY of the same records into a bare table (the ceiling).

    .venv/bin/python bench/ingest.py [--records 2000000 --batch-size 5000 --concurrency 4 --web-workers 2]

Exit status: 0 when the totals match and every target is met, 1 when a total does not match (or the
run fails), 2 when the totals match but a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faults import calibrate, exit_status  # bench/faults.py: the calibration unit, the exit status

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DB = "gatehouse_bench_ingest"
REDIS_DB = 9
USAGE_PATH = "/api/gateway/v1/usage"
ID_PLACEHOLDER = b"@@@@@@@@"  # replaced in every send by the send's sequence number, so relay ids never repeat
SAMPLE_INTERVAL = 0.5
MB = 1024 * 1024

TARGET_RECORDS_PER_S = 50_000
TARGET_BINARY_SHARE = 0.35  # of the same run's binary COPY: the path the product itself uses
TARGET_RSS_MB = 200

REGIONS = (("us-east-1", 0.5), ("eu-west-1", 0.3), ("ap-southeast-1", 0.2))
# (status, error class, share): ~96.5 % success, user errors (not the gateway's fault), upstream, gateway.
OUTCOMES = (
    (200, None, 0.965),
    (429, "user", 0.012),
    (401, "user", 0.004),
    (400, "user", 0.004),
    (502, "upstream", 0.006),
    (503, "upstream", 0.004),
    (504, "upstream", 0.002),
    (500, "gateway", 0.003),
)


# --- setup: servers, database, Django ---------------------------------------------------------


@dataclass
class Stores:
    """Where the benchmark's database and Redis live, and the environment its child processes get."""

    database_url: str
    redis_url: str
    child_env: dict[str, str]
    admin_url: str
    servers: Any = None  # embedded servers, kept alive for the run


def redis_on_db(url: str, db: int) -> tuple[str, str | None]:
    """REDIS_URL moved to database `db`, and a Celery broker URL when Celery spells it differently (unix socket)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return urlunsplit(parts._replace(query=urlencode(query))), f"redis+socket://{parts.path}?virtual_host={db}"
    return urlunsplit(parts._replace(path=f"/{db}")), None


def setup_stores() -> Stores:
    """Find or start PostgreSQL and Redis, recreate the benchmark database, flush the Redis db, set up Django."""
    from project import devstack

    servers = None
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        found, servers = devstack.start_missing_servers(devstack.DATA_DIR / "bench", probe_local=True)
        os.environ.update(found)
    parts = urlsplit(os.environ["DATABASE_URL"])
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    import psycopg
    import redis
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    database_url = urlunsplit(parts._replace(path=f"/{BENCH_DB}"))
    redis_url, broker_url = redis_on_db(os.environ["REDIS_URL"], REDIS_DB)
    redis.Redis.from_url(redis_url).flushdb()

    env = {
        "DEBUG": "0",
        "SECRET_KEY": "bench-ingest-" + "k" * 60,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "EMAIL_URL": "locmem://",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    os.environ.pop("CELERY_BROKER_URL", None)  # the broker is the benchmark's Redis db, whatever the shell says
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    os.environ.update(env)
    child_env = dict(os.environ)

    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")  # no collectstatic for a benchmark
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return Stores(database_url, redis_url, child_env, admin_url, servers)


def drop_database(stores: Stores) -> None:
    """Drop the benchmark database (after closing Django's own connection to it)."""
    import psycopg
    from django.db import connections
    from psycopg import sql

    connections.close_all()
    with psycopg.connect(stores.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))


# --- seeding ----------------------------------------------------------------------------------


@dataclass
class SeededKey:
    """One API key as the gateway sees it, plus the internal ids a COPY into the raw table needs."""

    key_id: str
    endpoint_public_id: str
    services: list[str]
    key_pk: int
    team_id: int
    endpoint_pk: int


def seed(teams: int, endpoints_per_team: int, keys_per_endpoint: int) -> tuple[list[SeededKey], str]:
    """Teams, endpoints and keys through the services (verified owners), and a gateway credential.

    Three endpoints in four call RPC networks (a mainnet plus another chain); the fourth calls two LLMs.
    Returns the keys and the gateway credential's secret.
    """
    from accounts.services import team_create, user_create
    from endpoints.catalog import SERVICES
    from endpoints.services import api_key_create, endpoint_create, gateway_credential_create

    started = time.perf_counter()
    active = [s for s in SERVICES if s["status"] == "active"]
    rpc = [s["id"] for s in active if s["kind"] == "rpc"]
    llm = [s["id"] for s in active if s["kind"] == "llm"]
    seeded: list[SeededKey] = []
    for t in range(teams):
        owner = user_create(email=f"owner{t}@bench.example", password=None, email_verified=True)
        team = team_create(name=f"Bench team {t}", owner=owner)
        for e in range(endpoints_per_team):
            n = t * endpoints_per_team + e
            if n % 4 == 3:
                services = [llm[n % len(llm)], llm[(n + 1) % len(llm)]]
            else:
                services = [rpc[0], rpc[1 + n % (len(rpc) - 1)]]
            endpoint = endpoint_create(team=team, name=f"App {e}", actor=owner, services=services)
            for k in range(keys_per_endpoint):
                key, _secret = api_key_create(endpoint=endpoint, name=f"key {k}", actor=owner)
                seeded.append(SeededKey(key.key_id, endpoint.public_id, services, key.pk, team.pk, endpoint.pk))
    _credential, secret = gateway_credential_create(name="bench-ingest")
    print(
        f"seeded {teams} teams × {endpoints_per_team} endpoints × {keys_per_endpoint} keys "
        f"({len(seeded)} keys) and a gateway credential in {time.perf_counter() - started:.1f} s"
    )
    return seeded, secret


# --- the load -----------------------------------------------------------------------------------


@dataclass
class Template:
    """One pre-encoded NDJSON batch; ID_PLACEHOLDER in every relay id is replaced per send."""

    body: bytes
    records: int
    units: int


def _weighted(pairs: dict[str, float] | tuple[tuple[Any, float], ...]) -> tuple[list[Any], list[float]]:
    """Values and cumulative weights, for random.choices(cum_weights=...)."""
    items = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
    values, cumulative, total = [], [], 0.0
    for value, weight in items:
        total += weight
        values.append(value)
        cumulative.append(total)
    return values, cumulative


def build_templates(
    keys: list[SeededKey], count: int, batch_size: int, *, spread_ms: int = 600_000, seed_value: int = 7
) -> list[Template]:
    """`count` distinct NDJSON batches of `batch_size` contract records, timestamps over the last `spread_ms`.

    Traffic is skewed the way it is in practice: team t gets a share ∝ 1/(t+1); within a team keys are
    uniform. Methods follow the catalog's per-family mix, compute units its per-method table; LLM relays
    carry token counts. Records are sorted by ts within a batch, as a gateway flushes them.
    """
    import msgspec

    from endpoints.catalog import METHOD_WEIGHTS, SERVICES

    rng = random.Random(seed_value)
    specs = {s["id"]: s for s in SERVICES}
    methods = {family: _weighted(weights) for family, weights in METHOD_WEIGHTS.items()}
    regions = _weighted(REGIONS)
    outcomes = _weighted(tuple(((status, cls), share) for status, cls, share in OUTCOMES))
    by_team: dict[int, list[SeededKey]] = {}
    for key in keys:
        by_team.setdefault(key.team_id, []).append(key)
    team_keys = list(by_team.values())
    team_cum = _weighted(tuple((i, 1 / (i + 1)) for i in range(len(team_keys))))[1]
    encode = msgspec.json.Encoder().encode
    now_ms = int(time.time() * 1000)
    templates = []
    for t in range(count):
        stamps = sorted(now_ms - rng.randrange(spread_ms) for _ in range(batch_size))
        lines, units_total = [], 0
        for i, ts_ms in enumerate(stamps):
            group = team_keys[rng.choices(range(len(team_keys)), cum_weights=team_cum)[0]]
            key = group[rng.randrange(len(group))]
            service = key.services[rng.randrange(len(key.services))]
            spec = specs[service]
            family_methods, family_cum = methods[spec["chain_family"]]
            method = rng.choices(family_methods, cum_weights=family_cum)[0]
            (status, error_class) = rng.choices(outcomes[0], cum_weights=outcomes[1])[0]
            stamp = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
            record: dict[str, Any] = {
                "id": f"r-{ID_PLACEHOLDER.decode()}-{t:03d}{i:05d}",
                "ts": f"{stamp:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z",
                "key_id": key.key_id,
                "endpoint_id": key.endpoint_public_id,
                "service": service,
                "method": method,
                "status": status,
                "error_class": error_class,
                "region": rng.choices(regions[0], cum_weights=regions[1])[0],
            }
            if spec["kind"] == "llm":
                input_tokens = 0 if error_class == "user" else int(rng.lognormvariate(6.0, 0.9))
                output_tokens = 0 if error_class or method == "embeddings" else int(rng.lognormvariate(5.2, 0.8))
                record |= {
                    "latency_ms": round(rng.lognormvariate(7.2, 0.7), 1),
                    "req_bytes": 200 + input_tokens * 4,
                    "resp_bytes": 300 + output_tokens * 4,
                    "units": 0 if error_class == "user" else 1,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                }
            else:
                cu = spec["method_compute_units"].get(method, spec["compute_units"])
                record |= {
                    "latency_ms": round(rng.lognormvariate(3.6, 0.8), 1),
                    "req_bytes": rng.randrange(90, 900),
                    "resp_bytes": rng.randrange(60, 40_000),
                    "units": 0 if error_class == "user" else cu,
                }
            units_total += record["units"]
            lines.append(encode(record))
        templates.append(Template(b"\n".join(lines) + b"\n", len(lines), units_total))
    return templates


def body_for(template: Template, sequence: int) -> bytes:
    """The template with its relay ids made unique to this send."""
    return template.body.replace(ID_PLACEHOLDER, b"%08x" % sequence)


def warmup_body(template: Template, records: int) -> Template:
    """The first `records` lines of a template, as a template of its own (for warming each web worker)."""
    lines = template.body.split(b"\n")[:records]
    units = sum(json.loads(line)["units"] for line in lines)
    return Template(b"\n".join(lines) + b"\n", len(lines), units)


# --- the processes under test -----------------------------------------------------------------


def free_port() -> int:
    """A local TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """The running gunicorn master, Celery worker and beat (each the leader of its own process group)."""

    port: int
    gunicorn: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    beat: subprocess.Popen[bytes]
    log_dir: Path
    # With --pgbouncer: the second web instance (its own gunicorn on its own port) and Celery worker instance.
    more: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    more_ports: list[int] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [self.port, *self.more_ports]

    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        return {"gunicorn": self.gunicorn, "celery worker": self.worker, "celery beat": self.beat, **dict(self.more)}

    def check_alive(self) -> None:
        """Fail if any process under test has exited (running_stack then prints the logs)."""
        for name, process in self.processes().items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode} (its log is above)")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the benchmark dies, even by SIGKILL (Linux), so nothing is left behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name.replace(' ', '-')}.log").open("wb")
    try:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        log.close()


def _stop(processes: list[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM each process group we started, wait, then SIGKILL whatever is left of each group."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # pool children and workers of this group only
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


@contextlib.contextmanager
def running_stack(env: dict[str, str], web_workers: int, aggregators: int, instances: int = 1) -> Iterator[Stack]:
    """gunicorn (sync workers), a Celery worker (`aggregators` processes) and beat — with instances=2, two gunicorns on
    two ports and two Celery workers, as on two machines —; stopped on the way out, whatever happens."""
    python = sys.executable
    port = free_port()
    started: list[subprocess.Popen[bytes]] = []
    names = ["gunicorn", "celery worker", "celery beat"] + [
        f"{kind} {n}" for n in range(2, instances + 1) for kind in ("gunicorn", "celery worker")
    ]
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        log_dir = Path(tmp)

        def instance(n: int, web_port: int) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
            """Instance n: a gunicorn on web_port and a Celery worker (named apart from the first's)."""
            suffix = f" {n}" if n > 1 else ""
            web = _spawn(
                f"gunicorn{suffix}",
                [python, "-m", "gunicorn", "project.wsgi:application", "--worker-class", "sync",
                 "--workers", str(web_workers), "--bind", f"127.0.0.1:{web_port}"],
                env, log_dir,
            )  # fmt: skip
            started.append(web)
            worker = _spawn(
                f"celery worker{suffix}",
                [python, "-m", "celery", "-A", "project", "worker", "--concurrency", str(aggregators),
                 "--loglevel", "WARNING", "--hostname", f"worker{n}@%h"],
                env, log_dir,
            )  # fmt: skip
            started.append(worker)
            return web, worker

        try:
            gunicorn, worker = instance(1, port)
            beat = _spawn(
                "celery beat",
                [python, "-m", "celery", "-A", "project", "beat", "--loglevel", "WARNING",
                 "--schedule", str(log_dir / "beat-schedule")],
                env, log_dir,
            )  # fmt: skip
            started.append(beat)
            stack = Stack(port, gunicorn, worker, beat, log_dir)
            for n in range(2, instances + 1):
                more_port = free_port()
                more_web, more_worker = instance(n, more_port)
                stack.more += [(f"gunicorn {n}", more_web), (f"celery worker {n}", more_worker)]
                stack.more_ports.append(more_port)
            wait_for_health(stack)
            yield stack
        except BaseException:
            for name in names:
                tail = (log_dir / f"{name.replace(' ', '-')}.log").read_text(errors="replace")[-3000:]
                if tail.strip():
                    print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)
            raise
        finally:
            _stop(list(reversed(started)))


def wait_for_health(stack: Stack, timeout: float = 60.0) -> None:
    """Poll GET /healthz until gunicorn answers 200."""
    deadline = time.monotonic() + timeout
    waiting = list(stack.ports)
    while time.monotonic() < deadline:
        stack.check_alive()
        conn = http.client.HTTPConnection("127.0.0.1", waiting[0], timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                waiting.pop(0)
                if not waiting:
                    return
                continue
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer /healthz within {timeout:.0f} s (its log is above)")


# --- monitoring: memory, CPU, aggregation lag ---------------------------------------------------


KINDS = ("gunicorn master", "gunicorn worker", "celery worker", "celery pool child", "celery beat",
         "postgres", "postgres (shared)", "redis", "pgbouncer", "benchmark client")  # fmt: skip
RSS_KINDS = ("gunicorn master", "gunicorn worker", "celery worker", "celery pool child", "celery beat")
# Titles of PostgreSQL's own processes, which serve every database (ours included).
POSTGRES_SHARED = ("checkpointer", "background writer", "walwriter", "autovacuum launcher", "logical replication",
                   "archiver", "startup", "bin/postgres")  # fmt: skip


@dataclass
class CpuReport:
    """CPU time spent between two checkpoints: core-seconds per process kind and for the whole machine."""

    per_kind: dict[str, float]
    machine_busy: float
    wall: float

    def line(self, cores: int) -> str:
        """'machine 87 % of 2 cores; postgres 21.3, gunicorn worker 9.1, …, other 1.2 core-s'."""
        ours = sum(self.per_kind.values())
        parts = sorted(((v, k) for k, v in self.per_kind.items() if v >= 0.05), reverse=True)
        parts.append((max(self.machine_busy - ours, 0.0), "other processes"))
        busy = self.machine_busy / max(self.wall * cores, 1e-9)
        return f"machine {busy:.0%} of {cores} cores; " + ", ".join(f"{k} {v:.1f}" for v, k in parts) + " core-s"


class Monitor(threading.Thread):
    """Samples every SAMPLE_INTERVAL: RSS of each process under test, CPU time per process kind, aggregation lag.

    CPU is accounted per pid (cumulative user+system time: last value seen minus the value at the previous
    checkpoint). "postgres" is every backend of the benchmark database (and its parallel workers);
    "postgres (shared)" the server's own processes (WAL writer, checkpointer, …); "redis" every redis-server.
    Anything else busy on the machine shows up as "other processes".
    """

    def __init__(self, stack: Stack, database_url: str):
        super().__init__(name="monitor", daemon=True)
        self.stack = stack
        self.database_url = database_url
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sample_lock = threading.Lock()  # psutil's oneshot() caches are not thread-safe
        self.peak_rss: dict[int, tuple[str, int]] = {}  # pid → (kind, max RSS bytes)
        self.max_lag = 0.0
        self.samples = 0
        self.cpu_last: dict[int, tuple[str, float]] = {}
        self.cpu_base: dict[int, float] = {}
        self.machine_base = self._machine()
        self._procs: dict[int, Any] = {}
        self._postgres_kind: dict[int, str | None] = {}

    def _process(self, pid: int) -> Any:
        import psutil

        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
        return proc

    def _postgres(self, proc: Any) -> str | None:
        """'postgres' for a backend of the benchmark database, 'postgres (shared)' for the server's own processes."""
        if proc.pid not in self._postgres_kind:
            title = " ".join(proc.cmdline())
            kind: str | None = None
            if BENCH_DB in title or "parallel worker" in title:  # parallel workers: only our queries are big
                kind = "postgres"
            elif any(name in title for name in POSTGRES_SHARED):
                kind = "postgres (shared)"
            self._postgres_kind[proc.pid] = kind
        return self._postgres_kind[proc.pid]

    def _classified(self) -> list[tuple[str, Any]]:
        """(kind, psutil.Process) for every process to watch right now."""
        import psutil

        found: list[tuple[str, Any]] = []
        roots = [(name.rstrip(" 0123456789"), process.pid) for name, process in self.stack.processes().items()]
        for name, pid in roots:
            try:
                root = self._process(pid)
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            if name == "gunicorn":
                found += [("gunicorn master", root)] + [("gunicorn worker", c) for c in children]
            elif name == "celery worker":
                found += [("celery worker", root)] + [("celery pool child", c) for c in children]
            else:
                found += [("celery beat", root)] + [("celery beat", c) for c in children]
        for proc in psutil.process_iter(["name"]):
            name = proc.info["name"] or ""
            try:
                if name == "postgres" or name.startswith("postgres:"):
                    kind = self._postgres(proc)
                    if kind:
                        found.append((kind, proc))
                elif name.startswith("redis-server"):
                    found.append(("redis", proc))
                elif name == "pgbouncer":
                    found.append(("pgbouncer", proc))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found.append(("benchmark client", self._process(os.getpid())))
        return found

    def sample_processes(self) -> None:
        """One sample of RSS (processes under test) and cumulative CPU (everything classified)."""
        import psutil

        with self.sample_lock:
            for kind, proc in self._classified():
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        rss = proc.memory_info().rss if kind in RSS_KINDS else 0
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                with self.lock:
                    self.cpu_last[proc.pid] = (kind, times.user + times.system)
                    if rss:
                        previous = self.peak_rss.get(proc.pid, (kind, 0))[1]
                        self.peak_rss[proc.pid] = (kind, max(previous, rss))

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self.stopping.is_set():
                self.sample_processes()
                row = conn.execute(
                    "SELECT extract(epoch FROM now() - received_at) FROM analytics_ingestbatch"
                    " WHERE aggregated_at IS NULL ORDER BY id LIMIT 1"
                ).fetchone()
                with self.lock:
                    self.max_lag = max(self.max_lag, float(row[0]) if row else 0.0)
                    self.samples += 1
                self.stopping.wait(SAMPLE_INTERVAL)

    @staticmethod
    def _machine() -> tuple[float, float]:
        """(busy CPU seconds across all cores, wall clock)."""
        import psutil

        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        return busy, time.monotonic()

    def checkpoint(self, *, reset_lag: bool = False) -> CpuReport:
        """CPU spent since the previous checkpoint (or since the monitor was created); starts the next window."""
        self.sample_processes()
        machine = self._machine()
        per_kind = dict.fromkeys(KINDS, 0.0)
        with self.lock:
            for pid, (kind, cpu) in self.cpu_last.items():
                per_kind[kind] += cpu - self.cpu_base.get(pid, 0.0)
            self.cpu_base = {pid: cpu for pid, (_kind, cpu) in self.cpu_last.items()}
            if reset_lag:
                self.max_lag = 0.0
        report = CpuReport(per_kind, machine[0] - self.machine_base[0], machine[1] - self.machine_base[1])
        self.machine_base = machine
        return report

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


# --- sending ------------------------------------------------------------------------------------


@dataclass
class SenderTotals:
    """What one client thread got acknowledged."""

    batches: int = 0
    records: int = 0
    units: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    retries: int = 0
    failures: list[str] = field(default_factory=list)
    first_send: float = math.inf
    last_ack: float = 0.0


class Sender:
    """Hands out send numbers to client threads; each thread posts over its own HTTPConnection."""

    def __init__(
        self, port: int | list[int], secret: str, templates: list[Template], sends: int, first_sequence: int
    ) -> None:
        self.ports = port if isinstance(port, list) else [port]  # client threads take them in turn
        self.headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/x-ndjson"}
        self.templates = templates
        self.sends = sends
        self.next_send = 0
        self.first_sequence = first_sequence
        self.lock = threading.Lock()
        self.abort = threading.Event()

    def _take(self) -> int | None:
        with self.lock:
            if self.next_send >= self.sends or self.abort.is_set():
                return None
            self.next_send += 1
            return self.next_send - 1

    def post(self, conn: http.client.HTTPConnection, body: bytes, key: str) -> tuple[int, bytes]:
        """One POST; http.client reopens the connection by itself when gunicorn closed it after a response."""
        conn.request("POST", USAGE_PATH, body=body, headers={**self.headers, "Idempotency-Key": key})
        response = conn.getresponse()
        return response.status, response.read()

    def client(self, totals: SenderTotals, port: int) -> None:
        """A client thread: take a send number, post that template with fresh relay ids and a fresh key."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            while (n := self._take()) is not None:
                template = self.templates[n % len(self.templates)]
                body = body_for(template, self.first_sequence + n)
                key = uuid.uuid4().hex
                started = time.perf_counter()
                totals.first_send = min(totals.first_send, started)
                for attempt in range(4):
                    try:
                        status, payload = self.post(conn, body, key)
                        break
                    except (OSError, http.client.HTTPException) as error:  # same key: the retry is idempotent
                        conn.close()
                        totals.retries += 1
                        if attempt == 3:
                            status, payload = 0, repr(error).encode()
                        time.sleep(0.2 * (attempt + 1))
                acked = time.perf_counter()
                if status == 202 and json.loads(payload)["records"] == template.records:
                    totals.batches += 1
                    totals.records += template.records
                    totals.units += template.units
                    totals.latencies_ms.append((acked - started) * 1000)
                    totals.last_ack = acked
                else:
                    totals.failures.append(f"HTTP {status}: {payload[:300]!r}")
                    if len(totals.failures) >= 5:
                        self.abort.set()
        finally:
            conn.close()

    def run(self, concurrency: int) -> SenderTotals:
        """Run every send from `concurrency` threads; return the merged totals."""
        per_thread = [SenderTotals() for _ in range(concurrency)]
        threads = [
            threading.Thread(
                target=self.client, args=(t, self.ports[i % len(self.ports)]), name=f"client-{i}", daemon=True
            )
            for i, t in enumerate(per_thread)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:  # Ctrl-C / SIGTERM: let the clients finish their current POST and stop
            self.abort.set()
            raise
        merged = SenderTotals()
        for t in per_thread:
            merged.batches += t.batches
            merged.records += t.records
            merged.units += t.units
            merged.latencies_ms += t.latencies_ms
            merged.retries += t.retries
            merged.failures += t.failures
            merged.first_send = min(merged.first_send, t.first_send)
            merged.last_ack = max(merged.last_ack, t.last_ack)
        return merged


def wait_until_aggregated(database_url: str, stack: Stack, timeout: float) -> float:
    """Poll until no batch is pending; return the perf_counter time it was seen. Fails after `timeout` seconds."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(record_count), 0) FROM analytics_ingestbatch WHERE aggregated_at IS NULL"
            ).fetchone()
            if row[0] == 0:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"aggregation did not catch up within {timeout:.0f} s: {row[0]} batches ({row[1]:,} records) "
                    "still pending (is the Celery worker running? its log is above)."
                )
            stack.check_alive()
            time.sleep(0.1)


def wait_until_compacted(database_url: str, stack: Stack, timeout: float) -> float:
    """Poll until no hour or day awaits compaction (beat runs it every 15 s); return the time it was seen."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            dirty = conn.execute(
                "SELECT (SELECT count(*) FROM analytics_dirty_hour) + (SELECT count(*) FROM analytics_dirty_day)"
            ).fetchone()[0]
            if dirty == 0:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise RuntimeError(f"compaction did not finish within {timeout:.0f} s: {dirty} buckets dirty")
            stack.check_alive()
            time.sleep(0.2)


# --- checking and the ceiling ---------------------------------------------------------------------


def check_totals(database_url: str, records: int, units: int) -> list[str]:
    """Compare the raw log and every rollup grain with the acknowledged totals; return one line per table."""
    import psycopg

    lines = []
    ok = True
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in ("analytics_relay", "analytics_rollup_minute", "analytics_rollup_hour", "analytics_rollup_day"):
            counted = "count(*)" if table == "analytics_relay" else "sum(requests)"
            got_records, got_units = conn.execute(
                f"SELECT coalesce({counted}, 0), coalesce(sum(units), 0) FROM {table}"  # noqa: S608 - constants
            ).fetchone()
            match = got_records == records and got_units == units
            ok &= match
            lines.append(
                f"  {table:<24} requests {got_records:>12,}  units {got_units:>14,}  {'OK' if match else 'MISMATCH'}"
                + ("" if match else f" (expected {records:,} / {units:,})")
            )
    return [("OK" if ok else "MISMATCH"), *lines]


def copy_ceiling(
    database_url: str, templates: list[Template], keys: list[SeededKey], total: int, *, binary: bool
) -> float:
    """Records/s of a COPY of the same records into a bare, unindexed, unpartitioned table: plain (text
    format, the default) or binary with typed rows (what the ingestion path itself uses).

    One client, one COPY and one commit per template batch, rows decoded into tuples before the clock starts.
    """
    import msgspec
    import psycopg

    from analytics.ingest import COPY_COLUMNS, COPY_TYPES, UsageRecord
    from analytics.models import ERROR_CLASSES

    by_key = {k.key_id: k for k in keys}
    decoder = msgspec.json.Decoder(list[UsageRecord])
    batches: list[list[tuple[Any, ...]]] = []
    for n, template in enumerate(templates):
        body = body_for(template, 0xF0000000 + n)
        records = decoder.decode(b"[" + body.rstrip(b"\n").replace(b"\n", b",") + b"]")
        rows = []
        for r in records:
            key = by_key[r.key_id]
            ts = r.ts if isinstance(r.ts, datetime) else datetime.fromtimestamp(r.ts / 1000, tz=UTC)
            rows.append((ts, n, key.team_id, key.endpoint_pk, key.key_pk, r.id, r.service, r.method, r.region,
                         r.status, ERROR_CLASSES[r.error_class], r.latency_ms, r.req_bytes, r.resp_bytes, r.units,
                         r.input_tokens or 0, r.output_tokens or 0))  # fmt: skip
        batches.append(rows)
    with psycopg.connect(database_url) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy_ceiling")
        conn.execute("CREATE TABLE bench_copy_ceiling (LIKE analytics_relay)")  # columns and NOT NULL only
        conn.commit()
        written, n = 0, 0
        started = time.perf_counter()
        while written < total:
            rows = batches[n % len(batches)]
            fmt = "(FORMAT BINARY)" if binary else ""
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY bench_copy_ceiling ({COPY_COLUMNS}) FROM STDIN {fmt}") as copy,
            ):
                if binary:
                    copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            written += len(rows)
            n += 1
        elapsed = time.perf_counter() - started
    return written / elapsed


# --- report -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Runs against its own database and Redis db; see the module doc."
    )
    parser.add_argument("--records", type=int, default=2_000_000, help="records to send, at least (default 2,000,000)")
    parser.add_argument("--batch-size", type=int, default=5_000, help="records per POST (default 5,000)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--templates", type=int, default=40, help="distinct pre-generated batches (default 40)")
    # A gateway flushes a batch every second or so: its records span seconds, not minutes.
    parser.add_argument("--ts-spread", type=float, default=5, help="seconds of traffic the timestamps cover (5)")
    parser.add_argument("--aggregators", type=int, default=2, help="Celery worker processes (default 2)")
    parser.add_argument("--drain-timeout", type=float, default=600, help="seconds to wait for aggregation (600)")
    parser.add_argument("--keep-db", action="store_true", help=f"keep the {BENCH_DB} database afterwards")
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="two web and two worker instances, all through PgBouncer in transaction pooling mode",
    )
    args = parser.parse_args(argv)
    if min(args.records, args.batch_size, args.concurrency, args.web_workers, args.templates) < 1:
        parser.error("every count must be at least 1")
    if args.batch_size > 50_000:
        parser.error("--batch-size: the API takes at most 50,000 records per batch")
    return args


@dataclass
class Measurement:
    """Everything measured while the stack ran."""

    warmup: SenderTotals
    sent: SenderTotals
    sends_done: float
    end: float
    backlog_at_last_ack: tuple[int, int]  # (batches, records) not yet aggregated when sending ended
    idle: CpuReport
    sending: CpuReport
    draining: CpuReport
    max_lag: float
    lag_samples: int
    peak_rss_mb: dict[str, float]
    compacted: float  # when no hour or day was left to recompute


def pending(database_url: str) -> tuple[int, int]:
    """(batches, records) committed but not yet aggregated."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(record_count), 0) FROM analytics_ingestbatch WHERE aggregated_at IS NULL"
        ).fetchone()
    return int(row[0]), int(row[1])


def measure(args: argparse.Namespace, stores: Stores, secret: str, templates: list[Template]) -> Measurement:
    """Start the stack, warm it up, send the load, wait for the aggregation to drain; stop the stack."""
    sends = math.ceil(args.records / args.batch_size)
    warm = warmup_body(templates[0], min(100, args.batch_size))
    instances = 2 if args.pgbouncer else 1
    with contextlib.ExitStack() as resources:
        env = stores.child_env
        if args.pgbouncer:
            import psycopg
            from psycopg import sql

            from project.devstack import pgbouncer

            with psycopg.connect(stores.admin_url, autocommit=True) as admin:  # PgBouncer passes no startup options
                admin.execute(sql.SQL("ALTER DATABASE {} SET jit = off").format(sql.Identifier(BENCH_DB)))
            pooled = resources.enter_context(pgbouncer(stores.database_url, pool_size=20))
            env = env | {"DATABASE_URL": pooled, "DATABASE_TRANSACTION_POOLING": "1",
                         "DATABASE_DIRECT_URL": stores.database_url}  # fmt: skip
            print(f"PgBouncer (transaction pooling, 20 server connections) on {urlsplit(pooled).netloc}")
        stack = resources.enter_context(running_stack(env, args.web_workers, args.aggregators, instances))
        where = " and ".join(f"127.0.0.1:{port}" for port in stack.ports)
        print(f"stack up: {instances} × gunicorn ({args.web_workers} sync workers) on {where}, {instances} × celery "
              f"worker ({args.aggregators} processes), beat")  # fmt: skip
        monitor = Monitor(stack, stores.database_url)
        monitor.start()
        try:
            # Warm-up: every web worker loads its code, connects, creates partitions; the worker aggregates once.
            warmup = Sender(stack.ports, secret, [warm], 4 * args.web_workers * instances,
                            first_sequence=0xE0000000).run(2 * instances)  # fmt: skip
            if warmup.failures:
                raise RuntimeError(f"warm-up refused: {warmup.failures[0]}")
            wait_until_aggregated(stores.database_url, stack, timeout=60)
            monitor.checkpoint()
            time.sleep(2)
            idle = monitor.checkpoint(reset_lag=True)

            sent = Sender(stack.ports, secret, templates, sends, first_sequence=0).run(args.concurrency)
            sends_done = time.perf_counter()
            sending = monitor.checkpoint()
            backlog = pending(stores.database_url)
            if sent.failures:
                print(f"{len(sent.failures)} sends refused; first: {sent.failures[0]}", file=sys.stderr)
            end = wait_until_aggregated(stores.database_url, stack, timeout=args.drain_timeout)
            draining = monitor.checkpoint()
            compacted = wait_until_compacted(stores.database_url, stack, timeout=120)
        finally:
            monitor.stop()
    peak_rss_mb: dict[str, float] = {}
    for kind, rss in monitor.peak_rss.values():
        peak_rss_mb[kind] = max(peak_rss_mb.get(kind, 0.0), rss / MB)
    return Measurement(warmup, sent, sends_done, end, backlog, idle, sending, draining, monitor.max_lag,
                       monitor.samples, peak_rss_mb, compacted)  # fmt: skip


def run(args: argparse.Namespace, stores: Stores) -> int:
    """Seed, generate, run the load against the stack, check, measure the ceiling, report. Returns the exit status."""
    keys, secret = seed(teams=20, endpoints_per_team=5, keys_per_endpoint=5)
    started = time.perf_counter()
    templates = build_templates(keys, args.templates, args.batch_size, spread_ms=int(args.ts_spread * 1000))
    template_bytes = sum(len(t.body) for t in templates)
    per_record = template_bytes / sum(t.records for t in templates)
    print(
        f"generated {len(templates)} templates × {args.batch_size:,} records ({template_bytes / MB:.0f} MB of NDJSON, "
        f"{per_record:.0f} B/record, ts over the last {args.ts_spread:.0f} s) in {time.perf_counter() - started:.1f} s"
    )

    m = measure(args, stores, secret, templates)
    sent = m.sent
    expected_records = sent.records + m.warmup.records
    expected_units = sent.units + m.warmup.units
    verdict, *check_lines = check_totals(stores.database_url, expected_records, expected_units)
    ceiling = copy_ceiling(stores.database_url, templates, keys, sent.records, binary=False)
    binary_ceiling = copy_ceiling(stores.database_url, templates, keys, sent.records, binary=True)

    wall = m.end - sent.first_send
    sending_s = m.sends_done - sent.first_send
    rate = sent.records / wall if wall > 0 else 0.0
    ratio = rate / ceiling if ceiling else 0.0
    cores = os.cpu_count() or 1
    drain_s = m.end - m.sends_done

    print()
    print("== ingestion benchmark ==")
    print(
        f"records sent     {sent.records:,} in {sent.batches:,} batches of {args.batch_size:,} "
        f"({args.concurrency} client threads, {args.web_workers} web workers; +{m.warmup.records:,} warm-up)"
    )
    print(
        f"wall time        {wall:.1f} s = sending {sending_s:.1f} s + aggregation drain {drain_s:.1f} s "
        f"(backlog at last ack: {m.backlog_at_last_ack[0]} batches, {m.backlog_at_last_ack[1]:,} records)"
    )
    print(f"end to end       {rate:,.0f} records/s (sent → every record in the minute rollups)")
    print(
        f"hours and days   recomputed from the minutes {m.compacted - m.end:.1f} s later "
        "(right after each aggregation run: the open hour paced, the open day every 60 s)"
    )
    print(
        f"acknowledged     {sent.records / max(sent.last_ack - sent.first_send, 1e-9):,.0f} records/s "
        f"(sent → last 202, aggregation running alongside)"
    )
    print(
        f"ack latency      p50 {pct(sent.latencies_ms, 0.5):.0f} ms, p95 {pct(sent.latencies_ms, 0.95):.0f} ms, "
        f"max {max(sent.latencies_ms, default=0):.0f} ms; retries {sent.retries}, refused {len(sent.failures)}"
    )
    print(f"aggregation lag  max {m.max_lag:.1f} s ({m.lag_samples} samples every {SAMPLE_INTERVAL} s)")
    print(
        "peak RSS         "
        + ", ".join(f"{k} {m.peak_rss_mb[k]:.0f} MB" for k in RSS_KINDS if k in m.peak_rss_mb)
        + " (largest single process of each kind)"
    )
    print(f"CPU before load  ({m.idle.wall:.0f} s idle) {m.idle.line(cores)}")
    print(f"CPU sending      ({m.sending.wall:.1f} s) {m.sending.line(cores)}")
    print(f"CPU draining     ({m.draining.wall:.1f} s) {m.draining.line(cores)}")
    print(f"totals           {verdict}: {expected_records:,} records, {expected_units:,} units acknowledged")
    print("\n".join(check_lines))
    print(
        f"COPY ceiling     {ceiling:,.0f} records/s (plain COPY, text format, bare table; one client, commit per batch)"
    )
    print(f"binary COPY      {binary_ceiling:,.0f} records/s (same, FORMAT BINARY with typed rows; end to end is "
          f"{rate / binary_ceiling:.1%} of it)")  # fmt: skip
    print(f"ratio            {ratio:.1%} of the ceiling (end to end ÷ ceiling)")
    if m.idle.machine_busy > 0.1 * m.idle.wall * cores:
        print(
            f"WARNING          the machine was {m.idle.machine_busy / (m.idle.wall * cores):.0%} busy before the "
            "load started: other processes skew these figures"
        )

    peak = max(m.peak_rss_mb.values(), default=0.0)
    targets = [
        (f"end to end ≥ {TARGET_RECORDS_PER_S:,} records/s ({rate:,.0f})", rate >= TARGET_RECORDS_PER_S),
        (
            f"≥ {TARGET_BINARY_SHARE:.0%} of the same run's binary COPY ({rate / binary_ceiling:.1%})",
            rate >= TARGET_BINARY_SHARE * binary_ceiling,
        ),
        (f"every process ≤ {TARGET_RSS_MB} MB RSS (peak {peak:.0f} MB)", peak <= TARGET_RSS_MB),
        ("rollup totals exact", verdict == "OK"),
        ("no batch refused", not sent.failures),
    ]
    return exit_status(targets, wrong=bool(verdict != "OK" or sent.failures))


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM behaves like Ctrl-C: the `finally` blocks stop the processes and drop the database."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    print(f"cu {calibrate():.1f} ms (best of 5 × sum(range(10**6)) in a fresh process)", flush=True)
    stores = setup_stores()
    try:
        return run(args, stores)
    except RuntimeError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        if not args.keep_db:
            drop_database(stores)
        if stores.servers is not None:
            stores.servers.stop()


if __name__ == "__main__":
    sys.exit(main())
