from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase

T = TypeVar("T")


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


def staff_only(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """An operator page: sign in first (login_required), then staff only (403 for anyone else)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not getattr(request.user, "is_staff", False):
            raise PermissionDenied("Operator staff only")
        return view(request, *args, **kwargs)

    return login_required(wrapper)


def get_or_404(fetch: Callable[[], T], message: str = "Not found") -> T:
    """What a selector's get returns, or 404 for a row that does not exist (or is another team's): the HTML twin of
    project.api.get_object_or_404_api."""
    try:
        return fetch()
    except ObjectDoesNotExist:
        raise Http404(message) from None
