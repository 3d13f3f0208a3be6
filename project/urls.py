from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from project import api_docs, views

# Staff sign in like everyone else — through allauth, with its two-factor step, lockout and sign-in audit events —
# never with the admin's own password form.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]  # replacing a bound method is the point

# Outside a view (no route matched, an error before one ran), /api/ still answers in its own JSON error shape.
handler400 = "project.views.bad_request"
handler403 = "project.views.permission_denied"
handler404 = "project.views.page_not_found"
handler500 = "project.views.server_error"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("accounts/", include("allauth.urls")),
    path("", include("accounts.urls")),
    path("", include("webhooks.urls")),
    path("", include("endpoints.urls")),
    path("", include("analytics.urls")),
    path("", include("billing.urls")),
    path("", include("alerts.urls")),
    path("api/v1/", include("accounts.api_urls")),
    path("api/v1/", include("endpoints.api_urls")),
    path("api/v1/", include("webhooks.api_urls")),
    path("api/v1/", include("analytics.api_urls")),
    path("api/v1/", include("alerts.api_urls")),
    path("api/v1/", include("alerts.rules_api")),
    path("api/gateway/v1/", include("endpoints.gateway_urls")),
    path("api/gateway/v1/", include("analytics.gateway_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", api_docs.api_docs, name="api-docs"),
    path("admin/", admin.site.urls),
]
