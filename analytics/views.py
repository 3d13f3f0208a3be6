"""The usage dashboard (team overview, endpoint and key usage, the operator's view) and the relay explorer.

Pages are shells; every panel loads itself with htmx (hx-trigger="load"), so one slow panel never
holds up the others, and every panel can be fetched alone, as HTML or as CSV (?format=csv).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from accounts.permissions import allows, can, team_view
from accounts.services import user_email_verified
from analytics import dashboard, explorer
from analytics.dashboard import BREAKDOWNS, COMMON_ZONES, RANGES
from endpoints import selectors as endpoint_selectors
from endpoints.models import ApiKey, Endpoint
from project.csv import csv_response
from project.http import staff_only
from project.params import is_time_zone

PANELS = ("cards", "requests", "latency", "errors", "table")


def _shows_key_ids(request: HttpRequest, team: Any) -> bool:
    """Key ids are credentials where the secret is not required: only roles with keys.view see them."""
    return team is None or allows(getattr(request, "membership", None), "keys.view")


def _query(request: HttpRequest, team: Any, fixed: dict[str, str] | None = None) -> dashboard.Query:
    user_tz = getattr(request.user, "time_zone", "UTC") or "UTC"
    return dashboard.parse(
        request.GET, team=team, user_tz=user_tz, fixed=fixed, show_key_ids=_shows_key_ids(request, team)
    )


def _shell_context(
    request: HttpRequest, team: Any, query: dashboard.Query, panel_url: str, **extra: Any
) -> dict[str, Any]:
    endpoints = (
        list(Endpoint.objects.filter(team=team).live().order_by("name").values_list("public_id", "name"))
        if team
        else []
    )
    keys = (
        list(
            ApiKey.objects.filter(team=team, endpoint__deleted_at__isnull=True)
            .order_by("name")
            .values_list("key_id", "name")
        )
        if team and _shows_key_ids(request, team)
        else []
    )
    return {
        "query": query,
        "panel_url": panel_url,
        "ranges": [(key, label) for key, (_span, _step, label) in RANGES.items()],
        "zones": COMMON_ZONES if query.tz in COMMON_ZONES else [query.tz, *COMMON_ZONES],
        "filter_endpoints": endpoints,
        "filter_keys": keys,
        "breakdowns": [(by, label) for by, label in BREAKDOWNS.items() if extra.get("fixed_by") != by],
        "stack_qs": {"service": query.querystring(stack=None), "endpoint": query.querystring(stack="endpoint")},
        **extra,
    }


@team_view(GET="usage.view")
def overview(request: HttpRequest) -> HttpResponse:
    """The team overview: cards, charts and top tables for the chosen range and filters."""
    team = request.team  # type: ignore[attr-defined]
    query = _query(request, team)
    context = _shell_context(request, team, query, reverse("usage_panel_base", kwargs={"team_slug": team.slug}))
    context["email_verified"] = user_email_verified(request.user)  # type: ignore[arg-type]
    context["has_endpoint"] = Endpoint.objects.filter(team=team).live().exists()
    if request.htmx and not request.htmx.boosted:  # type: ignore[attr-defined]
        return render(request, "analytics/overview.html#dashboard", context)
    return render(request, "analytics/overview.html", context)


@team_view(GET="endpoints.view")
def endpoint_list(request: HttpRequest) -> HttpResponse:
    """The team's endpoints, each with its requests over the last 24 hours (endpoints' page, with traffic)."""
    from analytics.selectors import requests_per_endpoint

    endpoints = list(endpoint_selectors.endpoint_list(team=request.team))  # type: ignore[attr-defined]
    usage = requests_per_endpoint(team=request.team)  # type: ignore[attr-defined]
    for endpoint in endpoints:
        endpoint.spark = usage.get(endpoint.pk, [])  # type: ignore[attr-defined]
        endpoint.requests_24h = sum(endpoint.spark)  # type: ignore[attr-defined]
    return render(request, "endpoints/endpoint_list.html", {"endpoints": endpoints})


@team_view(GET="endpoints.view")
def endpoint_usage(request: HttpRequest, endpoint_id: str) -> HttpResponse:
    """The endpoint page's Usage tab: the same panels, scoped to it."""
    team = request.team  # type: ignore[attr-defined]
    try:
        endpoint = endpoint_selectors.endpoint_get(team=team, public_id=endpoint_id)
    except Endpoint.DoesNotExist:
        raise Http404("No such endpoint") from None
    query = _query(request, team, fixed={"endpoint": endpoint.public_id})
    context = _shell_context(
        request, team, query, reverse("usage_panel_base", kwargs={"team_slug": team.slug}),
        endpoint=endpoint, tab="usage", fixed_by="endpoint",
        team_suspension=endpoint_selectors.team_suspension_reason(team=team),
    )  # fmt: skip
    template = "analytics/endpoint_usage.html"
    if request.htmx and not request.htmx.boosted:  # type: ignore[attr-defined]
        return render(request, f"{template}#panel", context)
    return render(request, template, context)


