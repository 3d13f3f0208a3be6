from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse, QueryDict

from project.logging import request_id_var

logger = logging.getLogger("gatehouse.request")

# Accept a caller's id (a load balancer's, a gateway's) only if it is short and plain.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Gives every request an id, echoes it in X-Request-ID and logs one line per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
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
        return _has_nul(request.POST)


def _has_nul(data: QueryDict) -> bool:
    return any("\x00" in key or "\x00" in value for key, values in data.lists() for value in values)
