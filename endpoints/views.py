"""HTML views for endpoints and API keys (team-scoped: /t/<team>/endpoints/…)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from accounts.permissions import can, team_view
from accounts.requests import TeamRequest
from accounts.selectors import user_email_verified
from endpoints import selectors, services
from endpoints.forms import (
    EndpointCreateForm,
    EndpointSecurityForm,
    EndpointSettingsForm,
    KeyCapForm,
    KeyCreateForm,
    KeyRotateForm,
)
from endpoints.models import ApiKey, Endpoint
from project.errors import ServiceError

T = TypeVar("T")


def _or_404(fetch: Callable[[], T], message: str) -> T:
    try:
        return fetch()
    except ObjectDoesNotExist:
        raise Http404(message) from None


def _endpoint_or_404(request: TeamRequest, endpoint_id: str) -> Endpoint:
    return _or_404(lambda: selectors.endpoint_get(team=request.team, public_id=endpoint_id), "No such endpoint")


def _key_or_404(request: TeamRequest, key_id: str) -> ApiKey:
    return _or_404(lambda: selectors.key_get(team=request.team, key_id=key_id), "No such key")


def _endpoint_url(endpoint: Endpoint, name: str = "endpoint_detail") -> str:
    return reverse(name, kwargs={"team_slug": endpoint.team.slug, "endpoint_id": endpoint.public_id})


def _render_tab(request: TeamRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    """A tab of the endpoint page: the whole page, or only the panel when htmx swaps tabs."""
    name = f"{template}#panel" if request.htmx and not request.htmx.boosted else template
    return render(request, name, context, status=status)


# --- list and create ------------------------------------------------------------------------


@team_view(GET="endpoints.manage", POST="endpoints.manage")
def endpoint_create(request: TeamRequest) -> HttpResponse:
    form = EndpointCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = services.endpoint_create(
                team=request.team,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                environment=form.cleaned_data["environment"],
                services=[s.id for s in form.cleaned_data["services"]],
                actor=request.user,
            )
        except ServiceError as error:
            form.add_service_error(error)
        else:
            messages.success(request, f"Created {endpoint.name}. Next: create an API key.")
            return redirect(_endpoint_url(endpoint, "endpoint_keys"))
    status = 400 if request.method == "POST" else 200
    return render(request, "endpoints/endpoint_create.html", {"form": form}, status=status)


# --- the endpoint page's tabs ---------------------------------------------------------------


def _base_context(request: TeamRequest, endpoint: Endpoint, tab: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "tab": tab, "team_suspension": selectors.team_suspension_reason(team=request.team),
            "stops": selectors.team_stops(team=request.team)}  # fmt: skip


@team_view(GET="endpoints.view")
def endpoint_detail(request: TeamRequest, endpoint_id: str) -> HttpResponse:
    """Overview: the URL of every enabled service, ready to copy, with a curl example."""
    endpoint = _endpoint_or_404(request, endpoint_id)
    example_key = selectors.key_list(team=request.team, endpoint=endpoint).usable().first()
    example_key_id = example_key.key_id if example_key else "<KEY_ID>"
    service_rows = [
        {
            "service": service,
            "url": service.url_for(example_key_id),
            "curl": selectors.curl_example(service, example_key_id, endpoint),
        }
        for service in endpoint.services.all()
    ]
    context = {
        **_base_context(request, endpoint, "overview"),
        "service_rows": service_rows,
        "has_key": example_key is not None,
    }
    return _render_tab(request, "endpoints/endpoint_overview.html", context)


def _keys_context(request: TeamRequest, endpoint: Endpoint, **extra: Any) -> dict[str, Any]:
    base = _base_context(request, endpoint, "keys")
    keys = selectors.key_list(team=request.team, endpoint=endpoint)
    rows = [
        {
            "key": k,
            "status": selectors.key_effective_status(k, team_suspension=base["team_suspension"], stops=base["stops"]),
        }
        for k in keys
    ]
    return {
        **base,
        "rows": rows,
        "form": extra.pop("form", None) or KeyCreateForm(),
        "rotate_form": KeyRotateForm(),
        "email_verified": user_email_verified(request.user),
        "can_manage_keys": can(request.membership.role, "keys.manage"),
        **extra,
    }


def _secret_response(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"  # the page shows a secret once: never from a cache
    return response


@team_view(GET="keys.view", POST="keys.manage")
def endpoint_keys(request: TeamRequest, endpoint_id: str) -> HttpResponse:
    """The endpoint's keys; POST creates one and shows its secret once."""
    endpoint = _endpoint_or_404(request, endpoint_id)
    if request.method == "POST":
        form = KeyCreateForm(request.POST)
        if form.is_valid():
            try:
                key, secret = services.api_key_create(
                    endpoint=endpoint,
                    name=form.cleaned_data["name"],
                    expires_at=form.expires_at(),
                    daily_unit_cap=form.cleaned_data["daily_unit_cap"],
                    actor=request.user,
                )
            except ServiceError as error:
                form.add_service_error(error)
            else:
                context = _keys_context(request, endpoint, created_key=key, created_secret=secret)
                return _secret_response(_render_tab(request, "endpoints/endpoint_keys.html", context, status=201))
        return _render_tab(
            request, "endpoints/endpoint_keys.html", _keys_context(request, endpoint, form=form), status=400
        )
    return _render_tab(request, "endpoints/endpoint_keys.html", _keys_context(request, endpoint))


