"""A traffic model of the gateway's relays: usage records that look like real RPC and LLM traffic.

Pure Python and plain data (the catalog module imports no Django), so the `simulate_relays` command,
benchmarks and tests share it. Every random draw comes from the `random.Random` passed in, so a seed
reproduces a run; what must agree between separate runs (incident windows, which keys dominate) is
derived from stable hashes instead, so a backfill and a later live run tell the same story.
"""

from __future__ import annotations

import math
import random
import zlib
from bisect import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

from endpoints.catalog import METHOD_WEIGHTS, SERVICES

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
REGION_CUM_WEIGHTS = (0.5, 0.85, 1.0)
# Distance from the region's gateway to the upstream nodes and model servers, which sit near us-east-1.
REGION_EXTRA_MS = (0.0, 10.0, 60.0)

USER_ERROR_RATE = 0.015
UPSTREAM_ERROR_RATE = 0.005
INCIDENT_UPSTREAM_ERROR_RATE = 0.25
GATEWAY_ERROR_RATE = 0.001
SLOW_TAIL_RATE = 0.03

USER_STATUSES = ((429, 0.5), (400, 0.8), (401, 1.0))  # cumulative shares
UPSTREAM_STATUSES = ((502, 0.6), (504, 1.0))
GATEWAY_STATUSES = ((500, 0.6), (503, 1.0))
# A 504 is the gateway giving up on the upstream: the relay took as long as the timeout.
RPC_TIMEOUT_MS = (5_000.0, 15_000.0)
LLM_TIMEOUT_MS = (30_000.0, 60_000.0)

RPC_MEDIAN_MS = {"evm": 35.0, "solana": 50.0}
RPC_SIGMA = 0.6
# Methods that scan logs, blocks or whole account indexes are slower and answer with far more bytes.
METHOD_LATENCY_FACTOR = {
    "eth_getLogs": 4.0,
    "eth_getBlockReceipts": 3.0,
    "eth_estimateGas": 1.5,
    "eth_sendRawTransaction": 2.0,
    "getProgramAccounts": 6.0,
    "getBlock": 2.5,
    "getTokenAccountsByOwner": 2.0,
    "getSignaturesForAddress": 1.5,
    "sendTransaction": 2.0,
    "simulateTransaction": 2.0,
}
METHOD_RESP_FACTOR = {
    "eth_getLogs": 12.0,
    "eth_getBlockReceipts": 40.0,
    "eth_getBlockByNumber": 6.0,
    "eth_getTransactionReceipt": 2.0,
    "getProgramAccounts": 60.0,
    "getBlock": 30.0,
    "getTokenAccountsByOwner": 4.0,
    "getMultipleAccounts": 3.0,
    "getSignaturesForAddress": 3.0,
}
TRACE_PREFIXES = ("debug_", "trace_")
TRACE_LATENCY_FACTOR = 8.0
TRACE_RESP_FACTOR = 25.0
SEND_METHODS = frozenset({"eth_sendRawTransaction", "sendTransaction", "simulateTransaction"})
RESP_MEDIAN_BYTES = 800.0
RESP_SIGMA = 0.9
MAX_RESP_BYTES = 50 * 1024 * 1024

# LLM: time to first token plus time per output token gives a ~900 ms median at 250 output tokens.
LLM_FIRST_TOKEN_MS = 300.0
LLM_MS_PER_OUTPUT_TOKEN = 2.4
LLM_EMBEDDING_BASE_MS = 50.0
LLM_EMBEDDING_MS_PER_INPUT_TOKEN = 0.15
LLM_SIGMA = 0.25
# Small models answer faster; a reasoning model thinks out loud (slower per answer).
LLM_SPEED_FACTOR = {
    "llama-3.1-8b-instruct": 0.5,
    "mistral-7b-instruct": 0.5,
    "mixtral-8x7b-instruct": 0.7,
    "deepseek-r1": 2.0,
}
CHAT_INPUT_MEDIAN, CHAT_INPUT_SIGMA, CHAT_INPUT_MAX = 600.0, 0.9, 32_000
CHAT_OUTPUT_MEDIAN, CHAT_OUTPUT_SIGMA, CHAT_OUTPUT_MAX = 250.0, 0.8, 8_192
EMBED_INPUT_MEDIAN, EMBED_INPUT_SIGMA, EMBED_INPUT_MAX = 300.0, 0.7, 8_192
EMBEDDING_RESP_BYTES = 16_000  # ~1,536 floats as JSON
BYTES_PER_TOKEN = 4

