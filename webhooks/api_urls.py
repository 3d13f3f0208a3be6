from django.urls import path

from webhooks import api

webhooks = "teams/<slug:team_slug>/webhooks/"

urlpatterns = [
    path(webhooks, api.WebhookListAPI.as_view(), name="api_webhook_list"),
    path(webhooks + "<int:webhook_id>/", api.WebhookDetailAPI.as_view(), name="api_webhook_detail"),
    path(
        webhooks + "<int:webhook_id>/rotate-secret/",
        api.WebhookRotateSecretAPI.as_view(),
        name="api_webhook_rotate_secret",
    ),
    path(webhooks + "<int:webhook_id>/test/", api.WebhookTestAPI.as_view(), name="api_webhook_test"),
    path(webhooks + "<int:webhook_id>/deliveries/", api.DeliveryListAPI.as_view(), name="api_webhook_deliveries"),
    path(webhooks + "deliveries/<int:delivery_id>/", api.DeliveryDetailAPI.as_view(), name="api_delivery_detail"),
    path(
        webhooks + "deliveries/<int:delivery_id>/resend/",
        api.DeliveryResendAPI.as_view(),
        name="api_delivery_resend",
    ),
]