@team_view(POST="keys.manage")
def key_rotate(request: TeamRequest, key_id: str) -> HttpResponse:
    key = _key_or_404(request, key_id)
    form = KeyRotateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose how long the old key keeps working.")
        return redirect(_endpoint_url(key.endpoint, "endpoint_keys"))
    try:
        new_key, secret = services.api_key_rotate(
            key=key,
            overlap=form.cleaned_data["overlap"],
            actor=request.user,
        )
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect(_endpoint_url(key.endpoint, "endpoint_keys"))
    key.refresh_from_db()  # now with the end of its overlap
    context = _keys_context(request, key.endpoint, created_key=new_key, created_secret=secret, rotated_from=key)
    return _secret_response(_render_tab(request, "endpoints/endpoint_keys.html", context, status=201))


@team_view(POST="keys.manage")
def key_cap(request: TeamRequest, key_id: str) -> HttpResponse:
    """Set, change or remove a key's daily unit cap (a budget that stops the key: see the Budgets page)."""
    key = _key_or_404(request, key_id)
    form = KeyCapForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{key.name}: " + " ".join(str(error) for error in form.errors["daily_unit_cap"]))
        return _render_tab(request, "endpoints/endpoint_keys.html", _keys_context(request, key.endpoint), status=400)
    cap = form.cleaned_data["daily_unit_cap"]
    try:
        services.api_key_update(key=key, actor=request.user, daily_unit_cap=cap)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{key.name}: " + (f"daily cap {cap:,} units." if cap else "no daily cap."))
    return redirect(_endpoint_url(key.endpoint, "endpoint_keys"))


@team_view(POST="keys.manage")
def key_revoke(request: TeamRequest, key_id: str) -> HttpResponse:
    key = _key_or_404(request, key_id)
    services.api_key_revoke(key=key, actor=request.user)
    messages.success(request, f"Revoked {key.name} ({key.key_id}). The gateway refuses it from its next config poll.")
    return redirect(_endpoint_url(key.endpoint, "endpoint_keys"))


def _security_context(
    request: TeamRequest, endpoint: Endpoint, form: EndpointSecurityForm | None = None
) -> dict[str, Any]:
    return {
        **_base_context(request, endpoint, "security"),
        "form": form or EndpointSecurityForm(endpoint=endpoint),
        "can_manage": can(request.membership.role, "endpoints.manage"),
    }