@team_view(GET="keys.view")
def key_usage(request: HttpRequest, key_id: str) -> HttpResponse:
    team = request.team  # type: ignore[attr-defined]
    try:
        key = endpoint_selectors.key_get(team=team, key_id=key_id)
    except ApiKey.DoesNotExist:
        raise Http404("No such key") from None
    query = _query(request, team, fixed={"key": key.key_id})
    context = _shell_context(
        request, team, query, reverse("usage_panel_base", kwargs={"team_slug": team.slug}), key=key, fixed_by="key"
    )
    if request.htmx and not request.htmx.boosted:  # type: ignore[attr-defined]
        return render(request, "analytics/key_usage.html#dashboard", context)
    return render(request, "analytics/key_usage.html", context)


@team_view(GET="usage.view")
def panel(request: HttpRequest, name: str) -> HttpResponse:
    return _panel(request, request.team, name)  # type: ignore[attr-defined]


def _panel(request: HttpRequest, team: Any, name: str) -> HttpResponse:
    if name not in PANELS:
        raise Http404("No such panel")
    query = _query(request, team)
    by = request.GET.get("by", "method")
    if name == "table" and by not in BREAKDOWNS:
        raise Http404("No such breakdown")
    wants_csv = request.GET.get("format") == "csv"
    if name == "cards":
        data: Any = dashboard.cards(team=team, query=query)
        if wants_csv:
            return _csv_cards(query, data)
        membership = getattr(request, "membership", None)
        # The cost card is billing's own fragment (the billing page's figure), loaded beside the cards.
        shows_cost = team is not None and membership is not None and can(membership.role, "billing.view")
        context = {"query": query, "cards": data, "shows_cost": shows_cost}
        if not data["has_data"] and team is not None:
            context["example"] = endpoint_selectors.first_request_example(team=team)
        return render(request, "analytics/_panels.html#cards", context)
    if name == "table":
        rows = dashboard.breakdown_table(team=team, query=query, by=by)
        if wants_csv:
            return _csv_table(query, by, rows)
        link = _row_link(team, by)
        return render(
            request, "analytics/_panels.html#table",
            {"query": query, "rows": rows, "by": by, "title": BREAKDOWNS[by], "row_link": link},
        )  # fmt: skip
    builders = {
        "requests": dashboard.requests_chart,
        "latency": dashboard.latency_chart,
        "errors": dashboard.errors_chart,
    }
    everything = {"top": None} if wants_csv and name == "requests" else {}  # the CSV has every group
    chart = builders[name](team=team, query=query, **everything)
    if wants_csv:
        return _csv_chart(query, name, chart)
    table = [
        (_local(ts, query.tz)[:16].replace("T", " "), [s["values"][i] for s in chart["series"]])
        for i, ts in enumerate(chart["x"])
    ]
    return render(
        request, "analytics/_panels.html#chart", {"query": query, "chart": chart, "name": name, "table": table}
    )


def _row_link(team: Any, by: str) -> str | None:
    """Rows of the endpoint and key tables link to their usage pages."""
    if team is None:
        return None
    if by == "endpoint":
        return "endpoint"
    if by == "key":
        return "key"
    return None


# --- CSV -----------------------------------------------------------------------------------------


def _local(ts: int | datetime, tz: str) -> str:
    from zoneinfo import ZoneInfo

    moment = datetime.fromtimestamp(ts, tz=ZoneInfo(tz)) if isinstance(ts, int) else ts.astimezone(ZoneInfo(tz))
    return moment.isoformat()


def _csv_chart(query: dashboard.Query, name: str, chart: dict[str, Any]) -> StreamingHttpResponse:
    def rows() -> Iterator[list[Any]]:
        yield [f"bucket_start ({query.tz})", *(s["label"] for s in chart["series"])]
        for i, ts in enumerate(chart["x"]):
            yield [_local(ts, query.tz), *("" if s["values"][i] is None else s["values"][i] for s in chart["series"])]

    return csv_response(f"{name}-{query.range_key}", rows())


def _csv_table(query: dashboard.Query, by: str, table: list[dict[str, Any]]) -> StreamingHttpResponse:
    def rows() -> Iterator[list[Any]]:
        yield [by, "requests", "share", "error_rate", "success_rate", "p95_ms", "units"]
        for row in table:
            yield [row["label"], row["requests"], round(row["share"], 6),
                   "" if row["error_rate"] is None else round(row["error_rate"], 6),
                   "" if row["success_rate"] is None else round(row["success_rate"], 6),
                   "" if row["p95"] is None else round(row["p95"], 2), row["units"]]  # fmt: skip

    return csv_response(f"top-{by}-{query.range_key}", rows())


