from django.urls import path

from webhooks import views

team = "t/<slug:team_slug>/webhooks/"

urlpatterns = [
    path(team, views.webhook_list, name="webhook_list"),
    path(team + "<int:webhook_id>/", views.webhook_detail, name="webhook_detail"),
    path(team + "<int:webhook_id>/enable", views.webhook_enable, name="webhook_enable"),
    path(team + "<int:webhook_id>/rotate-secret", views.webhook_rotate_secret, name="webhook_rotate_secret"),
    path(team + "<int:webhook_id>/test", views.webhook_test, name="webhook_test"),
    path(team + "<int:webhook_id>/delete", views.webhook_delete, name="webhook_delete"),
    path(team + "deliveries/<int:delivery_id>/resend", views.delivery_resend, name="webhook_delivery_resend"),
]
