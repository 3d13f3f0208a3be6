from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from endpoints import services
from endpoints.models import ApiKey, ConfigChange, Endpoint, GatewayCredential, Service, TeamSuspension


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "kind",
        "status",
        "chain_family",
        "compute_units",
        "input_price_per_million",
        "output_price_per_million",
        "sort_order",
    )
    list_filter = ("kind", "status", "chain_family")
    search_fields = ("id", "name")
    list_editable = ("status", "sort_order")


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    """Read-only here: changes the gateway enforces go through services (actions below) so the feed records them."""

    list_display = ("public_id", "name", "team", "environment", "status", "suspended_reason", "deleted_at")
    list_filter = ("status", "environment")
    search_fields = ("public_id", "name", "team__slug")
    actions = ["suspend", "unsuspend"]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Suspend (reason: 'abuse report; contact support')")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_suspend(endpoint=endpoint, reason="abuse report; contact support", actor=request.user)  # type: ignore[arg-type]
        messages.success(request, f"Suspended {queryset.count()} endpoint(s).")

    @admin.action(description="Lift the platform suspension")
    def unsuspend(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_unsuspend(endpoint=endpoint, actor=request.user)  # type: ignore[arg-type]
        messages.success(request, f"Lifted the suspension of {queryset.count()} endpoint(s).")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "key_id",
        "name",
        "team",
        "endpoint",
        "secret_hint",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    search_fields = ("key_id", "name", "team__slug")
    exclude = ("secret_hash",)
    actions = ["revoke"]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke now")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_revoke(key=key, actor=request.user)  # type: ignore[arg-type]
        messages.success(request, f"Revoked {queryset.count()} key(s).")


@admin.register(GatewayCredential)
class GatewayCredentialAdmin(admin.ModelAdmin):
    """Create credentials with `manage.py create_gateway_credential NAME` (prints the secret once)."""

    list_display = ("name", "prefix", "created_at", "last_seen_at", "revoked_at")
    exclude = ("secret_hash",)
    readonly_fields = ("name", "prefix", "created_by", "created_at", "last_seen_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke")
    def revoke(self, request: HttpRequest, queryset: QuerySet[GatewayCredential]) -> None:
        for credential in queryset:
            services.gateway_credential_revoke(credential=credential, actor=request.user)  # type: ignore[arg-type]
        messages.success(request, f"Revoked {queryset.count()} gateway credential(s).")


@admin.register(TeamSuspension)
class TeamSuspensionAdmin(admin.ModelAdmin):
    list_display = ("team", "reason", "created_at")

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(ConfigChange)
class ConfigChangeAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "object_id", "created_at")
    search_fields = ("object_id",)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
