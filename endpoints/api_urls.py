from django.urls import path

from endpoints import api

team = "teams/<slug:team_slug>/"

urlpatterns = [
    path("services/", api.ServiceListAPI.as_view(), name="api_service_list"),
    path(team + "endpoints/", api.EndpointListAPI.as_view(), name="api_endpoint_list"),
    path(team + "endpoints/<str:endpoint_id>/", api.EndpointDetailAPI.as_view(), name="api_endpoint_detail"),
    path(team + "endpoints/<str:endpoint_id>/keys/", api.KeyListAPI.as_view(), name="api_key_list"),
    path(team + "keys/identify/", api.KeyIdentifyAPI.as_view(), name="api_key_identify"),
    path(team + "keys/<str:key_id>/", api.KeyDetailAPI.as_view(), name="api_key_detail"),
    path(team + "keys/<str:key_id>/rotate/", api.KeyRotateAPI.as_view(), name="api_key_rotate"),
    path(team + "keys/<str:key_id>/revoke/", api.KeyRevokeAPI.as_view(), name="api_key_revoke"),
]
