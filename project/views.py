from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views import defaults as django_views
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from project import health


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches nothing else."""
    return JsonResponse({"status": "ok"})


def _operator(request: HttpRequest) -> bool:
    """A staff session, or `Authorization: Bearer $METRICS_TOKEN` (what a monitoring system sends)."""
    token = settings.METRICS_TOKEN
    presented = request.headers.get("Authorization", "")
    return bool(token and constant_time_compare(presented, f"Bearer {token}")) or (
        request.user.is_authenticated and request.user.is_staff
    )


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and the broker are reachable; 503 otherwise. The public answer is the status only;
    the checks' errors (host names, driver messages), worker and ingestion figures go to staff or the metrics token."""
    checks = {"database": health.check_database(), "broker": health.check_broker()}
    ready = all(check.ok for check in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "unavailable"}
    if _operator(request):
        body["checks"] = {name: check.as_dict() for name, check in checks.items()}
        if checks["database"].ok:
            body["workers"] = {"heartbeat_age_seconds": health.worker_heartbeat_age_seconds()}
            body["ingestion"] = health.ingestion_detail()
    return JsonResponse(body, status=200 if ready else 503)


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Operator metrics in Prometheus text format: `Authorization: Bearer $METRICS_TOKEN`, or a staff session."""
    if not _operator(request):
        return HttpResponse("metrics need a bearer token or a staff session\n", status=401, content_type="text/plain")
    return HttpResponse(health.prometheus_text(), content_type="text/plain; version=0.0.4; charset=utf-8")


def _api_error(request: HttpRequest, status: int, code: str, detail: str) -> HttpResponse | None:
    if request.path.startswith("/api/"):
        return JsonResponse({"code": code, "detail": detail}, status=status)
    return None


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _api_error(request, 400, "bad_request", "The request is not valid.") or django_views.bad_request(
        request, exception
    )


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _api_error(request, 403, "permission_denied", "You may not do this.") or django_views.permission_denied(
        request, exception
    )


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _api_error(request, 404, "not_found", "Not found.") or django_views.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    return _api_error(
        request, 500, "server_error", "Something went wrong on our side; it has been logged."
    ) or django_views.server_error(request)
