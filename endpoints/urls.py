from django.urls import path

from endpoints import views

team = "t/<slug:team_slug>/"
endpoint = team + "endpoints/<str:endpoint_id>/"

urlpatterns = [
    path(team + "endpoints/new/", views.endpoint_create, name="endpoint_create"),
    path(endpoint, views.endpoint_detail, name="endpoint_detail"),
    path(endpoint + "keys/", views.endpoint_keys, name="endpoint_keys"),
    path(endpoint + "security/", views.endpoint_security, name="endpoint_security"),
    path(endpoint + "settings/", views.endpoint_settings, name="endpoint_settings"),
    path(endpoint + "name", views.endpoint_name, name="endpoint_name"),
    path(endpoint + "pause", views.endpoint_pause, name="endpoint_pause"),
    path(endpoint + "delete", views.endpoint_delete, name="endpoint_delete"),
    path(team + "keys/<str:key_id>/rotate", views.key_rotate, name="key_rotate"),
    path(team + "keys/<str:key_id>/revoke", views.key_revoke, name="key_revoke"),
    path(team + "keys/<str:key_id>/cap", views.key_cap, name="key_cap"),
]
