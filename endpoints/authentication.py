"""`Authorization: Bearer ggw_…` for the gateway API (config feed, usage ingestion). Nothing else accepts it."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions

from endpoints.models import GATEWAY_CREDENTIAL_PREFIX, GatewayCredential
from project.authentication import BearerSecretAuthentication, MachinePrincipal
from project.secrets import touch


class GatewayPrincipal(MachinePrincipal):
    """request.user for a gateway: a machine, belonging to no team."""

    def __init__(self, credential: GatewayCredential):
        self.credential = credential

    def __str__(self) -> str:
        return f"gateway {self.credential.name}"


class GatewayCredentialAuthentication(BearerSecretAuthentication):
    prefix = GATEWAY_CREDENTIAL_PREFIX
    noun = "gateway credentials (ggw_…)"
    refused = "Invalid or revoked gateway credential."
    realm = "gatehouse-gateway"

    def credential(self, secret_hash: str) -> GatewayCredential | None:
        return GatewayCredential.objects.filter(secret_hash=secret_hash, revoked_at__isnull=True).first()

    def principal(self, credential: GatewayCredential) -> GatewayPrincipal:
        return GatewayPrincipal(credential)

    def used(self, credential: GatewayCredential) -> None:
        touch(credential, "last_seen_at")  # the gateway was seen


class IsGateway(permissions.BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        if not isinstance(request.user, GatewayPrincipal):
            raise exceptions.NotAuthenticated("Send a gateway credential: Authorization: Bearer ggw_…")
        return True
