"""Config feed benchmark: the snapshot for 100,000 and for --keys (1,000,000) keys, streamed by a real gunicorn worker.

Seeds keys over endpoints (10 keys each) and teams (10 endpoints each) in bulk, on a database of its own
(gatehouse_bench_feed) on the PostgreSQL tests use (DATABASE_URL's server, else 127.0.0.1:5432, else an embedded
one), and starts one gunicorn sync worker. At 100,000 keys and again at --keys it takes the snapshot the way a
gateway does (GET /api/gateway/v1/config, gzip, read to the last byte; median of --snapshots) while sampling the
worker's RSS, and checks that every key is in it. At --keys it also times the change feed for 100 recent changes
(?since=, p50/p95 over --repeat calls) and a revocation's commit → visible in ?since=.

    .venv/bin/python bench/config_feed.py [--keys 1000000 --snapshots 3 --repeat 50]

Targets (time in cu, the calibration unit this script measures first): the snapshot at --keys to its last byte
≤ 400 cu and no slower per key than at 100,000 keys; ≤ 60 bytes of gzip per key (60 MB for a million); the serving
worker ≤ 200 MB RSS throughout; the change feed p95 ≤ 2 cu.

Exit status: 0 when every target is met, 1 when a figure is wrong (a snapshot missing keys, changes not seen),
2 when a target is missed.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ingest  # bench/ingest.py: process spawning and stopping, free ports, percentiles
from faults import calibrate, exit_status  # bench/faults.py: the calibration unit, the exit status

BENCH_DB = "gatehouse_bench_feed"
BASE_KEYS = 100_000
KEYS_PER_ENDPOINT = 10
ENDPOINTS_PER_TEAM = 10
TARGET_SNAPSHOT_CU = 400
TARGET_GZIP_BYTES_PER_KEY = 60
TARGET_RSS_MB = 200
TARGET_CHANGES_P95_CU = 2
MB = 1024 * 1024


def setup_django() -> dict[str, str]:
    """Recreate the benchmark database, set up Django on it; the environment for gunicorn."""
    from project import devstack

    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        found, servers = devstack.start_missing_servers(devstack.DATA_DIR / "bench", probe_local=True)
        os.environ.update(found)
        globals()["_servers"] = servers  # keep embedded servers alive for the run
    parts = urlsplit(os.environ["DATABASE_URL"])
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    os.environ.update(
        DATABASE_URL=urlunsplit(parts._replace(path=f"/{BENCH_DB}")), SECRET_KEY="bench-" + "x" * 60,
        ALLOWED_HOSTS="127.0.0.1,testserver", EMAIL_URL="locmem://", SECURE_SSL_REDIRECT="0", LOG_LEVEL="WARNING",
        DEBUG="0", DJANGO_SETTINGS_MODULE="project.settings",
    )  # fmt: skip
    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")  # no collectstatic for a benchmark
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return dict(os.environ)


def seed(first_team: int, keys: int) -> None:
    """`keys` more keys, 10 per endpoint, 10 endpoints per team (bulk rows; a fixed fake secret per key)."""
    from accounts.models import Membership, Role, Team, User
    from endpoints import keys as key_format
    from endpoints.models import ApiKey, Endpoint, Service

    started = time.perf_counter()
    services = list(Service.objects.filter(kind="rpc").values_list("id", flat=True))
    per_team = ENDPOINTS_PER_TEAM * KEYS_PER_ENDPOINT
    teams = range(first_team, first_team + keys // per_team)
    for at in range(0, len(teams), 500):  # slices: a million model instances at once would not fit the target
        numbers = teams[at : at + 500]
        users = User.objects.bulk_create([User(email=f"owner{i}@bench.example") for i in numbers])
        team_rows = Team.objects.bulk_create([Team(name=f"Team {i}", slug=f"team-{i}") for i in numbers])
        Membership.objects.bulk_create(
            [Membership(team=t, user=u, role=Role.OWNER) for t, u in zip(team_rows, users, strict=True)]
        )
        endpoints = Endpoint.objects.bulk_create(
            [
                Endpoint(
                    public_id=key_format.public_id("ep_", 12),
                    team=team,
                    name=f"Endpoint {n}",
                    allowed_origins=["https://app.example.com", "*.example.org"] if n % 3 == 0 else [],
                    allowed_methods={"eth-mainnet": ["eth_call", "eth_getBalance"]} if n % 5 == 0 else {},
                    rate_limit_rps=100 if n % 2 else None,
                )
                for team in team_rows
                for n in range(ENDPOINTS_PER_TEAM)
            ]
        )
        through = Endpoint.services.through
        through.objects.bulk_create(
            [
                through(endpoint=e, service_id=services[(i + j) % len(services)])
                for i, e in enumerate(endpoints)
                for j in range(2)
            ]
        )
        ApiKey.objects.bulk_create(
            [
                ApiKey(
                    key_id=key_format.public_id("key_", 16),
                    team_id=e.team_id,
                    endpoint=e,
                    name=f"key {k}",
                    secret_hash=key_format.secret_hash(f"{e.public_id}-{k}"),
                    secret_hint="gk_live_xxxx…xxxx",  # noqa: S106 - a display hint, not a secret
                    daily_unit_cap=1_000_000 if k % 4 == 0 else None,
                )
                for e in endpoints
                for k in range(KEYS_PER_ENDPOINT)
            ],
            batch_size=10_000,
        )
    from django.db import connection

    connection.cursor().execute("VACUUM ANALYZE")  # fresh tables: the planner needs their statistics
    print(f"seeded {keys:,} keys ({len(teams):,} teams × {ENDPOINTS_PER_TEAM} endpoints × {KEYS_PER_ENDPOINT} keys) "
          f"in {time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip


class RssSampler(threading.Thread):
    """The peak RSS of a process (and its children), sampled every 50 ms while running."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.stopped = threading.Event()

    def sample(self) -> None:
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                self.peak = max(self.peak, proc.memory_info().rss)
            except Exception:  # noqa: S112 - a process that just exited has nothing to sample
                continue

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            time.sleep(0.05)


