"""Small template helpers shared by every app's pages."""

from __future__ import annotations

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
