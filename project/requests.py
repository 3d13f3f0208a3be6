"""Typed requests: what middleware attaches to every HttpRequest, declared so mypy checks its use (healthchecks'
`ApiRequest` idea). Views annotate `request: HtmxRequest` (or accounts' TeamRequest, for team views) instead of
`HttpRequest` plus a `# type: ignore` on each attribute."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxRequest(HttpRequest):
    """Any request, after the middleware stack: its id (RequestIdMiddleware) and htmx details (HtmxMiddleware)."""

    request_id: str
    htmx: HtmxDetails
