"""Small template helpers shared by every app's pages."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django import forms, template

register = template.Library()


@register.filter
def get_field(form: forms.Form, name: str) -> forms.BoundField:
    """{% with field=form|get_field:name %} for fields whose names are computed (per-service allowlists)."""
    return form[name]


@register.filter
def lookup(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def compact(value: Any) -> str:
    """1234 → 1.2k, 4_500_000 → 4.5M: numbers people read at a glance."""
    if value is None:
        return "—"
    number = float(value)
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= threshold:
            scaled = number / threshold
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 100 else f"{scaled:.0f}{suffix}"
    return f"{number:.0f}" if number == int(number) else f"{number:.1f}"


@register.filter
def ms(value: Any) -> str:
    """45.2 → "45 ms", 1234 → "1.23 s"."""
    if value is None:
        return "—"
    number = float(value)
    if number >= 1000:
        return f"{number / 1000:.2f} s"
    if number >= 10:
        return f"{number:.0f} ms"
    return f"{number:.1f} ms"


@register.filter
def percent(value: Any, digits: int = 1) -> str:
    """0.9923 → "99.2%"."""
    if value is None:
        return "—"
    return f"{float(value) * 100:.{int(digits)}f}%"


def _signed_hundredths(value: Any, *, digits: int, unit: str) -> str:
    """A fraction as a signed amount of hundredths (+12%, −0.50 pp, ±0%), or nothing for None."""
    if value is None:
        return ""
    number = float(value) * 100
    sign = "+" if number > 0 else "−" if number < 0 else "±"
    return f"{sign}{abs(number):.{digits}f}{unit}"


@register.filter
def change(value: Any) -> str:
    """Relative change against the previous period: +12%, −3%, or nothing."""
    return _signed_hundredths(value, digits=0, unit="%")


@register.simple_tag
def sparkline(values: list[Any], label: str = "") -> str:
    """A small inline SVG line (no script, no inline style: the CSP allows it). Gaps where values are None."""
    from django.utils.html import format_html
    from django.utils.safestring import mark_safe

    points = [(i, v) for i, v in enumerate(values or []) if v is not None]
    if len(points) < 2:
        return mark_safe('<svg class="sparkline" viewBox="0 0 100 24" aria-hidden="true"></svg>')
    low = min(v for _i, v in points)
    high = max(v for _i, v in points)
    spread = (high - low) or 1
    width = max(len(values) - 1, 1)
    segments: list[list[str]] = [[]]
    previous = None
    for i, v in points:
        if previous is not None and i != previous + 1:
            segments.append([])
        segments[-1].append(f"{100 * i / width:.2f},{22 - 20 * (v - low) / spread:.2f}")
        previous = i
    lines = "".join(f'<polyline points="{" ".join(seg)}"/>' for seg in segments if len(seg) > 1)
    return format_html(
        '<svg class="sparkline" viewBox="0 0 100 24" preserveAspectRatio="none" role="img" aria-label="{}">{}</svg>',
        label,
        mark_safe(lines),  # noqa: S308 - numbers formatted above
    )


@register.filter
def chart_json(value: Any) -> str:
    """A chart's data for static/js/charts.js, as JSON for a data-chart-json attribute (autoescaped there)."""
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))


@register.filter
def unit_value(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return ms(value)
    if unit == "percent":
        return f"{float(value):.2f}%"
    return f"{int(value):,}"


@register.filter
def points(value: Any) -> str:
    """A change of a rate, in percentage points: +0.12 pp."""
    return _signed_hundredths(value, digits=2, unit=" pp")


@register.filter
def local_time(value: Any, tz: str) -> str:
    """A UTC datetime shown in the user's zone: 2026-11-26 14:03:07.250."""
    from zoneinfo import ZoneInfo

    if value is None:
        return "—"
    return value.astimezone(ZoneInfo(tz or "UTC")).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@register.filter
def usd(value: Any, cents: bool = False) -> str:
    """$1,234.56 from a Decimal of dollars (or, with usd:True, from integer cents). Negative: −$1.00."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value) / 100 if cents else Decimal(value)
    amount = amount.quantize(Decimal("0.01"), ROUND_HALF_UP)
    sign = "−" if amount < 0 else ""
    return f"{sign}${abs(amount):,.2f}"
