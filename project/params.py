"""Parsers for what arrives in URLs: strict, bounded, and never an exception the caller did not ask for.

`"²".isdigit()` is True while `int("²")` raises, years 1 and 9999 overflow once a time zone is applied, and an
unknown zone raises from ZoneInfo: each of these once turned a crafted parameter into a 500. Views and APIs parse
through here and turn None / ValueError into a 400 (or a message next to the filter).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

_ASCII_DIGITS = re.compile(r"[0-9]{1,18}")
# Dates Gatehouse can hold meaning for: usage, invoices and audit events all live well inside these years, and
# applying any time zone to them (or adding a day) stays inside datetime's range.
EARLIEST_YEAR = 1970
LATEST_YEAR = 2199


def parse_int(value: str | None, *, minimum: int, maximum: int) -> int | None:
    """A whole number written with ASCII digits within [minimum, maximum], or None."""
    if value is None or not _ASCII_DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if minimum <= number <= maximum else None


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def is_time_zone(name: str | None) -> bool:
    return bool(name) and name in _zones()


def in_range(moment: date | datetime) -> bool:
    return EARLIEST_YEAR <= moment.year <= LATEST_YEAR


def parse_local_datetime(value: str | None, tz: str) -> datetime | None:
    """An ISO 8601 date-time (naive ones are in `tz`) as UTC, or None if malformed or outside the years above."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if not in_range(parsed):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(tz if is_time_zone(tz) else "UTC"))
    return parsed.astimezone(UTC)