KEY_WEIGHT_SIGMA = 1.2
SERVICE_WEIGHT_SIGMA = 0.8
# CI and QA keys (test-environment endpoints) send a fraction of what production keys do.
TEST_ENVIRONMENT_SHARE = 0.2
MINUTE = timedelta(minutes=1)
_CATALOG = {spec["id"]: spec for spec in SERVICES}


# --- what the simulator knows about a key ------------------------------------------------------


@dataclass(frozen=True)
class MethodProfile:
    """One method of one service, with its costs precomputed (make_record runs millions of times)."""

    name: str
    units: int
    latency_median_ms: float
    resp_median_bytes: float


@dataclass(frozen=True)
class ServiceProfile:
    """A catalog service as the simulator uses it: its family, pricing and the methods it draws from."""

    service_id: str
    chain_family: str
    kind: str
    compute_units: int
    method_compute_units: Mapping[str, int]
    methods: tuple[MethodProfile, ...]
    method_cum_weights: tuple[float, ...]
    input_price: Decimal = Decimal(0)  # USD per million tokens (LLM)
    output_price: Decimal = Decimal(0)

    @classmethod
    def from_catalog(cls, service_id: str, allowed_methods: Sequence[str] = ()) -> ServiceProfile | None:
        """The profile of a catalog service (None if the catalog lacks it). A method allowlist restricts
        the mix: the gateway would refuse the rest, and a customer with an allowlist does not send them."""
        spec = _CATALOG.get(service_id)
        if spec is None:
            return None
        family = spec["chain_family"]
        weights = dict(METHOD_WEIGHTS.get(family, {}))
        if allowed_methods:
            # Allowlisted methods outside the usual mix still get a little traffic.
            weights = {name: weights.get(name, 0.001) for name in allowed_methods}
        if not weights:
            return None
        overrides = dict(spec["method_compute_units"])
        methods = tuple(
            _method_profile(name, family, spec["kind"], overrides.get(name, spec["compute_units"])) for name in weights
        )
        return cls(
            service_id=service_id,
            chain_family=family,
            kind=spec["kind"],
            compute_units=spec["compute_units"],
            method_compute_units=overrides,
            methods=methods,
            method_cum_weights=_cumulative(weights.values()),
            input_price=Decimal(spec["input_price_per_million"] or 0),
            output_price=Decimal(spec["output_price_per_million"] or 0),
        )

    def units_for(self, method: str) -> int:
        """Compute units of an RPC method: its override, else the service default."""
        return self.method_compute_units.get(method, self.compute_units)

    def token_units(self, input_tokens: int, output_tokens: int) -> int:
        """An LLM relay's units: its tokens at the model's list prices, 1,000,000 units = $1 (as billing rates them)."""
        value = input_tokens * self.input_price + output_tokens * self.output_price
        return int(value.to_integral_value(ROUND_HALF_UP))


def _method_profile(name: str, family: str, kind: str, units: int) -> MethodProfile:
    if kind == "llm":
        return MethodProfile(name, 0, 0.0, 0.0)
    latency = RPC_MEDIAN_MS.get(family, 40.0) * METHOD_LATENCY_FACTOR.get(name, 1.0)
    resp = RESP_MEDIAN_BYTES * METHOD_RESP_FACTOR.get(name, 1.0)
    if name.startswith(TRACE_PREFIXES):
        latency, resp = latency * TRACE_LATENCY_FACTOR, resp * TRACE_RESP_FACTOR
    return MethodProfile(name, units, latency, resp)


