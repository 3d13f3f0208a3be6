from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.requests import UserRequest
from endpoints import services
from endpoints.models import ApiKey, ConfigChange, Endpoint, GatewayCredential, Service, TeamSuspension


class _NoAddAdmin(admin.ModelAdmin):
    """Rows are made by services (which record config changes and audit events), never in the admin."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class _ActionsOnlyAdmin(_NoAddAdmin):
    """Read-only but for its actions, which call the services."""

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class _RecordAdmin(_ActionsOnlyAdmin):
    """A record the services keep: look, never change or delete."""

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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
class EndpointAdmin(_ActionsOnlyAdmin):
    """Read-only here: changes the gateway enforces go through services (actions below) so the feed records them."""

    list_display = ("public_id", "name", "team", "environment", "status", "suspended_reason", "deleted_at")
    list_filter = ("status", "environment")
    search_fields = ("public_id", "name", "team__slug")
    actions = ["suspend", "unsuspend"]

    @admin.action(description="Suspend (reason: 'abuse report; contact support')")
    def suspend(self, request: UserRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_suspend(endpoint=endpoint, reason="abuse report; contact support", actor=request.user)
        messages.success(request, f"Suspended {queryset.count()} endpoint(s).")

    @admin.action(description="Lift the platform suspension")
    def unsuspend(self, request: UserRequest, queryset: QuerySet[Endpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_unsuspend(endpoint=endpoint, actor=request.user)
        messages.success(request, f"Lifted the suspension of {queryset.count()} endpoint(s).")


@admin.register(ApiKey)
class ApiKeyAdmin(_ActionsOnlyAdmin):
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

    @admin.action(description="Revoke now")
    def revoke(self, request: UserRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_revoke(key=key, actor=request.user)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


@admin.register(GatewayCredential)
class GatewayCredentialAdmin(_NoAddAdmin):
    """Create credentials with `manage.py create_gateway_credential NAME` (prints the secret once)."""

    list_display = ("name", "prefix", "created_at", "last_seen_at", "revoked_at")
    exclude = ("secret_hash",)
    readonly_fields = ("name", "prefix", "created_by", "created_at", "last_seen_at", "revoked_at")
    actions = ["revoke"]

    @admin.action(description="Revoke")
    def revoke(self, request: UserRequest, queryset: QuerySet[GatewayCredential]) -> None:
        for credential in queryset:
            services.gateway_credential_revoke(credential=credential, actor=request.user)
        messages.success(request, f"Revoked {queryset.count()} gateway credential(s).")


@admin.register(TeamSuspension)
class TeamSuspensionAdmin(_RecordAdmin):
    list_display = ("team", "reason", "created_at")


@admin.register(ConfigChange)
class ConfigChangeAdmin(_RecordAdmin):
    list_display = ("id", "kind", "object_id", "created_at")
    search_fields = ("object_id",)
