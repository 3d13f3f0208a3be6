"""Config feed benchmark: 100,000 keys over 10,000 endpoints and 1,000 teams.

Prints snapshot server time and size (raw and gzip), changes-since time for 100 recent changes
(p50/p95 over repeated calls), and the time from a key revocation being committed to it appearing
in `?since=`. Runs against its own database (gatehouse_bench_feed) on the PostgreSQL that tests use:
DATABASE_URL's server, else 127.0.0.1:5432, else an embedded one.

    .venv/bin/python bench/config_feed.py [--teams 1000 --endpoints-per-team 10 --keys-per-endpoint 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCH_DB = "gatehouse_bench_feed"


def setup_django() -> None:
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
    os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{BENCH_DB}"))
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 60)
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    os.environ.setdefault("EMAIL_URL", "locmem://")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")  # no collectstatic for a benchmark
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(teams: int, endpoints_per_team: int, keys_per_endpoint: int) -> None:
    from accounts.models import Membership, Role, Team, User
    from endpoints import keys as key_format
    from endpoints.models import ApiKey, Endpoint, Service

    started = time.perf_counter()
    services = list(Service.objects.filter(kind="rpc").values_list("id", flat=True))
    users = User.objects.bulk_create([User(email=f"owner{i}@bench.example") for i in range(teams)], batch_size=5000)
    team_rows = Team.objects.bulk_create(
        [Team(name=f"Team {i}", slug=f"team-{i}") for i in range(teams)], batch_size=5000
    )
    Membership.objects.bulk_create(
        [Membership(team=t, user=u, role=Role.OWNER) for t, u in zip(team_rows, users, strict=True)], batch_size=5000
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
            for n in range(endpoints_per_team)
        ],
        batch_size=5000,
    )
    through = Endpoint.services.through
    through.objects.bulk_create(
        [
            through(endpoint=e, service_id=services[(i + j) % len(services)])
            for i, e in enumerate(endpoints)
            for j in range(2)
        ],
        batch_size=10000,
    )
    # A fixed fake secret per key: generating 100k real ones costs seconds and measures nothing here.
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
            for k in range(keys_per_endpoint)
        ],
        batch_size=10000,
    )
    print(
        f"seeded {teams:,} teams, {len(endpoints):,} endpoints, {ApiKey.objects.count():,} keys"
        f" in {time.perf_counter() - started:.1f} s"
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(repeat: int) -> None:
    from django.db import connection
    from django.test import Client

    from endpoints.models import ApiKey
    from endpoints.services import api_key_revoke, gateway_credential_create

    _credential, secret = gateway_credential_create(name="bench")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    connection.cursor().execute("ANALYZE")

    # Snapshot: the full request (auth, queries, encoding, gzip), in-process.
    timings, gzip_timings = [], []
    raw_size = gzip_size = 0
    for _ in range(3):
        t0 = time.perf_counter()
        plain = client.get("/api/gateway/v1/config")
        timings.append(time.perf_counter() - t0)
        raw_size = len(plain.content)
        t0 = time.perf_counter()
        zipped = client.get("/api/gateway/v1/config", HTTP_ACCEPT_ENCODING="gzip")
        gzip_timings.append(time.perf_counter() - t0)
        gzip_size = len(zipped.content)
    keys = len(plain.json()["keys"])
    print(f"snapshot: {keys:,} keys; server time {statistics.median(timings):.2f} s raw, "
          f"{statistics.median(gzip_timings):.2f} s gzip (median of 3)")  # fmt: skip
    print(f"snapshot size: {raw_size / 1e6:.1f} MB raw, {gzip_size / 1e6:.1f} MB gzip")

    # Changes since a cursor, 100 recent changes (revocations).
    cursor = plain.json()["cursor"]
    for key in ApiKey.objects.order_by("?")[:100]:
        api_key_revoke(key=key, actor=None)
    change_timings = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = client.get("/api/gateway/v1/config", {"since": cursor})
        change_timings.append((time.perf_counter() - t0) * 1000)
    assert len(response.json()["changes"]) == 100, len(response.json()["changes"])
    print(f"changes since cursor (100 changes): p50 {pct(change_timings, .5):.1f} ms, "
          f"p95 {pct(change_timings, .95):.1f} ms over {repeat} calls")  # fmt: skip

    # Revocation committed → visible in ?since= for a gateway polling as fast as it can.
    latencies = []
    victims = list(ApiKey.objects.usable().order_by("?")[:20])
    for victim in victims:
        since = client.get("/api/gateway/v1/config", {"since": cursor}).json()["cursor"]
        committed = threading.Event()
        stamp: dict[str, float] = {}

        def revoke(
            key: ApiKey = victim, stamp: dict[str, float] = stamp, committed: threading.Event = committed
        ) -> None:
            api_key_revoke(key=key, actor=None)
            stamp["committed"] = time.perf_counter()
            committed.set()
            connection.close()

        thread = threading.Thread(target=revoke)
        thread.start()
        committed.wait(10)
        while True:
            body = client.get("/api/gateway/v1/config", {"since": since}).json()
            if any(c["type"] == "key" and c["key"]["key_id"] == victim.key_id for c in body["changes"]):
                latencies.append((time.perf_counter() - stamp["committed"]) * 1000)
                break
        thread.join()
        cursor = body["cursor"]
    print(f"revocation commit → visible in ?since=: p50 {pct(latencies, .5):.1f} ms, p95 {pct(latencies, .95):.1f} ms "
          f"({len(latencies)} revocations; a real gateway adds its poll interval)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=1000)
    parser.add_argument("--endpoints-per-team", type=int, default=10)
    parser.add_argument("--keys-per-endpoint", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    setup_django()
    seed(args.teams, args.endpoints_per_team, args.keys_per_endpoint)
    measure(args.repeat)


if __name__ == "__main__":
    main()
