"""Summaries: the hour and day rollups with some dimensions summed away, so that long ranges read few rows.

A team with 500 keys has up to keys × services × methods × regions rollup rows per hour (and each
latency histogram one row per bucket on top). Most questions need only one or two of those
dimensions: "requests per service over 90 days", "top 10 methods", "p95 of each endpoint". Each
*cube* below keeps the rollups summed over the dimensions it leaves out, at hour and day grain, in
`analytics_summary_{hour,day}` and `analytics_summary_latency_{hour,day}`; a query reads the
smallest cube that still has every dimension it filters or groups by (bench/dashboard.py shows why:
90-day charts over the full day table take 0.3–1 s on this machine, over a cube a few ms).

A cube's id is the GROUPING() bitmask of the dimensions it leaves out, so the SQL that fills the
cubes (one GROUPING SETS scan) labels its rows itself. Left-out dimensions hold a sentinel ('' or 0).

Cubes are a pure function of the full rollups: compaction recomputes a cube hour whenever it
recomputes the hour, cube days are recomputed from cube hours with the days, and late relays (older
than the minute tables) are added to cube hours in the same statement that adds them to the hours.
"""

from __future__ import annotations

from collections.abc import Iterable

# The dimensions in GROUPING() order, with their bit: GROUPING(endpoint_id, key_id, service, method, region).
BITS = {"endpoint": 16, "key": 8, "service": 4, "method": 2, "region": 1}
COLUMNS = {"endpoint": "endpoint_id", "key": "key_id", "service": "service", "method": "method", "region": "region"}
SENTINELS = {"endpoint": "0", "key": "0", "service": "''", "method": "''", "region": "''"}

# Smallest first (rows per team and hour, roughly): the first cube that covers a query is the one it reads.
CUBES: tuple[frozenset[str], ...] = tuple(
    frozenset(dims)
    for dims in (
        (),
        ("service",),
        ("service", "region"),
        ("service", "method"),
        ("endpoint", "service"),
        ("endpoint", "key", "service"),  # a key belongs to one endpoint: as many rows as (key, service)
    )
)


def cube_id(dims: Iterable[str]) -> int:
    """The GROUPING() bitmask of a cube: the bits of the dimensions it sums away."""
    kept = set(dims)
    return sum(bit for dim, bit in BITS.items() if dim not in kept)


def cube_for(dims: Iterable[str]) -> int | None:
    """The id of the smallest cube that has every dimension in `dims`; None when only the full rollups do."""
    needed = set(dims) - {"team"}  # every cube is per team
    unknown = needed - set(BITS)
    if unknown:
        raise ValueError(f"unknown dimensions: {sorted(unknown)}")
    for cube in CUBES:
        if needed <= cube:
            return cube_id(cube)
    return None


def grouping_sets() -> str:
    """The cubes as a GROUPING SETS clause over the rollup columns."""
    sets = ", ".join("(" + ", ".join(COLUMNS[d] for d in BITS if d in cube) + ")" for cube in CUBES)
    return f"GROUPING SETS ({sets})"


def grouped_columns() -> str:
    """cube, then every dimension column (its sentinel where the cube sums it away), for a GROUPING SETS select."""
    grouping = "GROUPING(" + ", ".join(COLUMNS.values()) + ")"
    dims = ", ".join(f"COALESCE({COLUMNS[d]}, {SENTINELS[d]})" for d in BITS)
    return f"{grouping}, {dims}"
