from __future__ import annotations

from typing import Any

from django import template

from accounts.permissions import allows

register = template.Library()


@register.filter
def can(membership: Any, action: str) -> bool:
    """{% if request.membership|can:"members.manage" %} — hides what the view would refuse anyway."""
    return allows(membership, action)
