from django.urls import path

from endpoints import gateway_api

urlpatterns = [
    path("config", gateway_api.ConfigFeedAPI.as_view(), name="gateway_config"),
]
