"""Where an audited action came from — the client's address and user agent — set once per request by
RequestIdMiddleware and read by the audit writer, so services never take an HttpRequest only to log it. Outside a
request (Celery tasks, management commands) both are empty."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.http import HttpRequest

from project.http import client_ip


@dataclass(frozen=True)
class AuditContext:
    ip: str | None = None
    user_agent: str = ""


NOWHERE = AuditContext()
_context: ContextVar[AuditContext | None] = ContextVar("audit_context", default=None)


def current() -> AuditContext:
    return _context.get() or NOWHERE


@contextmanager
def audit_context(*, ip: str | None, user_agent: str) -> Iterator[None]:
    token = _context.set(AuditContext(ip, user_agent[:254]))
    try:
        yield
    finally:
        _context.reset(token)


def of_request(request: HttpRequest) -> AuditContext:
    return AuditContext(client_ip(request), request.META.get("HTTP_USER_AGENT", "")[:254])