class Gateway:
    def __init__(self, port: int, secret: str):
        self.port = port
        self.headers = {"Authorization": f"Bearer {secret}"}

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("GET", path, headers=self.headers | headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


def snapshot(gateway: Gateway, rounds: int) -> tuple[float, int, int, dict]:
    """Median seconds to the last byte of a gzip snapshot; its gzip and raw sizes; the last body."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        status, headers, zipped = gateway.get("/api/gateway/v1/config", **{"Accept-Encoding": "gzip"})
        timings.append(time.perf_counter() - started)
        if status != 200 or headers.get("Content-Encoding") != "gzip":
            raise RuntimeError(f"snapshot: HTTP {status}, {headers}")
    raw = zlib.decompress(zipped, 16 + zlib.MAX_WBITS)
    return statistics.median(timings), len(zipped), len(raw), json.loads(raw)


def run(args: argparse.Namespace) -> int:
    cu = calibrate()
    print(f"cu {cu:.1f} ms (best of 5 × sum(range(10**6)) in a fresh process)", flush=True)
    env = setup_django()
    from django.db import connection

    from endpoints.models import ApiKey
    from endpoints.services import api_key_revoke, gateway_credential_create

    _credential, secret = gateway_credential_create(name="bench")
    port = ingest.free_port()
    problems: list[str] = []
    figures: dict[int, tuple[float, int, int, int]] = {}  # keys → (seconds, gzip bytes, raw bytes, peak RSS)

    with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp:
        server = ingest._spawn(
            "gunicorn",
            [sys.executable, "-m", "gunicorn", "project.wsgi:application", "--worker-class", "sync", "--workers", "1",
             "--timeout", "120", "--bind", f"127.0.0.1:{port}"],
            env, Path(tmp),
        )  # fmt: skip
        try:
            gateway = Gateway(port, secret)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if gateway.get("/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start: " + (Path(tmp) / "gunicorn.log").read_text()[-2000:])
                time.sleep(0.2)
            seeded = 0
            for size in sorted({BASE_KEYS, args.keys}):
                seed(seeded // (ENDPOINTS_PER_TEAM * KEYS_PER_ENDPOINT), size - seeded)
                seeded = size
                expected = ApiKey.objects.count()
                sampler = RssSampler(server.pid)
                sampler.start()
                seconds, zipped, raw, body = snapshot(gateway, args.snapshots)
                sampler.stopped.set()
                sampler.join()
                figures[size] = (seconds, zipped, raw, sampler.peak)
                if len(body["keys"]) != expected or len({k["key_id"] for k in body["keys"]}) != expected:
                    problems.append(f"snapshot at {size:,} keys holds {len(body['keys']):,} keys, {expected:,} exist")
                print(f"snapshot {size:>9,} keys: {seconds:.2f} s to the last byte ({seconds * 1000 / cu:.0f} cu, "
                      f"{seconds * 1e9 / size:.0f} ns/key), {zipped / 1e6:.1f} MB gzip ({zipped / size:.1f} B/key), "
                      f"{raw / 1e6:.1f} MB raw; worker peak RSS {sampler.peak / MB:.0f} MB", flush=True)  # fmt: skip
                del body

            # The change feed at full size: 100 recent changes (revocations).
            cursor = json.loads(gzip.decompress(gateway.get("/api/gateway/v1/config",
                                                            **{"Accept-Encoding": "gzip"})[2]))["cursor"]  # fmt: skip
            for key in ApiKey.objects.order_by("?")[:100]:
                api_key_revoke(key=key, actor=None)
            change_ms = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                status, _headers, answer = gateway.get(f"/api/gateway/v1/config?since={cursor}")
                change_ms.append((time.perf_counter() - started) * 1000)
            if status != 200 or len(json.loads(answer)["changes"]) != 100:
                problems.append(f"changes since the cursor: HTTP {status}, {answer[:200]!r} (100 expected)")
            latencies = []
            since = json.loads(gateway.get(f"/api/gateway/v1/config?since={cursor}")[2])["cursor"]
            for victim in ApiKey.objects.usable().order_by("?")[:20]:
                api_key_revoke(key=victim, actor=None)
                committed = time.perf_counter()
                while time.perf_counter() - committed < 10:
                    body = json.loads(gateway.get(f"/api/gateway/v1/config?since={since}")[2])
                    if any(c["type"] == "key" and c["key"]["key_id"] == victim.key_id for c in body["changes"]):
                        latencies.append((time.perf_counter() - committed) * 1000)
                        since = body["cursor"]
                        break
                else:
                    problems.append(f"revoked {victim.key_id} not in ?since= after 10 s")
        finally:
            ingest._stop([server])
            connection.close()

    big_s, big_zip = figures[args.keys][:2]
    base_s = figures[BASE_KEYS][0]
    per_key_ratio = (big_s / args.keys) / (base_s / BASE_KEYS)
    p95 = ingest.pct(change_ms, 0.95)
    print(
        f"\n== config feed benchmark ==\nchanges since a cursor (100 changes) at {args.keys:,} keys: "
        f"p50 {ingest.pct(change_ms, 0.5):.1f} ms, p95 {p95:.1f} ms ({p95 / cu:.2f} cu) over {args.repeat} calls"
    )
    print(
        f"revocation commit → visible in ?since=: p50 {ingest.pct(latencies, 0.5):.1f} ms, "
        f"p95 {ingest.pct(latencies, 0.95):.1f} ms ({len(latencies)} revocations; a gateway adds its poll interval)"
    )
    targets = [
        (f"snapshot of {args.keys:,} keys ≤ {TARGET_SNAPSHOT_CU} cu to the last byte ({big_s * 1000 / cu:.0f} cu)",
         big_s * 1000 / cu <= TARGET_SNAPSHOT_CU),
        (f"no slower per key than at {BASE_KEYS:,} ({per_key_ratio:.2f}×)", per_key_ratio <= 1.0),
        (f"≤ {TARGET_GZIP_BYTES_PER_KEY} B of gzip per key ({big_zip / args.keys:.1f})",
         big_zip / args.keys <= TARGET_GZIP_BYTES_PER_KEY),
        (f"serving worker ≤ {TARGET_RSS_MB} MB RSS ({max(f[3] for f in figures.values()) / MB:.0f} MB)",
         max(f[3] for f in figures.values()) <= TARGET_RSS_MB * MB),
        (f"change feed p95 ≤ {TARGET_CHANGES_P95_CU} cu ({p95 / cu:.2f})", p95 / cu <= TARGET_CHANGES_P95_CU),
    ]  # fmt: skip
    for problem in problems:
        print(f"WRONG {problem}")
    return exit_status(targets, wrong=bool(problems))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help=f"keys at full size (≥ {BASE_KEYS:,})")
    parser.add_argument("--snapshots", type=int, default=3, help="snapshots per size (median)")
    parser.add_argument("--repeat", type=int, default=50, help="change-feed calls")
    args = parser.parse_args(argv)
    if args.keys < BASE_KEYS or args.keys % (ENDPOINTS_PER_TEAM * KEYS_PER_ENDPOINT):
        parser.error(f"--keys: at least {BASE_KEYS:,}, a multiple of {ENDPOINTS_PER_TEAM * KEYS_PER_ENDPOINT}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _frame: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {signum}")))
    try:
        return run(args)
    finally:
        from django.db import connections

        connections.close_all()
        import psycopg
        from psycopg import sql

        parts = urlsplit(os.environ["DATABASE_URL"])
        with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))


if __name__ == "__main__":
    sys.exit(main())
