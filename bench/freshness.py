"""Freshness benchmark: how soon a batch the gateway API acknowledged shows where people look.

On the real stack (gunicorn, one Celery worker, beat, default aggregation pacing; bench/ingest.py's machinery, on a
database of its own: gatehouse_bench_freshness), one team with two endpoints, one key on each. The gateway pushes a
batch of --batch relays (half on each key, successful eth_calls stamped "now") every --interval seconds for
--duration seconds. Meanwhile one watcher per view polls, every --poll seconds, as the owner's browser would:

    overview       the default 24-hour overview's summary cards            /t/<team>/usage/panels/cards (requests)
    endpoint page  the same cards on the first endpoint's Usage tab        …/cards?endpoint=<id>       (requests)
    key page       the same cards on the second key's Usage tab            …/cards?key=<id>            (requests)
    usage API      the usage API's summary for the default range           /api/v1/teams/<team>/usage/summary
    cost card      the dashboard's "Cost this month" card                  /t/<team>/billing/cost-card (billable units)
    billing page   the billing page's cost to date                         /t/<team>/billing/          (billable units)

A batch is *reflected* in a view at the end of the first poll whose figure reaches the cumulative figure the view
must show once that batch is counted; its freshness is that instant minus the instant the batch's 202 arrived.
p50 / p95 / max per view over every batch, and each view's final figure must equal the acknowledged totals exactly.

    .venv/bin/python bench/freshness.py [--duration 180 --interval 1 --batch 200 --poll 0.25]

Exit status: 0 when every view's p95 ≤ 10 s and every total is exact, 1 when a figure is wrong (a view never
reaches, or overshoots, the acknowledged totals), 2 when a target is missed.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ingest  # bench/ingest.py: stores, seeding, the running stack
from faults import calibrate, exit_status  # bench/faults.py: the calibration unit, the exit status

ingest.BENCH_DB = "gatehouse_bench_freshness"
TARGET_P95_S = 10.0
SETTLE_S = 90.0  # after the last batch, how long the views may take to show everything
METHOD = "eth_call"
UNITS_RE = re.compile(rb'data-units="(\d+)"')


@dataclass
class Pushed:
    """What the gateway has had acknowledged: per batch, the 202's instant and the cumulative figures after it."""

    acked_at: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)  # whole team
    first_endpoint: list[int] = field(default_factory=list)
    second_key: list[int] = field(default_factory=list)
    units: list[int] = field(default_factory=list)


