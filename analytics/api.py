"""Usage REST API for management tokens: the dashboard's numbers as JSON (like Alchemy's and QuickNode's usage APIs)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from accounts.api import TeamAPIView
from accounts.permissions import allows
from accounts.requests import TeamAPIRequest
from analytics import dashboard, selectors
from analytics.dashboard import BREAKDOWNS
from analytics.models import ROLLUP_COUNTERS
from project.params import parse_int

FILTERS = [
    OpenApiParameter("range", str, enum=[*dashboard.RANGES, "custom"], description="Default 24h."),
    OpenApiParameter("start", str, description="Custom range start, ISO 8601 (in `tz` when it has no offset)."),
    OpenApiParameter("end", str, description="Custom range end."),
    OpenApiParameter("tz", str, description="IANA time zone for day buckets and naive times (default UTC)."),
    OpenApiParameter("endpoint", str, description="Endpoint id (ep_…)."),
    OpenApiParameter("key", str, description="Key id (key_…)."),
    OpenApiParameter("service", str, description="Service id, e.g. eth-mainnet."),
    OpenApiParameter("method", str),
    OpenApiParameter("region", str),
    OpenApiParameter("status", str, enum=["2xx", "3xx", "4xx", "5xx"], description="Count only this status class."),
]
# The counters as whole numbers: latency_sum_ms is reported as latency_avg_ms instead.
COUNTERS = {name: serializers.IntegerField() for name in ROLLUP_COUNTERS if name != "latency_sum_ms"}


class InvalidQuery(Exception):  # noqa: N818 - turned into a 400 right below
    pass


class UsageAPIView(TeamAPIView):
    required_actions = {"GET": "usage.view"}

    def query(self, request: TeamAPIRequest) -> dashboard.Query:
        show_key_ids = allows(request.membership, "keys.view")
        query = dashboard.parse(request.query_params, team=request.team, user_tz="UTC", show_key_ids=show_key_ids)
        if query.errors:
            raise InvalidQuery(list(query.errors))
        return query

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, InvalidQuery):
            return Response(
                {"code": "invalid_query", "detail": "Check the query parameters.", "errors": {"query": exc.args[0]}},
                status=400,
            )
        return super().handle_exception(exc)


def _window(query: dashboard.Query) -> dict[str, Any]:
    return {"start": query.start, "end": query.end, "step": query.step, "tz": query.tz}


class UsageSummaryAPI(UsageAPIView):
    @extend_schema(
        parameters=FILTERS,
        summary="Usage totals for a range",
        responses=inline_serializer(
            "UsageSummary",
            {
                "start": serializers.DateTimeField(),
                "end": serializers.DateTimeField(),
                "tz": serializers.CharField(),
                **COUNTERS,
                "success_rate": serializers.FloatField(allow_null=True, help_text="User errors excluded (Grove)."),
                "latency_avg_ms": serializers.FloatField(allow_null=True),
                "latency_p50_ms": serializers.FloatField(allow_null=True),
                "latency_p90_ms": serializers.FloatField(allow_null=True),
                "latency_p95_ms": serializers.FloatField(
                    allow_null=True, help_text="The percentile the breakdown tables rank by."
                ),
                "latency_p99_ms": serializers.FloatField(allow_null=True),
                "latency_max_ms": serializers.FloatField(),
            },
        ),
        tags=["usage"],
    )
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        query = self.query(request)
        totals = selectors.usage_totals(
            team=request.team,
            start=query.start,
            end=query.end,
            grain=query.grain,
            filters=query.filters,
            quantiles=(0.5, 0.9, 0.95, 0.99),
        )
        body = {"start": query.start, "end": query.end, "tz": query.tz}
        body.update({name: getattr(totals, name) for name in COUNTERS})
        body.update(
            success_rate=totals.success_rate,
            latency_avg_ms=totals.latency_avg_ms,
            latency_p50_ms=totals.percentiles.get(0.5),
            latency_p90_ms=totals.percentiles.get(0.9),
            latency_p95_ms=totals.percentiles.get(0.95),
            latency_p99_ms=totals.percentiles.get(0.99),
            latency_max_ms=totals.latency_max_ms,
        )
        return Response(body)


class UsageSeriesAPI(UsageAPIView):
    @extend_schema(
        parameters=[
            *FILTERS,
            OpenApiParameter("group_by", str, enum=list(BREAKDOWNS), description="One series per value."),
        ],
        summary="Usage per time bucket (minute, hour or day, following the range)",
        responses=inline_serializer(
            "UsageSeries",
            {
                "start": serializers.DateTimeField(),
                "end": serializers.DateTimeField(),
                "step": serializers.CharField(),
                "tz": serializers.CharField(),
                "group_by": serializers.CharField(allow_null=True),
                "points": serializers.ListField(
                    child=serializers.DictField(), help_text="{t, [group], requests, successes, …}"
                ),
            },
        ),
        tags=["usage"],
    )
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        query = self.query(request)
        group_by = request.query_params.get("group_by") or None
        if group_by and group_by not in BREAKDOWNS:
            raise InvalidQuery([f"group_by must be one of {', '.join(BREAKDOWNS)}"])
        rows = selectors.usage_series(
            team=request.team,
            start=query.start,
            end=query.end,
            step=query.step,
            filters=query.filters,
            group_by=group_by,
            tz=query.tz,
        )
        column = selectors.DIMENSIONS[group_by] if group_by else None
        labels: dict[Any, str] = {}
        if column:
            ids = [r[column] for r in rows]
            if group_by == "endpoint" or (group_by == "key" and query.show_key_ids):
                labels = dashboard.public_ids_for(group_by, ids)
            elif group_by == "key":  # a role without keys.view: the key's name, never its id
                labels = dashboard.names_for("key", ids, key_ids=False)
        points = []
        for row in rows:
            point: dict[str, Any] = {"t": row["t"]}
            if group_by and column:
                point[group_by] = labels.get(row[column], row[column])
            point.update({name: row[name] or 0 for name in COUNTERS})
            points.append(point)
        return Response({**_window(query), "group_by": group_by, "points": points})


class UsageBreakdownAPI(UsageAPIView):
    @extend_schema(
        parameters=[
            *FILTERS,
            OpenApiParameter("by", str, enum=list(BREAKDOWNS), required=True),
            OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 100}, description="Default 10."),
        ],
        summary="Top values of a dimension with requests, error rate and p95",
        responses=inline_serializer(
            "UsageBreakdown",
            {
                "by": serializers.CharField(),
                "rows": serializers.ListField(
                    child=serializers.DictField(),
                    help_text="{value, label, requests, share, error_rate, success_rate, p95_ms, units}",
                ),
            },
        ),
        tags=["usage"],
    )
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        query = self.query(request)
        by = request.query_params.get("by", "")
        limit = request.query_params.get("limit", "10")
        rows_wanted = parse_int(limit, minimum=1, maximum=100)
        if by not in BREAKDOWNS or rows_wanted is None:
            raise InvalidQuery([f"by must be one of {', '.join(BREAKDOWNS)}; limit 1–100"])
        rows = dashboard.breakdown_table(team=request.team, query=query, by=by, limit=rows_wanted)
        return Response(
            {
                "by": by,
                **_window(query),
                "rows": [
                    {
                        # Keys a role cannot see are named, not identified: their value is null.
                        "value": row["public_id"] or (None if by == "key" else row["value"]),
                        "label": row["label"],
                        "requests": row["requests"],
                        "share": row["share"],
                        "error_rate": row["error_rate"],
                        "success_rate": row["success_rate"],
                        "p95_ms": row["p95"],
                        "units": row["units"],
                    }
                    for row in rows
                ],
            }
        )


class UsageLatencyAPI(UsageAPIView):
    @extend_schema(
        parameters=FILTERS,
        summary="Latency percentiles per time bucket",
        responses=inline_serializer(
            "UsageLatency",
            {
                "step": serializers.CharField(),
                "points": serializers.ListField(child=serializers.DictField(), help_text="{t, p50_ms, p90_ms, p99_ms}"),
            },
        ),
        tags=["usage"],
    )
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        query = self.query(request)
        rows = selectors.latency_series(
            team=request.team,
            start=query.start,
            end=query.end,
            step=query.step,
            filters=query.filters,
            tz=query.tz,
        )
        points = [{"t": r["t"], "p50_ms": r.get(0.5), "p90_ms": r.get(0.9), "p99_ms": r.get(0.99)} for r in rows]
        return Response({**_window(query), "points": points})
