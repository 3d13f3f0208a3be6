from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from project import health


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches nothing else."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and the broker are reachable; 503 with the reason otherwise."""
    checks = {"database": health.check_database(), "broker": health.check_broker()}
    ready = all(check.ok for check in checks.values())
    body: dict[str, object] = {
        "status": "ready" if ready else "unavailable",
        "checks": {name: check.as_dict() for name, check in checks.items()},
    }
    if checks["database"].ok:
        body["workers"] = {"heartbeat_age_seconds": health.worker_heartbeat_age_seconds()}
    return JsonResponse(body, status=200 if ready else 503)


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")
