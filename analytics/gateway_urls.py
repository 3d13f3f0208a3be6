from django.urls import path

from analytics import formats_api, gateway_api

urlpatterns = [
    path("usage", gateway_api.UsageIngestAPI.as_view(), name="gateway_usage"),
    path("usage/litellm", formats_api.LiteLLMUsageAPI.as_view(), name="gateway_usage_litellm"),
    path("otlp/v1/traces", formats_api.OtlpTracesAPI.as_view(), name="gateway_otlp_traces"),
    path("otlp/v1/logs", formats_api.OtlpLogsAPI.as_view(), name="gateway_otlp_logs"),
]
