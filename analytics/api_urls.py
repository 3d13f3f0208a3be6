from django.urls import path

from analytics import api

usage = "teams/<slug:team_slug>/usage/"

urlpatterns = [
    path(usage + "summary", api.UsageSummaryAPI.as_view(), name="api_usage_summary"),
    path(usage + "series", api.UsageSeriesAPI.as_view(), name="api_usage_series"),
    path(usage + "breakdown", api.UsageBreakdownAPI.as_view(), name="api_usage_breakdown"),
    path(usage + "latency", api.UsageLatencyAPI.as_view(), name="api_usage_latency"),
]
