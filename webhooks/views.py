"""HTML views for a team's outgoing webhooks: the endpoint list (and create), an endpoint's page with its delivery
log, and the buttons on it. A signing secret is rendered once, in the response to the POST that made it."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render

from accounts.permissions import team_view
from accounts.requests import TeamRequest
from project.errors import ServiceError
from project.http import get_or_404
from webhooks import selectors, services
from webhooks.forms import WebhookEndpointForm
from webhooks.models import WebhookEndpoint
from webhooks.signing import SIGNATURE_HEADER

DELIVERY_PAGE_SIZE = 25


def _endpoint(request: TeamRequest, webhook_id: int) -> WebhookEndpoint:
    return get_or_404(lambda: selectors.endpoint_get(team=request.team, endpoint_id=webhook_id), "No such webhook")


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"  # the page may hold a secret shown once
    return response


def _common() -> dict[str, Any]:
    return {"signature_header": SIGNATURE_HEADER}


@team_view(GET="webhooks.view", POST="webhooks.manage")
def webhook_list(request: TeamRequest) -> HttpResponse:
    form = WebhookEndpointForm(request.POST or None)
    created: tuple[WebhookEndpoint, str] | None = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                created = services.webhook_endpoint_create(
                    team=request.team,
                    url=form.cleaned_data["url"],
                    event_types=form.cleaned_data["event_types"],
                    format=form.cleaned_data["format"],
                    description=form.cleaned_data["description"],
                    actor=request.user,
                )
            except ServiceError as error:
                form.add_service_error(error)
                status = 400
            else:
                form = WebhookEndpointForm()
        else:
            status = 400
    context = {
        **_common(),
        "form": form,
        "endpoints": selectors.endpoint_list(team=request.team),
        "created_endpoint": created[0] if created else None,
        "created_secret": created[1] if created else None,
    }
    return _no_store(render(request, "webhooks/webhook_list.html", context, status=status))


def _detail(
    request: TeamRequest,
    endpoint: WebhookEndpoint,
    *,
    form: WebhookEndpointForm | None = None,
    created_secret: str | None = None,
    status: int = 200,
) -> HttpResponse:
    deliveries = selectors.delivery_list(team=request.team, endpoint=endpoint)
    page = Paginator(deliveries, DELIVERY_PAGE_SIZE).get_page(request.GET.get("page"))
    if form is None:
        form = WebhookEndpointForm(
            initial={
                "url": endpoint.url,
                "description": endpoint.description,
                "event_types": endpoint.event_types,
                "format": endpoint.format,
            }
        )
    context = {**_common(), "endpoint": endpoint, "page": page, "form": form, "created_secret": created_secret}
    return _no_store(render(request, "webhooks/webhook_detail.html", context, status=status))


@team_view(GET="webhooks.view", POST="webhooks.manage")
def webhook_detail(request: TeamRequest, webhook_id: int) -> HttpResponse:
    """GET: the endpoint and its delivery log. POST: its settings (URL, description, events, format)."""
    endpoint = _endpoint(request, webhook_id)
    if request.method != "POST":
        return _detail(request, endpoint)
    form = WebhookEndpointForm(request.POST)
    if form.is_valid():
        try:
            services.webhook_endpoint_update(
                endpoint=endpoint,
                actor=request.user,
                url=form.cleaned_data["url"],
                event_types=form.cleaned_data["event_types"],
                format=form.cleaned_data["format"],
                description=form.cleaned_data["description"],
            )
        except ServiceError as error:
            form.add_service_error(error)
        else:
            messages.success(request, "Saved the webhook's settings.")
            return redirect("webhook_detail", team_slug=request.team.slug, webhook_id=endpoint.pk)
    endpoint.refresh_from_db()  # the page shows what is stored, the form what was typed
    return _detail(request, endpoint, form=form, status=400)


@team_view(POST="webhooks.manage")
def webhook_enable(request: TeamRequest, webhook_id: int) -> HttpResponse:
    """Turn deliveries to the endpoint on (enabled=1) or off (anything else)."""
    endpoint = _endpoint(request, webhook_id)
    enabled = request.POST.get("enabled") == "1"
    services.webhook_endpoint_update(endpoint=endpoint, actor=request.user, enabled=enabled)
    messages.success(request, "Webhook enabled." if enabled else "Webhook disabled: nothing is sent to it.")
    return redirect("webhook_detail", team_slug=request.team.slug, webhook_id=endpoint.pk)


@team_view(POST="webhooks.manage")
def webhook_rotate_secret(request: TeamRequest, webhook_id: int) -> HttpResponse:
    endpoint, secret = services.webhook_endpoint_rotate_secret(
        endpoint=_endpoint(request, webhook_id), actor=request.user
    )
    return _detail(request, endpoint, created_secret=secret)


@team_view(POST="webhooks.manage")
def webhook_test(request: TeamRequest, webhook_id: int) -> HttpResponse:
    endpoint = _endpoint(request, webhook_id)
    try:
        delivery = services.webhook_test_send(endpoint=endpoint, actor=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Test event {delivery.event.event_id} queued: it appears below once sent.")
    return redirect("webhook_detail", team_slug=request.team.slug, webhook_id=endpoint.pk)


@team_view(POST="webhooks.manage")
def webhook_delete(request: TeamRequest, webhook_id: int) -> HttpResponse:
    endpoint = _endpoint(request, webhook_id)
    services.webhook_endpoint_delete(endpoint=endpoint, actor=request.user)
    messages.success(request, f"Deleted the webhook to {endpoint.url}.")
    return redirect("webhook_list", team_slug=request.team.slug)


@team_view(POST="webhooks.manage")
def delivery_resend(request: TeamRequest, delivery_id: int) -> HttpResponse:
    delivery = get_or_404(
        lambda: selectors.delivery_get(team=request.team, delivery_id=delivery_id), "No such delivery"
    )
    try:
        services.delivery_resend(delivery=delivery, actor=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Resending {delivery.event.event_id}.")
    return redirect("webhook_detail", team_slug=request.team.slug, webhook_id=delivery.endpoint_id)
