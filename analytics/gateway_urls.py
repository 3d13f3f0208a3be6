from django.urls import path

from analytics import gateway_api

urlpatterns = [
    path("usage", gateway_api.UsageIngestAPI.as_view(), name="gateway_usage"),
]