class Client:
    """One keep-alive connection to gunicorn with the owner's session cookie (reconnects when gunicorn closes it)."""

    def __init__(self, port: int, headers: dict[str, str]):
        self.port = port
        self.headers = headers
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, data: bytes | None = None, **headers: str) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request("POST" if data is not None else "GET", path, body=data,
                                  headers=self.headers | headers)  # fmt: skip
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def owner_session_cookie(team_id: int) -> str:
    """A logged-in session of the team's owner, made the way django.contrib.auth.login makes one."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.models import Membership

    owner = Membership.objects.select_related("user").get(team_id=team_id, role="owner").user
    session = SessionStore()
    session[SESSION_KEY] = str(owner.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = owner.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def cards_requests(body: bytes) -> int:
    rows = {row[0]: row[1] for row in csv.reader(io.StringIO(body.decode()))}
    return int(rows["requests"] or 0)


def data_units(body: bytes) -> int:
    found = UNITS_RE.search(body)
    if not found:
        raise RuntimeError(f"no data-units in the page: {body[:300]!r}")
    return int(found.group(1))


def record(key: ingest.SeededKey, n: int, service: str, units: int) -> dict[str, object]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"id": f"f-{uuid.uuid4().hex}-{n}", "ts": now, "key_id": key.key_id, "endpoint_id": key.endpoint_public_id,
            "service": service, "method": METHOD, "status": 200, "error_class": None, "latency_ms": 20.0,
            "req_bytes": 300, "resp_bytes": 900, "units": units, "region": "eu-west-1"}  # fmt: skip


def push_steadily(
    port: int, secret: str, keys: list[ingest.SeededKey], service: str, units: int, args: argparse.Namespace,
    pushed: Pushed, done: threading.Event,
) -> None:  # fmt: skip
    """One batch every --interval seconds (half on each key) until --duration is over."""
    client = Client(port, {"Authorization": f"Bearer {secret}"})
    first, second = keys
    started = time.perf_counter()
    try:
        n = 0
        while time.perf_counter() - started < args.duration:
            due = started + n * args.interval
            time.sleep(max(0.0, due - time.perf_counter()))
            half = args.batch // 2
            lines = [record(first, i, service, units) for i in range(half)]
            lines += [record(second, i, service, units) for i in range(args.batch - half)]
            data = "\n".join(json.dumps(line) for line in lines).encode()
            status, answer = client.get("/api/gateway/v1/usage", data, **{
                "Content-Type": "application/x-ndjson", "Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
            if status != 202:
                raise RuntimeError(f"usage refused: {status} {answer[:200]!r}")
            previous = (pushed.requests or [0])[-1], (pushed.first_endpoint or [0])[-1]
            pushed.requests.append(previous[0] + args.batch)
            pushed.first_endpoint.append(previous[1] + half)
            pushed.second_key.append((pushed.second_key or [0])[-1] + args.batch - half)
            pushed.units.append((pushed.units or [0])[-1] + args.batch * units)
            pushed.acked_at.append(time.perf_counter())
            n += 1
    finally:
        done.set()


@dataclass
class View:
    name: str
    path: str
    read: Callable[[bytes], int]
    expected: Callable[[Pushed], list[int]]
    seen: list[tuple[float, int]] = field(default_factory=list)  # (end of the poll, figure shown)
    problems: list[str] = field(default_factory=list)


def watch(view: View, port: int, cookie: str, poll: float, pushed: Pushed, done: threading.Event) -> None:
    """Poll the view until pushing is over and it shows everything acknowledged (or SETTLE_S passed)."""
    client = Client(port, {"Cookie": cookie})
    settle_by = None
    while True:
        status, body = client.get(view.path)
        if status != 200:
            view.problems.append(f"{view.name}: HTTP {status} {body[:200]!r}")
            return
        view.seen.append((time.perf_counter(), view.read(body)))
        if done.is_set():
            settle_by = settle_by or time.perf_counter() + SETTLE_S
            expected = view.expected(pushed)
            if (expected and view.seen[-1][1] >= expected[-1]) or time.perf_counter() > settle_by:
                return
        time.sleep(poll)


def lags(view: View, pushed: Pushed) -> list[float]:
    """Per batch: seconds from its 202 to the first poll showing it (batches never shown are left out and reported)."""
    expected = view.expected(pushed)
    result: list[float] = []
    cursor = 0
    for acked, figure in zip(pushed.acked_at, expected, strict=True):
        while cursor < len(view.seen) and view.seen[cursor][1] < figure:
            cursor += 1
        if cursor == len(view.seen):
            break
        result.append(max(0.0, view.seen[cursor][0] - acked))
    final = view.seen[-1][1] if view.seen else None
    if expected and final != expected[-1]:
        view.problems.append(f"{view.name}: shows {final} at the end, {expected[-1]} acknowledged")
    over = [figure for _t, figure in view.seen if expected and figure > expected[-1]]
    if over:
        view.problems.append(f"{view.name}: showed {max(over)}, more than the {expected[-1]} acknowledged")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of steady pushing")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between batches")
    parser.add_argument("--batch", type=int, default=200, help="relays per batch")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between a view's polls")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    cu = calibrate()
    print(f"cu {cu:.1f} ms (best of 5 × sum(range(10**6)) in a fresh process)", flush=True)
    stores = ingest.setup_stores()
    try:
        from django.core.management import call_command

        from endpoints.catalog import SERVICES

        call_command("collectstatic", interactive=False, verbosity=0)  # gunicorn serves pages as in production

        keys, secret = ingest.seed(teams=1, endpoints_per_team=2, keys_per_endpoint=1)
        service = keys[0].services[0]
        assert service in keys[1].services, "both endpoints serve the first RPC network"
        spec = next(s for s in SERVICES if s["id"] == service)
        units = spec["method_compute_units"].get(METHOD, spec["compute_units"])
        from accounts.models import Team

        slug = Team.objects.get(pk=keys[0].team_id).slug
        cookie = owner_session_cookie(keys[0].team_id)
        cards = f"/t/{slug}/usage/panels/cards?format=csv"
        views = [
            View("overview", cards, cards_requests, lambda p: p.requests),
            View("endpoint page", f"{cards}&endpoint={keys[0].endpoint_public_id}", cards_requests,
                 lambda p: p.first_endpoint),
            View("key page", f"{cards}&key={keys[1].key_id}", cards_requests, lambda p: p.second_key),
            View("usage API", f"/api/v1/teams/{slug}/usage/summary", lambda b: int(json.loads(b)["requests"]),
                 lambda p: p.requests),
            View("cost card", f"/t/{slug}/billing/cost-card", data_units, lambda p: p.units),
            View("billing page", f"/t/{slug}/billing/", data_units, lambda p: p.units),
        ]  # fmt: skip
        pushed = Pushed()
        done = threading.Event()
        with ingest.running_stack(stores.child_env, web_workers=2, aggregators=1) as stack:
            for view in views:  # every view answers (and is empty) before the load starts
                status, body = Client(stack.port, {"Cookie": cookie}).get(view.path)
                if status != 200 or view.read(body) != 0:
                    raise RuntimeError(f"{view.name} before any usage: HTTP {status}, {body[:300]!r}")
            threads = [threading.Thread(target=watch, args=(v, stack.port, cookie, args.poll, pushed, done))
                       for v in views]  # fmt: skip
            pusher = threading.Thread(
                target=push_steadily, args=(stack.port, secret, keys, service, units, args, pushed, done)
            )
            for thread in [*threads, pusher]:
                thread.start()
            for thread in [pusher, *threads]:
                thread.join()
            stack.check_alive()
    finally:
        ingest.drop_database(stores)

    print(f"\n== freshness benchmark ==\n{len(pushed.acked_at)} batches of {args.batch} relays, one every "
          f"{args.interval:g} s for {args.duration:g} s; each view polled every {args.poll:g} s")  # fmt: skip
    targets: list[tuple[str, bool]] = []
    problems: list[str] = []
    for view in views:
        measured = lags(view, pushed)
        problems += view.problems
        p95 = ingest.pct(measured, 0.95)
        print(f"{view.name:<14} p50 {ingest.pct(measured, 0.5):5.2f} s  p95 {p95:5.2f} s  "
              f"max {max(measured, default=0):5.2f} s  ({len(measured)} of {len(pushed.acked_at)} batches shown, "
              f"final {view.seen[-1][1] if view.seen else '-'})")  # fmt: skip
        targets.append((f"{view.name}: p95 ≤ {TARGET_P95_S:g} s ({p95:.2f} s)",
                        len(measured) == len(pushed.acked_at) and p95 <= TARGET_P95_S))  # fmt: skip
    for problem in problems:
        print(f"WRONG {problem}")
    return exit_status(targets, wrong=bool(problems or not pushed.acked_at))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _frame: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {signum}")))
    return run(args)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