def _cumulative(weights: Iterable[float]) -> tuple[float, ...]:
    """Normalised cumulative weights for bisect; the last is exactly 1.0, so a draw in [0, 1) always lands."""
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return tuple(w / total for w in out)


def _stable_lognormal(label: str, sigma: float) -> float:
    return random.Random(zlib.crc32(label.encode())).lognormvariate(0.0, sigma)  # noqa: S311 - not security


@dataclass(frozen=True)
class SimKey:
    """An API key the simulator sends traffic for, with its endpoint's services.

    `weight` (how much of the traffic the key gets) and the per-service shares are drawn once from a
    lognormal seeded by the key id, so a few keys dominate, and the same ones in every run.
    """

    key_id: str
    endpoint_id: str
    team: str
    services: tuple[ServiceProfile, ...]
    environment: str = "production"
    weight: float = field(init=False)
    service_cum_weights: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.services:
            raise ValueError(f"key {self.key_id} has no service the simulator knows")
        scale = TEST_ENVIRONMENT_SHARE if self.environment == "test" else 1.0
        object.__setattr__(self, "weight", scale * _stable_lognormal(self.key_id, KEY_WEIGHT_SIGMA))
        shares = [_stable_lognormal(f"{self.key_id}:{s.service_id}", SERVICE_WEIGHT_SIGMA) for s in self.services]
        object.__setattr__(self, "service_cum_weights", _cumulative(shares))

    @property
    def service_ids(self) -> tuple[str, ...]:
        return tuple(s.service_id for s in self.services)

    @classmethod
    def from_catalog(
        cls,
        *,
        key_id: str,
        endpoint_id: str,
        team: str,
        service_ids: Sequence[str],
        allowed_methods: Mapping[str, Sequence[str]] | None = None,
        environment: str = "production",
    ) -> SimKey | None:
        """The key with its services' catalog data; services unknown to the catalog are left out (None if all)."""
        allowed_methods = allowed_methods or {}
        profiles = [ServiceProfile.from_catalog(sid, allowed_methods.get(sid, ())) for sid in sorted(set(service_ids))]
        known = tuple(p for p in profiles if p is not None)
        if not known:
            return None
        return cls(key_id=key_id, endpoint_id=endpoint_id, team=team, services=known, environment=environment)


# --- time: the day's rhythm and upstream incidents ----------------------------------------------


