"""Dashboard benchmark: one team with 100 endpoints, 500 keys and 90 days of history.

The history goes through the real aggregation path (relay log → aggregation runs → compaction;
relays older than ingestion's 35-day window are written to the relay log directly, as batches).
Then, for every range, in UTC and in a time zone with daylight saving time (America/New_York: its
day buckets are local days), it times the overview page and every panel server-side (p50/p95 over
repeated requests, in-process Django test client), unfiltered and with each filter the UI offers,
and counts their SQL queries.

    .venv/bin/python bench/dashboard.py [--records 9000000 --repeat 20]

Targets, in cu (the calibration unit measured first): every panel p95 ≤ 4 cu and the overview page
≤ 20 cu; a response's query count the same for every range and time zone. Exit status: 0 when every
target is met, 1 when a response fails, 2 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faults import calibrate, exit_status  # bench/faults.py: the calibration unit, the exit status

BENCH_DB = "gatehouse_bench_dashboard"
TARGET_PANEL_CU = 4
TARGET_PAGE_CU = 20
ZONES = ("UTC", "America/New_York")


def setup_django(*, reuse: bool) -> None:
    from project import devstack

    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        found, servers = devstack.start_missing_servers(devstack.DATA_DIR / "bench", probe_local=True)
        os.environ.update(found)
        globals()["_servers"] = servers
    parts = urlsplit(os.environ["DATABASE_URL"])
    import psycopg
    from psycopg import sql

    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    if not reuse:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{BENCH_DB}"))
    os.environ.update(
        SECRET_KEY="bench-" + "x" * 60, ALLOWED_HOSTS="testserver", EMAIL_URL="locmem://", SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0", LOG_LEVEL="WARNING", DJANGO_SETTINGS_MODULE="project.settings",
    )  # fmt: skip
    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")
    django.setup()
    from django.conf import settings

    # The pages are rendered without collectstatic: plain static URLs, as in the tests.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(records: int, days: int, seed: int = 11):  # type: ignore[no-untyped-def]
    """A team, its 100 endpoints and 500 keys, and `records` relays spread over `days` days (diurnal)."""
    from accounts.services import team_create, user_create
    from analytics import aggregation, simulator
    from analytics.ingest import _copy_rows, _decoder, _from_epoch_ms, _Row
    from analytics.models import IngestBatch
    from endpoints.models import ApiKey
    from endpoints.services import api_key_create, endpoint_create, gateway_credential_create

    started = time.perf_counter()
    owner = user_create(email="owner@bench.example", password="bench-password-1", email_verified=True)  # noqa: S106
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    team = team_create(name="Bench Team", owner=owner)
    rpc = ["eth-mainnet", "base", "arbitrum", "optimism", "polygon", "bsc", "solana", "sepolia"]
    llm = ["llama-3.1-8b-instruct", "llama-3.1-70b-instruct", "deepseek-v3", "qwen-2.5-72b-instruct"]
    rng = random.Random(seed)
    for n in range(100):
        services = rng.sample(llm, 2) if n % 10 == 0 else rng.sample(rpc, 3)
        endpoint = endpoint_create(team=team, name=f"endpoint {n:03d}", services=services, actor=owner)
        for k in range(5):
            api_key_create(endpoint=endpoint, name=f"key {k}", actor=owner)
    keys = [
        simulator.SimKey.from_catalog(key_id=k.key_id, endpoint_id=k.endpoint.public_id, team=team.slug,
                                      service_ids=list(k.endpoint.services.values_list("id", flat=True)))
        for k in ApiKey.objects.filter(team=team).select_related("endpoint")
    ]  # fmt: skip
    keys = [k for k in keys if k is not None]
    print(f"seeded 1 team, 100 endpoints, {len(keys)} keys in {time.perf_counter() - started:.1f} s")

    gateway, _secret = gateway_credential_create(name="bench")
    key_map = {k.key_id: (k.pk, k.team_id, k.endpoint_id, k.endpoint.public_id)
               for k in ApiKey.objects.filter(team=team).select_related("endpoint")}  # fmt: skip
    now = datetime.now(UTC)
    start = now - timedelta(days=days)
    rate = records / (days * 24 * 60)
    generated = 0
    batch: list[_Row] = []
    started = time.perf_counter()

    def flush() -> None:
        from django.db import transaction

        if not batch:
            return
        with transaction.atomic():
            row = IngestBatch.objects.create(
                gateway=gateway, idempotency_key=f"bench-{generated}", body_sha256="-", record_count=len(batch),
                min_ts=min(r.ts for r in batch), max_ts=max(r.ts for r in batch),
            )  # fmt: skip
            _copy_rows(row.id, batch, key_map)
        batch.clear()

    import json

    for record in simulator.backfill(random.Random(seed), keys, start, now, rate):
        decoded = _decoder.decode(json.dumps(record).encode())
        ts = decoded.ts if isinstance(decoded.ts, datetime) else _from_epoch_ms(decoded.ts)
        batch.append(_Row(0, decoded, ts))
        generated += 1
        if len(batch) >= 20_000:
            flush()
    flush()
    print(f"wrote {generated:,} relays over {days} days in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    total = aggregation.aggregate_pending(time_budget_seconds=3600)
    compact = aggregation.compact_rollups()
    print(f"aggregated {total.records:,} relays and compacted {compact.hours} hours, {compact.days} days in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        for table in ("analytics_rollup_minute", "analytics_rollup_hour", "analytics_rollup_day",
                      "analytics_latency_hour", "analytics_latency_day"):  # fmt: skip
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - constant table names
            print(f"  {table}: {cursor.fetchone()[0]:,} rows")
    return team, owner


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(team, owner, repeat: int) -> list[tuple[str, str, str, float, float, int]]:  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(owner)
    client.get(f"/t/{team.slug}/")  # the session's first request saves it
    base = f"/t/{team.slug}/usage/panels/"
    panels = [
        ("overview page", f"/t/{team.slug}/", {}),
        ("cards", base + "cards", {}),
        ("requests by service", base + "requests", {}),
        ("requests by endpoint", base + "requests", {"stack": "endpoint"}),
        ("latency", base + "latency", {}),
        ("error rate", base + "errors", {}),
        *((f"top {by}s", base + "table", {"by": by}) for by in ("method", "service", "endpoint", "key", "region")),
    ]
    # The endpoint and key pages: the same panels filtered to the busiest endpoint and key.
    from analytics import selectors
    from endpoints.models import ApiKey, Endpoint

    now = datetime.now(UTC)
    busiest = {
        by: selectors.usage_breakdown(team=team, start=now - timedelta(days=90), end=now, by=by, limit=1)[0][by + "_id"]
        for by in ("endpoint", "key")
    }
    endpoint = {"endpoint": Endpoint.objects.get(pk=busiest["endpoint"]).public_id}
    key = {"key": ApiKey.objects.get(pk=busiest["key"]).key_id}
    top = {by: selectors.usage_breakdown(team=team, start=now - timedelta(days=90), end=now, by=by, limit=1)[0][by]
           for by in ("service", "method", "region")}  # fmt: skip
    panels += [
        # The other filters the UI offers, each on the panels it changes most.
        ("service: cards", base + "cards", {"service": top["service"]}),
        ("service: requests", base + "requests", {"service": top["service"]}),
        ("method: latency", base + "latency", {"method": top["method"]}),
        ("method: top services", base + "table", {"by": "service", "method": top["method"]}),
        ("region: requests", base + "requests", {"region": top["region"]}),
        ("status 5xx: cards", base + "cards", {"status": "5xx"}),
        ("status 5xx: top methods", base + "table", {"by": "method", "status": "5xx"}),
        ("endpoint: cards", base + "cards", endpoint),
        ("endpoint: requests", base + "requests", endpoint),
        ("endpoint: latency", base + "latency", endpoint),
        ("endpoint: top methods", base + "table", {"by": "method", **endpoint}),
        ("endpoint: top keys", base + "table", {"by": "key", **endpoint}),
        ("key: cards", base + "cards", key),
        ("key: latency", base + "latency", key),
        ("key: top methods", base + "table", {"by": "method", **key}),
        ("key: top regions", base + "table", {"by": "region", **key}),
        # The operator's view across all teams (the bench team is the only one with traffic).
        ("operator: cards", "/operator/panels/cards", {}),
        ("operator: requests", "/operator/panels/requests", {}),
        ("operator: latency", "/operator/panels/latency", {}),
        ("operator: service health", "/operator/panels/health", {}),
        ("operator: top teams", "/operator/panels/teams", {}),
    ]
    results = []
    for tz in ZONES:
        for range_key in ("1h", "24h", "7d", "30d", "90d"):
            for label, url, params in panels:
                params = {"range": range_key, "tz": tz, **params}
                timings = []
                for _ in range(repeat):
                    connection.queries_log.clear()  # it keeps the last 9000 only, which breaks the count
                    with CaptureQueriesContext(connection) as queries:
                        t0 = time.perf_counter()
                        response = client.get(url, params)
                        timings.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, (url, params, response.status_code)
                results.append((tz, range_key, label, pct(timings, 0.5), pct(timings, 0.95),
                            len(queries.captured_queries)))  # fmt: skip
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=9_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="measure the data a previous run seeded")
    args = parser.parse_args()
    cu = calibrate()
    print(f"cu {cu:.1f} ms (best of 5 × sum(range(10**6)) in a fresh process)", flush=True)
    setup_django(reuse=args.reuse)
    if args.reuse:
        from accounts.models import Membership

        membership = Membership.objects.select_related("team", "user").get(team__name="Bench Team", role="owner")
        team, owner = membership.team, membership.user
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")  # a migration may have just filled new tables
    else:
        team, owner = seed(args.records, args.days)
    try:
        results = measure(team, owner, args.repeat)
    except AssertionError as failed:
        print(f"WRONG a response failed: {failed}")
        return 1

    def limit(label: str) -> float:
        return (TARGET_PAGE_CU if label == "overview page" else TARGET_PANEL_CU) * cu

    print(f"\n{'zone':<16} {'range':>5}  {'response':<24} {'p50 ms':>8} {'p95 ms':>8} {'p95 cu':>7} {'queries':>8}")
    for tz, range_key, label, p50, p95, queries in results:
        flag = "" if p95 <= limit(label) else f"  > {limit(label) / cu:.0f} cu"
        print(f"{tz:<16} {range_key:>5}  {label:<24} {p50:8.1f} {p95:8.1f} {p95 / cu:7.2f} {queries:8d}{flag}")
    panels = [r for r in results if r[2] != "overview page"]
    pages = [r for r in results if r[2] == "overview page"]
    worst, worst_page = max(panels, key=lambda r: r[4]), max(pages, key=lambda r: r[4])
    counts: dict[str, set[int]] = {}
    for _tz, _range, label, _p50, _p95, queries in results:
        counts.setdefault(label, set()).add(queries)
    varying = sorted(label for label, seen in counts.items() if len(seen) > 1)
    print(f"\nmedian of medians: {statistics.median(r[3] for r in results):.1f} ms; worst panel p95 {worst[4]:.1f} ms "
          f"({worst[0]} {worst[1]} {worst[2]}), worst overview page p95 {worst_page[4]:.1f} ms")  # fmt: skip
    targets = [
        (f"every panel p95 ≤ {TARGET_PANEL_CU} cu ({worst[4] / cu:.2f} cu, {worst[1]} {worst[2]} {worst[0]})",
         worst[4] <= TARGET_PANEL_CU * cu),
        (f"the overview page p95 ≤ {TARGET_PAGE_CU} cu ({worst_page[4] / cu:.2f} cu)",
         worst_page[4] <= TARGET_PAGE_CU * cu),
        ("each response's query count the same for every range and zone"
         + (f" (varies: {', '.join(varying)})" if varying else ""), not varying),
    ]  # fmt: skip
    return exit_status(targets, wrong=False)


if __name__ == "__main__":
    sys.exit(main())
