"""What the relay tells its operator: Prometheus text metrics (/metrics) and JSON log lines.

A few counters, gauges and one latency histogram, written by hand: the relay keeps its dependencies to aiohttp and
msgspec (prometheus_client would be one more package for sixty lines).
"""

from __future__ import annotations

import json
import logging
import sys
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

# Seconds; the upper bounds of the request latency histogram (a relay adds ~1 ms; upstreams take 1 ms to 15 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# name → help text of the plain counters; the code increments them by name.
COUNTERS = {
    "relay_feed_snapshots_total": "Config snapshots loaded from Gatehouse.",
    "relay_feed_changes_total": "Config change entries applied.",
    "relay_feed_errors_total": "Failed config feed requests (the relay keeps serving its last config).",
    "relay_usage_records_total": "Usage records produced (one per relayed call).",
    "relay_usage_batches_delivered_total": "Usage batches Gatehouse acknowledged (2xx).",
    "relay_usage_delivery_failures_total": "Usage batch deliveries that failed and will be retried.",
    "relay_usage_batches_rejected_total": "Usage batches Gatehouse refused for good (moved to spool/rejected).",
}


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{name}="{_escape(str(value))}"' for name, value in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters, gauges (read when scraped) and the request latency histogram per service."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self.calls: Counter[tuple[str, int, str]] = Counter()  # (service, status, error class or "none")
        self.requests: Counter[tuple[str, int]] = Counter()  # (service, HTTP status)
        self._latency: dict[str, list[int]] = {}
        self._latency_sum: dict[str, float] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def inc(self, name: str, by: int = 1) -> None:
        self.counters[name] += by

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._gauges[name] = (help_text, read)

    def request(self, service: str, status: int, seconds: float) -> None:
        self.requests[(service, status)] += 1
        buckets = self._latency.get(service)
        if buckets is None:
            buckets = self._latency[service] = [0] * (len(LATENCY_BUCKETS) + 1)
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum[service] = self._latency_sum.get(service, 0.0) + seconds

    def call(self, service: str, status: int, error_class: str | None) -> None:
        self.calls[(service, status, error_class or "none")] += 1

    def render(self) -> str:
        lines: list[str] = []
        for name, help_text in COUNTERS.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {self.counters[name]}"]
        lines += ["# HELP relay_requests_total HTTP requests answered.", "# TYPE relay_requests_total counter"]
        for (service, status), count in sorted(self.requests.items()):
            lines.append(f"relay_requests_total{_labels(service=service, code=status)} {count}")
        lines += [
            "# HELP relay_calls_total JSON-RPC calls relayed or refused (one usage record each).",
            "# TYPE relay_calls_total counter",
        ]
        for (service, status, error_class), count in sorted(self.calls.items()):
            labels = _labels(service=service, code=status, error_class=error_class)
            lines.append(f"relay_calls_total{labels} {count}")
        lines += [
            "# HELP relay_request_duration_seconds Time from request to response, upstream included.",
            "# TYPE relay_request_duration_seconds histogram",
        ]
        for service, buckets in sorted(self._latency.items()):
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), buckets, strict=True):
                cumulative += count
                lines.append(f"relay_request_duration_seconds_bucket{_labels(service=service, le=bound)} {cumulative}")
            lines.append(f"relay_request_duration_seconds_sum{_labels(service=service)} {self._latency_sum[service]}")
            lines.append(f"relay_request_duration_seconds_count{_labels(service=service)} {cumulative}")
        for name, (help_text, read) in sorted(self._gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"


_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra= fields become top-level keys (the shape Gatehouse's own logs have)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")})
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the relay's loggers and aiohttp's; nothing else configures logging in the process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
