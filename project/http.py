from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse


def client_ip(request: HttpRequest | None) -> str | None:
    """The caller's address: REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT proxies of ours the X-Forwarded-For entry
    that many from the end (what our nearest proxy saw; anything before it the client may have written). The sign-in
    lockout (allauth, through the account adapter), the audit log and the API's rate limits all use this one rule."""
    if request is None:
        return None
    trusted = settings.TRUSTED_PROXY_COUNT
    if trusted:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= trusted:
            forwarded = _clean(hops[-trusted])
            if forwarded:
                return forwarded
    return _clean(request.META.get("REMOTE_ADDR") or "")


def _clean(value: str) -> str | None:
    if value.startswith("[") and "]" in value:  # [2001:db8::1]:443
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # 203.0.113.7:51234
        value = value.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """An operator page: sign in first (login_required), then staff only (403 for anyone else)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not getattr(request.user, "is_staff", False):
            raise PermissionDenied("Operator staff only")
        return view(request, *args, **kwargs)

    return login_required(wrapper)
