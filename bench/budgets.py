"""Budgets benchmark: how fast a crossing reaches the config feed, and what 10,000 budgets and health rules add to
aggregation.

1. Crossing → feed, on the real stack (gunicorn, one Celery worker, beat, default aggregation pacing; bench/ingest.py's
   machinery, on a database of its own: gatehouse_bench_budgets). Each of --crossings keys has a stop-traffic budget
   of 10 eth_calls; one POST of 11 pushes it over. The clock starts when the gateway API acknowledges that batch (202)
   and stops when `GET /api/gateway/v1/config?since=<cursor>` (polled every 50 ms, as a gateway would poll) shows the
   key suspended with status_reason budget_exceeded. p50 / p95 over the crossings.
2. Added aggregation time, in-process, median of the runs: the same batches aggregated with nothing to evaluate; with
   the touched team's budgets (units with a forecast, money) and an error-rate rule (its cost per touched team, in cu);
   and with 10,000 more budgets and 10,000 more health rules on keys and endpoints of 1,000 other teams (flat: only what
   a run touched is evaluated).

    .venv/bin/python bench/budgets.py [--crossings 24 --budgets 10000]

Exit status: 0 when every crossing reached the feed and every target is met, 1 when a result is wrong (a key never
stopped, a wrong reason), 2 when a target is missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ingest  # bench/ingest.py: stores, seeding, the running stack
from faults import calibrate, exit_status  # bench/faults.py: the calibration unit, the exit status

ingest.BENCH_DB = "gatehouse_bench_budgets"
CALL_UNITS = 26  # an eth_call success, in billable units
TARGET_P95_S = 10.0
TARGET_ADDED_SHARE = 0.25  # 10,000 budgets may add at most a quarter to an aggregation run (flat, not per budget)
TARGET_TOUCHED_CU = 2.0  # evaluating one touched team's budgets (units + forecast, money) and rule: ≤ 2 cu per run
POLL_S = 0.05


def pct(values: list[float], q: float) -> float:
    return ingest.pct(values, q)


def record(key: ingest.SeededKey, n: int) -> dict[str, object]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"id": f"b-{uuid.uuid4().hex}-{n}", "ts": now, "key_id": key.key_id, "endpoint_id": key.endpoint_public_id,
            "service": "eth-mainnet", "method": "eth_call", "status": 200, "error_class": None, "latency_ms": 20.0,
            "req_bytes": 300, "resp_bytes": 900, "units": 26, "region": "eu-west-1"}  # fmt: skip


def body(key: ingest.SeededKey, count: int) -> bytes:
    return "\n".join(json.dumps(record(key, n)) for n in range(count)).encode()


class Gateway:
    """The gateway's side of the contract: push usage, follow the config feed."""

    def __init__(self, port: int, secret: str):
        self.port = port
        self.headers = {"Authorization": f"Bearer {secret}"}

    def _request(self, method: str, path: str, data: bytes | None = None, **headers: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=self.headers | headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def push(self, data: bytes) -> None:
        headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": uuid.uuid4().hex}
        status, answer = self._request("POST", "/api/gateway/v1/usage", data, **headers)
        if status != 202:
            raise RuntimeError(f"usage refused: {status} {answer[:200]!r}")

    def cursor(self) -> str:
        status, answer = self._request("GET", "/api/gateway/v1/config")
        if status != 200:
            raise RuntimeError(f"config snapshot: {status}")
        return str(json.loads(answer)["cursor"])

    def key_status(self, since: str, key_id: str) -> tuple[str, str | None] | None:
        status, answer = self._request("GET", f"/api/gateway/v1/config?since={since}")
        if status != 200:
            raise RuntimeError(f"config changes: {status}")
        found = None
        for change in json.loads(answer)["changes"]:
            if change["type"] == "key" and change["key"]["key_id"] == key_id:
                found = (change["key"]["status"], change["key"]["status_reason"])
        return found


def crossing_latencies(
    stores: ingest.Stores, keys: list[ingest.SeededKey], secret: str
) -> tuple[list[float], list[str]]:
    """Seconds from the crossing batch's 202 to the key suspended in the feed, per key; and what went wrong."""
    from accounts.models import Team
    from alerts.services import budget_create
    from endpoints.models import ApiKey

    for key in keys:
        api_key = ApiKey.objects.select_related("endpoint").get(key_id=key.key_id)
        budget_create(team=Team.objects.get(pk=key.team_id), actor=None, scope="key", key=api_key,
                      name=f"cap {key.key_id}", amount=10 * CALL_UNITS, thresholds=[100], action="stop")  # fmt: skip
    latencies: list[float] = []
    problems: list[str] = []
    with ingest.running_stack(stores.child_env, web_workers=2, aggregators=1) as stack:
        gateway = Gateway(stack.port, secret)
        gateway.push(body(keys[0], 1))  # warm-up: code loaded, partitions made
        time.sleep(3)
        for key in keys:
            since = gateway.cursor()
            gateway.push(body(key, 11))  # 11 × 26 units: over the budget of 10 calls
            acknowledged = time.perf_counter()
            deadline = acknowledged + 60
            while True:
                seen = gateway.key_status(since, key.key_id)
                if seen is not None:
                    break
                if time.perf_counter() > deadline:
                    break
                time.sleep(POLL_S)
            if seen != ("suspended", "budget_exceeded"):
                problems.append(f"{key.key_id}: feed says {seen} (wanted suspended / budget_exceeded)")
                continue
            latencies.append(time.perf_counter() - acknowledged)
            stack.check_alive()
    return latencies, problems


def seed_budgets(count: int) -> int:
    """`count` budgets on keys, and as many health rules on endpoints, of teams the load never touches (bulk rows:
    the evaluation only reads them)."""
    from accounts.models import Team
    from alerts.models import AlertRule, Budget
    from endpoints.models import ApiKey, Endpoint

    teams = Team.objects.bulk_create(Team(name=f"Quiet {n}", slug=f"quiet-{n}") for n in range(count // 10))
    endpoints = Endpoint.objects.bulk_create(
        Endpoint(team=team, name="quiet", public_id=f"ep_quiet{n:08d}") for n, team in enumerate(teams)
    )
    keys = ApiKey.objects.bulk_create(
        ApiKey(
            team=endpoint.team,
            endpoint=endpoint,
            name=f"k{k}",
            key_id=f"key_quiet{n:06d}{k}",
            secret_hash=f"{n:032d}{k:032d}",
            secret_hint="-",  # noqa: S106 - a display hint of a bench key, not a secret
        )
        for n, endpoint in enumerate(endpoints)
        for k in range(10)
    )
    budgets = Budget.objects.bulk_create(
        Budget(team_id=key.team_id, scope="key", key=key, endpoint=key.endpoint, name="quiet", amount=1000)
        for key in keys[:count]
    )
    AlertRule.objects.bulk_create(
        AlertRule(team=endpoint.team, endpoint=endpoint, name=f"quiet {n}", metric="error_rate", threshold=5)
        for endpoint in endpoints
        for n in range(10)
    )
    return len(budgets)


def aggregation_seconds(keys: list[ingest.SeededKey], runs: int) -> float:
    """Median in-process time of an aggregation run over one fresh batch per touched key (its after-commit budget
    evaluation included)."""
    from analytics import aggregation
    from analytics.ingest import ingest as ingest_batch
    from endpoints.models import GatewayCredential

    credential = GatewayCredential.objects.first()
    timings = []
    for _ in range(runs):
        for key in keys:
            ingest_batch(body=body(key, 50), gateway=credential, idempotency_key=uuid.uuid4().hex)
        started = time.perf_counter()
        aggregation.aggregate_pending(time_budget_seconds=30)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crossings", type=int, default=24, help="keys pushed over their budget (≥ 20)")
    parser.add_argument("--budgets", type=int, default=10_000, help="budgets on untouched keys for the cost figure")
    parser.add_argument("--runs", type=int, default=31, help="aggregation runs per cost figure")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cu = calibrate()
    print(f"cu {cu:.1f} ms (best of 5 × sum(range(10**6)) in a fresh process)")
    stores = ingest.setup_stores()
    try:
        keys, secret = ingest.seed(teams=max(1, args.crossings // 4 + 1), endpoints_per_team=2, keys_per_endpoint=2)
        crossing = keys[1 : args.crossings + 1]
        latencies, problems = crossing_latencies(stores, crossing, secret)

        # What budgets add to aggregation: the team-scope budgets of the touched teams, then 10,000 more elsewhere.
        from accounts.models import Team
        from alerts.health import alert_rule_create
        from alerts.services import budget_create

        touched = keys[-4:]
        baseline = aggregation_seconds(touched, args.runs)
        touched_teams = {k.team_id for k in touched}
        for team_id in touched_teams:  # a budget of each kind and a health rule on the touched teams
            team = Team.objects.get(pk=team_id)
            budget_create(team=team, actor=None, scope="team", name="whole team", amount=10**12, forecast=True)
            budget_create(team=team, actor=None, scope="team", name="spend", measure="money", amount=10**9)
            alert_rule_create(team=team, actor=None, name="errors", metric="error_rate", threshold=5)
        # Rollup tables grow with every run, so runs get slower over time: measure without, with, and without the
        # 10,000 again, and compare "with" to the mean of the two "without" (a linear drift cancels out).
        before = aggregation_seconds(touched, args.runs)
        seeded = seed_budgets(args.budgets)
        loaded = aggregation_seconds(touched, args.runs)
        Team.objects.filter(slug__startswith="quiet-").delete()
        evaluated = (before + aggregation_seconds(touched, args.runs)) / 2
    finally:
        ingest.drop_database(stores)

    print("\n== budgets benchmark ==")
    if latencies:
        print(f"crossing → feed   p50 {pct(latencies, 0.5):.2f} s, p95 {pct(latencies, 0.95):.2f} s, "
              f"max {max(latencies):.2f} s over {len(latencies)} crossings (202 of the crossing batch → key "
              f"suspended in ?since=, polled every {POLL_S * 1000:.0f} ms)")  # fmt: skip
    per_team_cu = (evaluated - baseline) * 1000 / cu / len(touched_teams)
    added = loaded - evaluated
    print(f"aggregation run   {baseline * 1000:.1f} ms with nothing to evaluate; {evaluated * 1000:.1f} ms evaluating "
          f"the {len(touched_teams)} touched teams' budgets and rules ({per_team_cu:.2f} cu per team); "
          f"{loaded * 1000:.1f} ms with {seeded:,} more budgets and {seeded:,} more health rules elsewhere "
          f"({added * 1000:+.1f} ms, {added / evaluated:+.0%}); median of {args.runs} runs, "
          f"{len(touched)} keys touched")  # fmt: skip
    for problem in problems:
        print(f"WRONG {problem}")
    targets = [
        (f"every crossing reaches the feed (p95 ≤ {TARGET_P95_S:.0f} s)", bool(latencies) and not problems
         and pct(latencies, 0.95) <= TARGET_P95_S),
        (f"≥ 20 crossings measured ({len(latencies)})", len(latencies) >= 20),
        (f"evaluating a touched team's budgets and rule ≤ {TARGET_TOUCHED_CU:g} cu per run ({per_team_cu:.2f})",
         per_team_cu <= TARGET_TOUCHED_CU),
        (f"{args.budgets:,} more budgets and health rules add ≤ {TARGET_ADDED_SHARE:.0%} to an aggregation run",
         added <= TARGET_ADDED_SHARE * evaluated),
    ]  # fmt: skip
    return exit_status(targets, wrong=bool(problems))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _frame: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {signum}")))
    return run(args)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
