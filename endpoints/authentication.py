"""`Authorization: Bearer ggw_…` for the gateway API (config feed, usage ingestion). Nothing else accepts it."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions, permissions

from accounts.services import sha256_hex
from endpoints.models import GatewayCredential
from endpoints.services import GATEWAY_CREDENTIAL_PREFIX, gateway_credential_touch


class GatewayPrincipal:
    """request.user for a gateway: a machine, belonging to no team."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, credential: GatewayCredential):
        self.credential = credential

    def __str__(self) -> str:
        return f"gateway {self.credential.name}"


class GatewayCredentialAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Any) -> tuple[GatewayPrincipal, GatewayCredential] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Bearer <credential>'.")
        raw = header[1].decode("ascii", errors="replace")
        if not raw.startswith(GATEWAY_CREDENTIAL_PREFIX):
            raise exceptions.AuthenticationFailed("The gateway API takes gateway credentials (ggw_…).")
        credential = GatewayCredential.objects.filter(secret_hash=sha256_hex(raw), revoked_at__isnull=True).first()
        if credential is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked gateway credential.")
        gateway_credential_touch(credential=credential)
        return GatewayPrincipal(credential), credential

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="gatehouse-gateway"'


class IsGateway(permissions.BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        if not isinstance(request.user, GatewayPrincipal):
            raise exceptions.NotAuthenticated("Send a gateway credential: Authorization: Bearer ggw_…")
        return True
