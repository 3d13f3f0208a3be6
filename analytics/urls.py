from django.urls import path

from analytics import views

team = "t/<slug:team_slug>/"

urlpatterns = [
    path(team, views.overview, name="team_home"),
    path(team + "endpoints/", views.endpoint_list, name="endpoint_list"),
    path(team + "usage/panels/", views.overview, name="usage_panel_base"),  # base for panel URLs (shows the overview)
    path(team + "usage/panels/<str:name>", views.panel, name="usage_panel"),
    path(team + "endpoints/<str:endpoint_id>/usage/", views.endpoint_usage, name="endpoint_usage"),
    path(team + "keys/<str:key_id>/usage/", views.key_usage, name="key_usage"),
    path(team + "explorer/", views.explorer_page, name="explorer"),
    path(team + "explorer/relays/<int:batch_id>/<path:relay_id>", views.relay_detail, name="relay_detail"),
    path("operator/", views.operator_overview, name="operator_overview"),
    path("operator/quarantine/", views.operator_quarantine, name="operator_quarantine"),
    path("operator/panels/", views.operator_overview, name="operator_panel_base"),
    path("operator/panels/<str:name>", views.operator_panel, name="operator_panel"),
]
