"""The usage dashboard (team overview, endpoint and key usage, the operator's view) and the relay explorer.

Pages are shells; every panel loads itself with htmx (hx-trigger="load"), so one slow panel never
holds up the others, and every panel can be fetched alone, as HTML or as CSV (?format=csv).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from accounts.models import Membership, Team
from accounts.permissions import allows, can, team_view
from accounts.requests import TeamRequest, UserRequest
from accounts.selectors import user_email_verified
from analytics import dashboard, explorer, selectors
from analytics.dashboard import BREAKDOWNS, COMMON_ZONES, RANGES
from endpoints import selectors as endpoint_selectors
from endpoints.models import ApiKey, Endpoint
from project.csv import csv_response
from project.http import staff_only
from project.params import is_time_zone

PANELS = ("cards", "requests", "latency", "errors", "table")


def _shows_key_ids(team: Team | None, membership: Membership | None) -> bool:
    """Key ids are credentials where the secret is not required: only roles with keys.view see them (the operator,
    team=None, sees every team's)."""
    return team is None or allows(membership, "keys.view")


def _query(
    request: UserRequest, team: Team | None, membership: Membership | None, fixed: dict[str, str] | None = None
) -> dashboard.Query:
    return dashboard.parse(
        request.GET,
        team=team,
        user_tz=request.user.time_zone,
        fixed=fixed,
        show_key_ids=_shows_key_ids(team, membership),
    )


def _shell_context(
    team: Team | None, membership: Membership | None, query: dashboard.Query, panel_url: str, **extra: Any
) -> dict[str, Any]:
    return {
        "query": query,
        "panel_url": panel_url,
        "ranges": [(key, label) for key, (_span, _step, label) in RANGES.items()],
        "zones": _zones(query.tz),
        "filter_endpoints": selectors.endpoint_choices(team=team) if team else [],
        "filter_keys": selectors.key_choices(team=team) if team and _shows_key_ids(team, membership) else [],
        "breakdowns": [(by, label) for by, label in BREAKDOWNS.items() if extra.get("fixed_by") != by],
        "stack_qs": {"service": query.querystring(stack=None), "endpoint": query.querystring(stack="endpoint")},
        **extra,
    }


def _zones(tz: str) -> list[str]:
    """The time zone picker's choices: the common ones, and the one shown if it is not among them."""
    return COMMON_ZONES if tz in COMMON_ZONES else [tz, *COMMON_ZONES]


def _team_dashboard(
    request: TeamRequest, template: str, fragment: str, fixed: dict[str, str] | None = None, **extra: Any
) -> HttpResponse:
    """A team dashboard page (its panels load themselves), or only its `fragment` for an htmx request."""
    team = request.team
    query = _query(request, team, request.membership, fixed)
    panel_url = reverse("usage_panel_base", kwargs={"team_slug": team.slug})
    context = _shell_context(team, request.membership, query, panel_url, **extra)
    if request.htmx and not request.htmx.boosted:
        return render(request, f"{template}#{fragment}", context)
    return render(request, template, context)


@team_view(GET="usage.view")
def overview(request: TeamRequest) -> HttpResponse:
    """The team overview: cards, charts and top tables for the chosen range and filters."""
    return _team_dashboard(
        request,
        "analytics/overview.html",
        "dashboard",
        email_verified=user_email_verified(request.user),
        has_endpoint=selectors.team_has_endpoint(team=request.team),
    )


@team_view(GET="endpoints.view")
def endpoint_list(request: TeamRequest) -> HttpResponse:
    """The team's endpoints, each with its requests over the last 24 hours (endpoints' page, with traffic)."""
    usage = selectors.requests_per_endpoint(team=request.team)
    rows = [
        (endpoint, usage.get(endpoint.pk, []), sum(usage.get(endpoint.pk, [])))
        for endpoint in endpoint_selectors.endpoint_list(team=request.team)
    ]
    return render(request, "endpoints/endpoint_list.html", {"endpoints": rows})


@team_view(GET="endpoints.view")
def endpoint_usage(request: TeamRequest, endpoint_id: str) -> HttpResponse:
    """The endpoint page's Usage tab: the same panels, scoped to it."""
    try:
        endpoint = endpoint_selectors.endpoint_get(team=request.team, public_id=endpoint_id)
    except Endpoint.DoesNotExist:
        raise Http404("No such endpoint") from None
    return _team_dashboard(
        request, "analytics/endpoint_usage.html", "panel", fixed={"endpoint": endpoint.public_id},
        endpoint=endpoint, tab="usage", fixed_by="endpoint",
        team_suspension=endpoint_selectors.team_suspension_reason(team=request.team),
    )  # fmt: skip


@team_view(GET="keys.view")
def key_usage(request: TeamRequest, key_id: str) -> HttpResponse:
    try:
        key = endpoint_selectors.key_get(team=request.team, key_id=key_id)
    except ApiKey.DoesNotExist:
        raise Http404("No such key") from None
    return _team_dashboard(
        request, "analytics/key_usage.html", "dashboard", fixed={"key": key.key_id}, key=key, fixed_by="key"
    )


@team_view(GET="usage.view")
def panel(request: TeamRequest, name: str) -> HttpResponseBase:
    return _panel(request, request.team, request.membership, name)


def _panel(request: UserRequest, team: Team | None, membership: Membership | None, name: str) -> HttpResponseBase:
    if name not in PANELS:
        raise Http404("No such panel")
    query = _query(request, team, membership)
    by = request.GET.get("by", "method")
    if name == "table" and by not in BREAKDOWNS:
        raise Http404("No such breakdown")
    wants_csv = request.GET.get("format") == "csv"
    if name == "cards":
        data: Any = dashboard.cards(team=team, query=query)
        if wants_csv:
            return _csv_cards(query, data)
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


def _row_link(team: Team | None, by: str) -> str | None:
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
def explorer_page(request: TeamRequest) -> HttpResponseBase:
    team = request.team
    search = explorer.parse(
        request.GET,
        team=team,
        user_tz=request.user.time_zone,
        show_key_ids=_shows_key_ids(team, request.membership),
    )
    if request.GET.get("format") == "csv":
        return csv_response("relays", explorer.csv_rows(team=team, search=search))
    page = explorer.page(team=team, search=search)
    context = {
        "search": search,
        "page": page,
        "filter_endpoints": selectors.endpoint_choices(team=team, include_deleted=True),
        "zones": _zones(search.tz),
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
    if request.htmx and request.GET.get("fragment") == "rows":
        return render(request, "analytics/explorer.html#rows", context)
    return render(request, "analytics/explorer.html", context)


@team_view(GET="usage.view")
def relay_detail(request: TeamRequest, batch_id: int, relay_id: str) -> HttpResponse:
    team = request.team
    show_key_ids = _shows_key_ids(team, request.membership)
    relay = explorer.relay(team=team, batch_id=batch_id, relay_id=relay_id, show_key_ids=show_key_ids)
    if relay is None:
        raise Http404("No such relay (it may be past the retention window)")
    tz = request.GET.get("tz") or request.user.time_zone or "UTC"
    if not is_time_zone(tz):
        return HttpResponseBadRequest(f"Unknown time zone {tz[:64]!r}.", content_type="text/plain; charset=utf-8")
    return render(request, "analytics/_relay.html", {"relay": relay, "tz": tz})


# --- the operator's view -------------------------------------------------------------------------


@staff_only
@require_GET
def operator_overview(request: UserRequest) -> HttpResponse:
    """The whole platform: the same charts across all teams, per-service health and the top teams."""
    query = _query(request, None, None)
    context = _shell_context(None, None, query, reverse("operator_panel_base"), operator=True)
    context["quarantined"] = selectors.quarantine_summary().total
    return render(request, "analytics/operator.html", context)


@staff_only
@require_GET
def operator_quarantine(request: UserRequest) -> HttpResponse:
    """Usage records the gateways sent that no team could be billed for (unknown or deleted keys, …)."""
    page = Paginator(selectors.quarantine_records(), 50).get_page(request.GET.get("page"))
    return render(request, "analytics/quarantine.html", {"summary": selectors.quarantine_summary(), "page": page})


@staff_only
@require_GET
def operator_panel(request: UserRequest, name: str) -> HttpResponseBase:
    if name == "health":
        query = _query(request, None, None)
        return render(
            request, "analytics/_panels.html#health", {"query": query, "rows": dashboard.service_health(query=query)}
        )
    if name == "teams":
        query = _query(request, None, None)
        return render(
            request, "analytics/_panels.html#teams", {"query": query, "rows": dashboard.top_teams(query=query)}
        )
    return _panel(request, None, None, name)
