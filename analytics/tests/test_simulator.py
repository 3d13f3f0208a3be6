"""The traffic simulator: the model's statistics (no database), the gateway client's retries against a
stub server, and the command end to end against a live server (config feed → usage API → rollups)."""

from __future__ import annotations

import gzip
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import Any

import msgspec
import pytest
from django.core.management import CommandError, call_command

from analytics import simulator
from analytics.ingest import UsageRecord
from analytics.management.commands.simulate_relays import (
    GatewayClient,
    GatewayRefusedError,
    GatewayUnavailableError,
    ndjson_batches,
)
from endpoints.catalog import METHOD_WEIGHTS, SERVICES

MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
SATURDAY = datetime(2026, 11, 28, tzinfo=UTC)
CONTRACT_FIELDS = {
    "id", "ts", "key_id", "endpoint_id", "service", "method", "status", "error_class", "latency_ms", "req_bytes",
    "resp_bytes", "units", "input_tokens", "output_tokens", "region",
}  # fmt: skip
CATALOG = {spec["id"]: spec for spec in SERVICES}


def sim_key(*service_ids: str, key_id: str = "key_sim0000000000001", **kwargs: Any) -> simulator.SimKey:
    key = simulator.SimKey.from_catalog(
        key_id=key_id, endpoint_id="ep_sim000000001", team="team-a", service_ids=service_ids, **kwargs
    )
    assert key is not None
    return key


