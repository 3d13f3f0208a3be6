from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse, QueryDict

from project import audit
from project.logging import request_id_var
from project.requests import HtmxRequest

logger = logging.getLogger("gatehouse.request")

# Accept a caller's id (a load balancer's, a gateway's) only if it is short and plain.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Gives every request an id, echoes it in X-Request-ID and logs one line per request; sets the audit context
    (the client's address and user agent) for whatever the request records in the audit log."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        cast(HtmxRequest, request).request_id = request_id  # this middleware is what makes it an HtmxRequest
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        origin = audit.of_request(request)
        try:
            with audit.audit_context(ip=origin.ip, user_agent=origin.user_agent):
                response = self.get_response(request)
            response["X-Request-ID"] = request_id
            logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            return response
        finally:
            request_id_var.reset(token)


class PermissionsPolicyMiddleware:
    """Adds the Permissions-Policy header (Django's SecurityMiddleware has none)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        return response


class DatabaseUnavailableMiddleware:
    """503 with Retry-After, not 500, while PostgreSQL cannot be reached (a restart, a failover).

    Nothing was done, and saying so lets a gateway retry its batch (it keeps its Idempotency-Key) and a load
    balancer tell an outage from a bug. Errors inside a working database (a constraint, a bad query) stay 500s.
    """

    RETRY_AFTER_SECONDS = 5

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not _database_unreachable(exception):
            return None
        logger.warning("database unavailable: %s %s answered 503", request.method, request.path, exc_info=exception)
        detail = "The database is unavailable for a moment; nothing was done. Try again shortly."
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse({"code": "unavailable", "detail": detail}, status=503)
        else:
            response = HttpResponse(detail, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
        return response


def _database_unreachable(exception: BaseException) -> bool:
    """A lost or refused connection (OperationalError / InterfaceError), not an error the database reported."""
    from django.db import InterfaceError, OperationalError
    from psycopg import errors as pg

    if isinstance(exception, InterfaceError):
        return True
    if not isinstance(exception, OperationalError):
        return False
    cause = exception.__cause__
    # Connection failures have no SQLSTATE, or the "connection exception" / "operator intervention" classes
    # (admin shutdown, cannot connect now); deadlocks and lock timeouts are OperationalErrors too, but not outages.
    sqlstate = getattr(cause, "sqlstate", None) or ""
    return not sqlstate or sqlstate.startswith(("08", "57")) or isinstance(cause, pg.AdminShutdown)


class RejectNulMiddleware:
    """400 for a NUL character anywhere in the path, the query string or a submitted form.

    PostgreSQL cannot store or compare text holding NUL: any such value reaching a query (a path id, a filter, a
    form field read directly) would be a 500. Nothing legitimate sends one, so it is refused before any view runs.
    Request bodies other than forms are left to their parsers (JSON and NDJSON refuse NUL in strings themselves).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or _has_nul(request.GET) or self._form_has_nul(request):
            message = "The request contains a NUL character, which no Gatehouse value can hold."
            if request.path.startswith("/api/"):
                return JsonResponse({"code": "invalid_characters", "detail": message}, status=400)
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)

    @staticmethod
    def _form_has_nul(request: HttpRequest) -> bool:
        content_type = request.META.get("CONTENT_TYPE", "")
        if (
            request.method != "POST"
            or request.path.startswith("/api/gateway/")  # the usage body is read raw, as a stream: never parse it here
            or not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))
        ):
            return False
        request.body  # noqa: B018 - read (and keep) the raw body first, so a view may still read it after POST
        return _has_nul(request.POST)


def _has_nul(data: QueryDict) -> bool:
    return any("\x00" in key or "\x00" in value for key, values in data.lists() for value in values)