def _utc(ts: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts if ts.tzinfo is UTC else ts.astimezone(UTC)


def diurnal_factor(ts: datetime) -> float:
    """Traffic follows the (mostly European and American) working day: peak at 15:00 UTC, trough at 03:00,
    30 % less at weekends."""
    ts = _utc(ts)
    hour = ts.hour + ts.minute / 60 + ts.second / 3600
    factor = 1.0 + 0.5 * math.sin(2 * math.pi * (hour - 9) / 24)
    return factor * 0.7 if ts.weekday() >= 5 else factor


@lru_cache(maxsize=8192)
def incident_windows(service_id: str, day: date) -> tuple[tuple[int, int], ...]:
    """A service's incidents on a UTC day as (first minute, end minute) of the day; the end may pass
    midnight. From a stable hash, so every process (backfill, live, tests) agrees on them."""
    stem = f"{service_id}:{day.isoformat()}"
    count = 1 + zlib.crc32(stem.encode()) % 3
    windows = []
    for index in range(count):
        digest = zlib.crc32(f"{stem}:{index}".encode())
        start = digest % 1440
        windows.append((start, start + 5 + (digest >> 11) % 11))  # 5–15 minutes
    return tuple(sorted(windows))


def incident(service_id: str, ts: datetime) -> bool:
    """Whether the service's upstream has an incident during ts's minute (1–3 a day, 5–15 minutes each)."""
    ts = _utc(ts)
    minute = ts.hour * 60 + ts.minute
    day = ts.date()
    if any(start <= minute < end for start, end in incident_windows(service_id, day)):
        return True
    if minute < 15:  # an incident that began late yesterday may still be running
        minute += 1440
        return any(start <= minute < end for start, end in incident_windows(service_id, day - timedelta(days=1)))
    return False


# --- one record -----------------------------------------------------------------------------------


def rfc3339(ts: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and 'Z', as the contract's examples write it."""
    return _utc(ts).isoformat(timespec="milliseconds")[:-6] + "Z"


def _pick_status(rng: random.Random, table: tuple[tuple[int, float], ...]) -> int:
    r = rng.random()
    for status, cumulative in table:
        if r < cumulative:
            return status
    return table[-1][0]


def _lognormal_int(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return min(cap, max(1, int(rng.lognormvariate(math.log(median), sigma))))


def make_record(rng: random.Random, key: SimKey, ts: datetime) -> dict[str, Any]:
    """One usage record (contract v1) for a relay made with `key` at `ts`."""
    ts = _utc(ts)
    services = key.services
    service = services[bisect(key.service_cum_weights, rng.random())] if len(services) > 1 else services[0]
    method = service.methods[bisect(service.method_cum_weights, rng.random())]
    region_index = bisect(REGION_CUM_WEIGHTS, rng.random())

    upstream_rate = INCIDENT_UPSTREAM_ERROR_RATE if incident(service.service_id, ts) else UPSTREAM_ERROR_RATE
    r = rng.random()
    if r < USER_ERROR_RATE:
        error_class: str | None = "user"
        status = _pick_status(rng, USER_STATUSES)
    elif r < USER_ERROR_RATE + upstream_rate:
        error_class, status = "upstream", _pick_status(rng, UPSTREAM_STATUSES)
    elif r < USER_ERROR_RATE + upstream_rate + GATEWAY_ERROR_RATE:
        error_class, status = "gateway", _pick_status(rng, GATEWAY_STATUSES)
    else:
        error_class, status = None, 200

    is_llm = service.kind == "llm"
    input_tokens: int | None = None
    output_tokens: int | None = None
    if is_llm:
        latency, req_bytes, resp_bytes, input_tokens, output_tokens = _llm_relay(rng, service, method.name)
        units = service.token_units(input_tokens, output_tokens)
    else:
        latency = rng.lognormvariate(math.log(method.latency_median_ms), RPC_SIGMA)
        req_bytes = rng.randint(400, 1600) if method.name in SEND_METHODS else rng.randint(150, 600)  # signed txs
        resp_bytes = min(MAX_RESP_BYTES, int(rng.lognormvariate(math.log(method.resp_median_bytes), RESP_SIGMA)))
        units = method.units

    if error_class is None:
        if rng.random() < SLOW_TAIL_RATE:
            latency *= rng.uniform(5.0, 20.0)
        latency += REGION_EXTRA_MS[region_index]
    else:
        # Failed relays are not billed, and they answer with a short error body.
        units = 0
        if is_llm:
            input_tokens = output_tokens = 0
        resp_bytes = rng.randint(60, 240)
        if status == 504:
            latency = rng.uniform(*(LLM_TIMEOUT_MS if is_llm else RPC_TIMEOUT_MS))
        elif status == 502:
            latency = latency * 0.5 + REGION_EXTRA_MS[region_index]
        else:  # refused by the gateway itself (key, rate limit, malformed request, our own fault): no upstream hop
            latency = rng.lognormvariate(math.log(3.0), 0.5)

    return {
        "id": f"sim-{rng.getrandbits(80):020x}",
        "ts": rfc3339(ts),
        "key_id": key.key_id,
        "endpoint_id": key.endpoint_id,
        "service": service.service_id,
        "method": method.name,
        "status": status,
        "error_class": error_class,
        "latency_ms": round(latency, 1),
        "req_bytes": req_bytes,
        "resp_bytes": resp_bytes,
        "units": units,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "region": REGIONS[region_index],
    }


def _llm_relay(rng: random.Random, service: ServiceProfile, method: str) -> tuple[float, int, int, int, int]:
    """Latency, request and response bytes, input and output tokens of one LLM call."""
    speed = LLM_SPEED_FACTOR.get(service.service_id, 1.0)
    noise = rng.lognormvariate(0.0, LLM_SIGMA)
    if method == "embeddings":
        tokens_in = _lognormal_int(rng, EMBED_INPUT_MEDIAN, EMBED_INPUT_SIGMA, EMBED_INPUT_MAX)
        latency = (LLM_EMBEDDING_BASE_MS + LLM_EMBEDDING_MS_PER_INPUT_TOKEN * tokens_in) * speed * noise
        resp = EMBEDDING_RESP_BYTES + rng.randint(0, 2_000)
        return latency, tokens_in * BYTES_PER_TOKEN + 150, resp, tokens_in, 0
    tokens_in = _lognormal_int(rng, CHAT_INPUT_MEDIAN, CHAT_INPUT_SIGMA, CHAT_INPUT_MAX)
    tokens_out = _lognormal_int(rng, CHAT_OUTPUT_MEDIAN, CHAT_OUTPUT_SIGMA, CHAT_OUTPUT_MAX)
    latency = (LLM_FIRST_TOKEN_MS + LLM_MS_PER_OUTPUT_TOKEN * tokens_out) * speed * noise
    return latency, tokens_in * BYTES_PER_TOKEN + 200, tokens_out * BYTES_PER_TOKEN + 350, tokens_in, tokens_out


# --- streams of records ----------------------------------------------------------------------------


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: exact (Knuth) for small means, the normal approximation above 30."""
    if mean <= 0:
        return 0
    if mean < 30:
        limit, count, product = math.exp(-mean), 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return count
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


class _KeyPicker:
    def __init__(self, keys: Sequence[SimKey]):
        if not keys:
            raise ValueError("the simulator needs at least one key")
        self.keys = list(keys)
        self.cum_weights = _cumulative([k.weight for k in self.keys])

    def pick(self, rng: random.Random) -> SimKey:
        return self.keys[bisect(self.cum_weights, rng.random())]


def _window(
    rng: random.Random, picker: _KeyPicker, start: datetime, span: timedelta, count: int
) -> Iterator[dict[str, Any]]:
    """`count` records at uniform times in [start, start + span), oldest first."""
    span_us = span // timedelta(microseconds=1)
    if span_us <= 0:
        return
    offsets = sorted(min(int(rng.random() * span_us), span_us - 1) for _ in range(count))
    for offset in offsets:
        yield make_record(rng, picker.pick(rng), start + timedelta(microseconds=offset))


def backfill(
    rng: random.Random, keys: Sequence[SimKey], start: datetime, end: datetime, rate_per_minute: float
) -> Iterator[dict[str, Any]]:
    """Records for [start, end), in time order, minute by minute: about rate_per_minute × diurnal_factor each."""
    start, end = _utc(start), _utc(end)
    if not keys or rate_per_minute <= 0:
        return
    picker = _KeyPicker(keys)
    cursor = start
    while cursor < end:
        window_end = min(cursor.replace(second=0, microsecond=0) + MINUTE, end)
        span = window_end - cursor
        expected = rate_per_minute * diurnal_factor(cursor) * (span / MINUTE)
        yield from _window(rng, picker, cursor, span, poisson(rng, expected))
        cursor = window_end


def live(
    rng: random.Random, keys: Sequence[SimKey], start: datetime, end: datetime, rate_per_second: float
) -> list[dict[str, Any]]:
    """The records of one short interval [start, end), in time order; rate_per_second is the daily average,
    shaped by diurnal_factor like the backfill, so live traffic continues the backfilled curve."""
    start, end = _utc(start), _utc(end)
    if not keys or rate_per_second <= 0 or end <= start:
        return []
    span = end - start
    expected = rate_per_second * diurnal_factor(start) * span.total_seconds()
    return list(_window(rng, _KeyPicker(keys), start, span, poisson(rng, expected)))