def records_at_random_times(
    key: simulator.SimKey, count: int, *, start: datetime = MONDAY, span: timedelta = timedelta(days=1), seed: int = 7
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    seconds = span.total_seconds()
    return [simulator.make_record(rng, key, start + timedelta(seconds=rng.random() * seconds)) for _ in range(count)]


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- the model ---------------------------------------------------------------------------------------


def test_records_follow_the_v1_contract() -> None:
    keys = [sim_key("eth-mainnet", "llama-3.1-8b-instruct"), sim_key("solana", "deepseek-v3", key_id="key_sim2")]
    records = [r for seed, key in enumerate(keys) for r in records_at_random_times(key, 10_000, seed=seed)]

    for record in records:
        assert set(record) == CONTRACT_FIELDS
        decoded = msgspec.json.decode(json.dumps(record).encode(), type=UsageRecord)
        assert decoded.service == record["service"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
        if CATALOG[record["service"]]["kind"] == "rpc":
            assert record["input_tokens"] is None
            assert record["output_tokens"] is None
        else:
            assert isinstance(record["input_tokens"], int)
            assert isinstance(record["output_tokens"], int)
    assert len({r["id"] for r in records}) == len(records)
    assert {r["service"] for r in records} == {"eth-mainnet", "llama-3.1-8b-instruct", "solana", "deepseek-v3"}
    regions = Counter(r["region"] for r in records)
    assert abs(regions["us-east-1"] / len(records) - 0.5) < 0.02
    assert abs(regions["ap-southeast-1"] / len(records) - 0.15) < 0.02


def test_method_mix_follows_the_catalog_weights() -> None:
    records = records_at_random_times(sim_key("eth-mainnet"), 20_000)

    counts = Counter(r["method"] for r in records)
    top = sorted(METHOD_WEIGHTS["evm"].items(), key=lambda item: -item[1])[:7]
    for method, weight in top:
        assert abs(counts[method] / len(records) - weight) < 0.02, method
    assert set(counts) <= set(METHOD_WEIGHTS["evm"])


def test_a_method_allowlist_restricts_the_mix() -> None:
    allowed = ["eth_call", "eth_blockNumber", "eth_getProof"]
    key = sim_key("eth-mainnet", allowed_methods={"eth-mainnet": allowed})

    methods = Counter(r["method"] for r in records_at_random_times(key, 2_000))

    assert set(methods) <= set(allowed)
    assert methods["eth_call"] > methods["eth_blockNumber"] > methods["eth_getProof"]


def test_error_rates_outside_incidents_and_inside_one() -> None:
    key = sim_key("eth-mainnet")
    outside = [
        r for r in records_at_random_times(key, 20_000) if not simulator.incident("eth-mainnet", parse_ts(r["ts"]))
    ]
    rates = {cls: n / len(outside) for cls, n in Counter(r["error_class"] for r in outside).items()}
    assert 0.010 < rates["user"] < 0.020
    assert 0.002 < rates["upstream"] < 0.009
    assert 0.0 < rates["gateway"] < 0.003

    first, end = simulator.incident_windows("eth-mainnet", MONDAY.date())[0]
    window_start = MONDAY + timedelta(minutes=first)
    window = timedelta(minutes=min(end, 1440) - first)
    inside = records_at_random_times(key, 2_000, start=window_start, span=window)
    upstream = sum(r["error_class"] == "upstream" for r in inside) / len(inside)
    assert 0.18 < upstream < 0.32

    for record in outside + inside:
        if record["error_class"] is None:
            assert record["status"] == 200
        else:
            expected = {"user": {400, 401, 429}, "upstream": {502, 504}, "gateway": {500, 503}}
            assert record["status"] in expected[record["error_class"]]


def test_units_are_compute_units_for_rpc_and_priced_tokens_for_llm() -> None:
    key = sim_key("eth-mainnet", "solana", "llama-3.1-70b-instruct")
    records = records_at_random_times(key, 10_000)

    for record in records:
        spec = CATALOG[record["service"]]
        if record["error_class"] is not None:
            assert record["units"] == 0  # failed relays are not billed
        elif spec["kind"] == "rpc":
            assert record["units"] == spec["method_compute_units"].get(record["method"], spec["compute_units"])
        else:
            # Tokens at list price, 1M units = $1: what billing rates them at (rounded per relay here).
            exact = record["input_tokens"] * spec["input_price_per_million"] + (
                record["output_tokens"] * spec["output_price_per_million"]
            )
            assert abs(record["units"] - exact) <= Decimal("0.5")
            if record["method"] == "embeddings":
                assert record["output_tokens"] == 0
            else:
                assert record["output_tokens"] > 0
    llm = [r for r in records if r["service"] == "llama-3.1-70b-instruct" and r["method"] == "chat.completions"]
    rpc = [r for r in records if r["service"] == "eth-mainnet" and r["error_class"] is None]
    median = sorted(r["latency_ms"] for r in llm)[len(llm) // 2]
    assert 600 < median < 1400
    assert sorted(r["latency_ms"] for r in rpc)[len(rpc) // 2] < 100


def test_diurnal_factor_follows_the_day_and_the_week() -> None:
    night, afternoon = (
        simulator.diurnal_factor(MONDAY.replace(hour=3)),
        simulator.diurnal_factor(MONDAY.replace(hour=15)),
    )
    assert night == pytest.approx(0.5)
    assert afternoon == pytest.approx(1.5)
    assert simulator.diurnal_factor(SATURDAY.replace(hour=15)) == pytest.approx(1.5 * 0.7)


def test_incidents_are_deterministic_and_a_few_a_day() -> None:
    minutes = [MONDAY + timedelta(minutes=m) for m in range(7 * 1440)]
    first = [simulator.incident("base", ts) for ts in minutes]
    simulator.incident_windows.cache_clear()
    assert [simulator.incident("base", ts) for ts in minutes] == first
    assert simulator.incident("base", minutes[100].replace(second=59)) == first[100]  # per minute

    for day in range(7):
        windows = simulator.incident_windows("base", (MONDAY + timedelta(days=day)).date())
        assert 1 <= len(windows) <= 3
        assert all(5 <= end - start <= 15 for start, end in windows)
    assert 7 * 5 <= sum(first) <= 7 * 45
    assert first != [simulator.incident("solana", ts) for ts in minutes]


def test_backfill_is_ordered_within_its_range_near_the_rate() -> None:
    keys = [sim_key("eth-mainnet", "llama-3.1-8b-instruct", key_id=f"key_sim{i:02d}") for i in range(10)]
    start, end = MONDAY + timedelta(seconds=30), MONDAY + timedelta(hours=6, seconds=30)

    records = list(simulator.backfill(random.Random(3), keys, start, end, 20))

    times = [parse_ts(r["ts"]) for r in records]
    assert times == sorted(times)
    assert start.replace(microsecond=0) <= times[0]
    assert times[-1] < end
    expected = sum(20 * simulator.diurnal_factor(start + timedelta(minutes=m)) for m in range(360))
    assert abs(len(records) - expected) < 0.05 * expected
    shares = Counter(r["key_id"] for r in records)
    assert shares.most_common(1)[0][1] > 2 * len(records) / len(keys)  # a few keys dominate


def test_live_gives_the_records_of_one_interval() -> None:
    key = sim_key("solana")
    start = MONDAY + timedelta(hours=15)
    records = simulator.live(random.Random(4), [key], start, start + timedelta(seconds=60), 10)

    assert 600 < len(records) < 1200  # 10/s × 60 s × 1.5 at the afternoon peak
    assert all(start <= parse_ts(r["ts"]) < start + timedelta(seconds=60) for r in records)
    assert simulator.live(random.Random(4), [key], start, start, 10) == []


# --- the gateway client ------------------------------------------------------------------------------


def test_ndjson_batches_respect_count_and_bytes() -> None:
    records = [{"id": str(i), "ts": f"t{i}", "pad": "x" * 100} for i in range(25)]

    by_count = list(ndjson_batches(records, batch_size=10, max_bytes=10**6))
    by_bytes = list(ndjson_batches(records, batch_size=100, max_bytes=1000))

    assert [b.records for b in by_count] == [10, 10, 5]
    assert by_count[-1].last_ts == "t24"
    assert all(len(b.body) <= 1000 for b in by_bytes)
    assert sum(b.records for b in by_bytes) == 25
    lines = b"".join(b.body for b in by_bytes).splitlines()
    assert [json.loads(line)["id"] for line in lines] == [str(i) for i in range(25)]


class StubGateway(ThreadingHTTPServer):
    """Answers POSTs from a script of (status, body), recording what each attempt sent."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]):
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.answers = answers
        self.seen: list[tuple[str, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _StubHandler(BaseHTTPRequestHandler):
    server: StubGateway

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.headers["Idempotency-Key"], body))
        status, answer = self.server.answers[min(len(self.server.seen), len(self.server.answers)) - 1]
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def stub_gateway() -> Iterator[Any]:
    servers: list[StubGateway] = []

    def start(answers: list[tuple[int, dict[str, Any]]]) -> StubGateway:
        server = StubGateway(answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_client_retries_the_same_body_with_the_same_key(stub_gateway) -> None:
    unavailable = (503, {"code": "unavailable", "detail": "try later"})
    server = stub_gateway([unavailable, unavailable, (202, {"batch_id": 9, "records": 2, "replayed": False})])
    body = b'{"id":"a"}\n{"id":"b"}\n'

    answer = GatewayClient(server.url, "ggw_test", backoff=0.01).send(body)

    assert answer["batch_id"] == 9
    assert len(server.seen) == 3
    assert len({key for key, _ in server.seen}) == 1
    assert {gzip.decompress(sent) for _, sent in server.seen} == {body}


def test_client_gives_up_after_six_attempts(stub_gateway) -> None:
    server = stub_gateway([(502, {"code": "bad_gateway", "detail": "upstream"})])

    with pytest.raises(GatewayUnavailableError, match="6 attempts"):
        GatewayClient(server.url, "ggw_test", backoff=0.001).send(b'{"id":"a"}\n')
    assert len(server.seen) == 6


def test_client_does_not_retry_a_refusal(stub_gateway) -> None:
    errors = [{"line": n, "reason": f"reason {n}"} for n in range(1, 6)]
    server = stub_gateway([(422, {"code": "invalid_records", "detail": "Some records are invalid", "errors": errors})])

    with pytest.raises(GatewayRefusedError) as refused:
        GatewayClient(server.url, "ggw_test", backoff=0.001).send(b'{"id":"a"}\n')

    assert len(server.seen) == 1
    message = str(refused.value)
    assert "422 invalid_records" in message
    assert "line 3: reason 3" in message
    assert "line 4" not in message


# --- the command against a live server ------------------------------------------------------------------


def run_simulator(**options: Any) -> tuple[int, int, str]:
    out = StringIO()
    call_command("simulate_relays", stdout=out, stderr=StringIO(), **options)
    text = out.getvalue()
    match = re.search(r"^sent (\d+) records in (\d+) batches", text, re.MULTILINE)
    assert match, text
    return int(match[1]), int(match[2]), text


@pytest.fixture
def simulated_key(team_a, owner_a):
    from endpoints.services import api_key_create, endpoint_create

    endpoint = endpoint_create(
        team=team_a, name="Simulated", services=["eth-mainnet", "llama-3.1-8b-instruct"], actor=owner_a
    )
    key, _secret = api_key_create(endpoint=endpoint, name="sim", actor=owner_a)
    return key


@pytest.mark.django_db(transaction=True)
def test_simulator_feeds_the_usage_api_and_the_rollups(live_server, team_a, simulated_key, tmp_path) -> None:
    from django.db.models import Sum

    from analytics.aggregation import aggregate_pending, compact_rollups
    from analytics.models import IngestBatch
    from analytics.selectors import usage_totals
    from endpoints.models import GatewayCredential

    marker = tmp_path / "backfilled"
    options = {"url": live_server.url, "backfill_days": 1, "backfill_rate": 5, "live_rate": 0, "batch_size": 1000}

    sent, batches, _output = run_simulator(**options, seed=1, once_marker=str(marker))

    assert 1440 * 5 * 0.5 < sent < 1440 * 5 * 1.5
    stored = IngestBatch.objects.aggregate(records=Sum("record_count"))["records"]
    assert stored == sent
    assert IngestBatch.objects.count() == batches >= sent // 1000
    assert marker.exists()
    assert aggregate_pending().records == sent
    compact_rollups()
    now = datetime.now(UTC)
    totals = usage_totals(team=team_a, start=now - timedelta(days=2), end=now + timedelta(hours=1), grain="hour")
    assert totals.requests == sent
    assert totals.units > 0
    assert totals.input_tokens > 0

    # A restart with the marker in place skips the backfill and leaves no live simulator credential behind.
    sent_again, batches_again, output = run_simulator(**options, seed=2, once_marker=str(marker))

    assert (sent_again, batches_again) == (0, 0)
    assert "skipping the backfill" in output
    assert IngestBatch.objects.count() == batches
    assert GatewayCredential.objects.filter(name__startswith="simulator-").count() == 2
    assert not GatewayCredential.objects.filter(name__startswith="simulator-", revoked_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_simulator_live_phase_sends_until_the_duration_ends(live_server, simulated_key) -> None:
    from django.db.models import Sum

    from analytics.models import IngestBatch

    sent, batches, _output = run_simulator(
        url=live_server.url, backfill_days=0, live_rate=20, duration=2.5, batch_size=1000, seed=5
    )

    assert sent > 0
    assert IngestBatch.objects.count() == batches
    assert IngestBatch.objects.aggregate(records=Sum("record_count"))["records"] == sent


@pytest.mark.django_db(transaction=True)
def test_simulator_without_keys_exits_with_a_message(live_server, simulated_key) -> None:
    with pytest.raises(CommandError, match="No active keys of team"):
        call_command("simulate_relays", url=live_server.url, team=["nobody"], stdout=StringIO(), stderr=StringIO())
