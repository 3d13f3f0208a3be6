"""The latency histogram: fixed log-scale buckets, mergeable by adding counts.

Bucket `le` holds latencies in (0.1 ms·2^((le-1)/8), 0.1 ms·2^(le/8)]; bucket 0 holds ≤ 0.1 ms.
Eight buckets per doubling bound the relative error of a percentile read from the bucket's
geometric midpoint by 2^(1/16) - 1 ≈ 4.4 %; 155 buckets reach 65 s. The same formula runs in
SQL (aggregation) and here (tests, reading).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

FLOOR_MS = 0.1
PER_DOUBLING = 8
SQL_FACTOR = PER_DOUBLING / math.log(2)  # ceil(SQL_FACTOR * ln(ms / FLOOR_MS)) == ceil(8 * log2(ms / FLOOR_MS))
SQL_BUCKET = (
    f"CASE WHEN latency_ms <= {FLOOR_MS} THEN 0 ELSE ceil({SQL_FACTOR!r} * ln(latency_ms / {FLOOR_MS}))::smallint END"
)


def bucket_of(latency_ms: float) -> int:
    if latency_ms <= FLOOR_MS:
        return 0
    return math.ceil(SQL_FACTOR * math.log(latency_ms / FLOOR_MS))


def bucket_value(le: int) -> float:
    """The value that stands for bucket `le`: its geometric midpoint (the floor itself for bucket 0)."""
    if le <= 0:
        return FLOOR_MS
    return FLOOR_MS * 2 ** ((le - 0.5) / PER_DOUBLING)


def percentiles(
    counts: Mapping[int, int] | Iterable[tuple[int, int]], quantiles: Iterable[float]
) -> dict[float, float | None]:
    """Percentiles (quantile → ms) from bucket counts; None when there is no data."""
    items = sorted(counts.items() if isinstance(counts, Mapping) else counts)
    total = sum(count for _le, count in items)
    result: dict[float, float | None] = {}
    for q in quantiles:
        if total == 0:
            result[q] = None
            continue
        rank = max(1, math.ceil(q * total))  # the rank-th smallest latency, nearest-rank definition
        running = 0
        for le, count in items:
            running += count
            if running >= rank:
                result[q] = bucket_value(le)
                break
    return result