@team_view(GET="endpoints.view", POST="endpoints.manage")
def endpoint_security(request: TeamRequest, endpoint_id: str) -> HttpResponse:
    """Secret-key requirement, rate limit, cap and allowlists; all-or-nothing on save."""
    endpoint = _endpoint_or_404(request, endpoint_id)
    if request.method == "POST":
        form = EndpointSecurityForm(request.POST, endpoint=endpoint)
        if form.is_valid():
            try:
                services.endpoint_update(endpoint=endpoint, actor=request.user, **form.changes())
            except ServiceError as error:
                form.add_service_error(error)
            else:
                messages.success(
                    request, "Security settings saved. The gateway applies them from its next config poll."
                )
                return redirect(_endpoint_url(endpoint, "endpoint_security"))
        return _render_tab(
            request, "endpoints/endpoint_security.html", _security_context(request, endpoint, form), status=400
        )
    return _render_tab(request, "endpoints/endpoint_security.html", _security_context(request, endpoint))


@team_view(GET="endpoints.manage", POST="endpoints.manage")
def endpoint_settings(request: TeamRequest, endpoint_id: str) -> HttpResponse:
    endpoint = _endpoint_or_404(request, endpoint_id)
    initial = {"name": endpoint.name, "description": endpoint.description, "services": list(endpoint.services.all())}
    form = EndpointSettingsForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.endpoint_update(
                endpoint=endpoint,
                actor=request.user,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                services=[s.id for s in form.cleaned_data["services"]],
            )
        except ServiceError as error:
            form.add_service_error(error)
        else:
            messages.success(request, "Settings saved.")
            return redirect(_endpoint_url(endpoint, "endpoint_settings"))
    context = {**_base_context(request, endpoint, "settings"), "form": form}
    return _render_tab(
        request, "endpoints/endpoint_settings.html", context, status=400 if request.method == "POST" else 200
    )


@team_view(GET="endpoints.view", POST="endpoints.manage")
def endpoint_name(request: TeamRequest, endpoint_id: str) -> HttpResponse:
    """htmx inline edit of the endpoint's name: GET the form, POST to save; both answer the fragment."""
    endpoint = _endpoint_or_404(request, endpoint_id)
    editing = (
        request.method == "GET" and request.GET.get("edit") == "1" and can(request.membership.role, "endpoints.manage")
    )
    error = ""
    if request.method == "POST":
        try:
            endpoint = services.endpoint_update(
                endpoint=endpoint,
                actor=request.user,
                name=request.POST.get("name", ""),
            )
        except ServiceError as service_error:
            error, editing = service_error.message, True
        if not request.htmx and not error:
            return redirect(_endpoint_url(endpoint))
    context = {
        "endpoint": endpoint,
        "editing": editing,
        "name_error": error,
        "can_edit": can(request.membership.role, "endpoints.manage"),
    }
    return render(request, "endpoints/_endpoint_name.html", context, status=400 if error else 200)


@team_view(POST="endpoints.manage")
def endpoint_pause(request: TeamRequest, endpoint_id: str) -> HttpResponse:
    endpoint = _endpoint_or_404(request, endpoint_id)
    pause = request.POST.get("paused", "1") == "1"
    try:
        services.endpoint_set_paused(endpoint=endpoint, paused=pause, actor=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{endpoint.name} is {'paused: every key is refused' if pause else 'active again'}.")
    return redirect(_endpoint_url(endpoint, "endpoint_settings"))


@team_view(POST="endpoints.manage")
def endpoint_delete(request: TeamRequest, endpoint_id: str) -> HttpResponse:
    endpoint = _endpoint_or_404(request, endpoint_id)
    if request.POST.get("confirmation", "").strip() != endpoint.name:
        messages.error(request, f"Type the endpoint's name, {endpoint.name}, to delete it.")
        return redirect(_endpoint_url(endpoint, "endpoint_settings"))
    services.endpoint_delete(endpoint=endpoint, actor=request.user)
    messages.success(request, f"Deleted {endpoint.name}; its keys no longer work.")
    return redirect("endpoint_list", team_slug=endpoint.team.slug)