def _csv_cards(query: dashboard.Query, cards: dict[str, Any]) -> StreamingHttpResponse:
    fields = ("requests", "success_rate", "errors", "errors_user", "errors_upstream", "errors_gateway", "latency_avg",
              "p50", "p90", "p99", "units", "input_tokens", "output_tokens")  # fmt: skip

    def rows() -> Iterator[list[Any]]:
        yield ["metric", "value", f"from ({query.tz})", f"to ({query.tz})"]
        for field in fields:
            yield [
                field,
                "" if cards[field] is None else cards[field],
                _local(query.start, query.tz),
                _local(query.end, query.tz),
            ]

    return csv_response(f"summary-{query.range_key}", rows())


# --- relay explorer ------------------------------------------------------------------------------


@team_view(GET="usage.view")
def explorer_page(request: HttpRequest) -> HttpResponse:
    team = request.team  # type: ignore[attr-defined]
    search = explorer.parse(
        request.GET,
        team=team,
        user_tz=getattr(request.user, "time_zone", "UTC"),
        show_key_ids=_shows_key_ids(request, team),
    )
    if request.GET.get("format") == "csv":
        return csv_response("relays", explorer.csv_rows(team=team, search=search))
    page = explorer.page(team=team, search=search)
    context = {
        "search": search,
        "page": page,
        "filter_endpoints": list(Endpoint.objects.filter(team=team).order_by("name").values_list("public_id", "name")),
        "zones": COMMON_ZONES if search.tz in COMMON_ZONES else [search.tz, *COMMON_ZONES],
        "windows": [
            ("15m", "Last 15 minutes"),
            ("1h", "Last hour"),
            ("6h", "Last 6 hours"),
            ("24h", "Last 24 hours"),
            ("custom", "Custom"),
        ],
        "status_classes": list(explorer.STATUS_RANGES),
        "retention_days": settings.RAW_RETENTION_DAYS,
    }
    if request.htmx and request.GET.get("fragment") == "rows":  # type: ignore[attr-defined]
        return render(request, "analytics/explorer.html#rows", context)
    return render(request, "analytics/explorer.html", context)


@team_view(GET="usage.view")
def relay_detail(request: HttpRequest, batch_id: int, relay_id: str) -> HttpResponse:
    team = request.team  # type: ignore[attr-defined]
    relay = explorer.relay(team=team, batch_id=batch_id, relay_id=relay_id, show_key_ids=_shows_key_ids(request, team))
    if relay is None:
        raise Http404("No such relay (it may be past the retention window)")
    tz = request.GET.get("tz") or getattr(request.user, "time_zone", "UTC") or "UTC"
    if not is_time_zone(tz):
        return HttpResponseBadRequest(f"Unknown time zone {tz[:64]!r}.", content_type="text/plain; charset=utf-8")
    return render(request, "analytics/_relay.html", {"relay": relay, "tz": tz})


# --- the operator's view -------------------------------------------------------------------------


@staff_only
@require_GET
def operator_overview(request: HttpRequest) -> HttpResponse:
    """The whole platform: the same charts across all teams, per-service health and the top teams."""
    query = _query(request, None)
    from analytics.selectors import quarantine_summary

    context = _shell_context(request, None, query, reverse("operator_panel_base"), operator=True)
    context["quarantined"] = quarantine_summary().total
    return render(request, "analytics/operator.html", context)


@staff_only
@require_GET
def operator_quarantine(request: HttpRequest) -> HttpResponse:
    """Usage records the gateways sent that no team could be billed for (unknown or deleted keys, …)."""
    from django.core.paginator import Paginator

    from analytics.models import QuarantinedRecord
    from analytics.selectors import quarantine_summary

    records = QuarantinedRecord.objects.select_related("gateway").order_by("-received_at", "-id")
    page = Paginator(records, 50).get_page(request.GET.get("page"))
    return render(request, "analytics/quarantine.html", {"summary": quarantine_summary(), "page": page})


@staff_only
@require_GET
def operator_panel(request: HttpRequest, name: str) -> HttpResponse:
    if name == "health":
        query = _query(request, None)
        return render(
            request, "analytics/_panels.html#health", {"query": query, "rows": dashboard.service_health(query=query)}
        )
    if name == "teams":
        query = _query(request, None)
        return render(
            request, "analytics/_panels.html#teams", {"query": query, "rows": dashboard.top_teams(query=query)}
        )
    return _panel(request, None, name)
