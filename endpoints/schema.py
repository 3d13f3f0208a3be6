"""OpenAPI description of the gateway-credential authentication (drf-spectacular)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

if TYPE_CHECKING:
    from drf_spectacular.openapi import AutoSchema


class GatewayCredentialScheme(OpenApiAuthenticationExtension):
    target_class = "endpoints.authentication.GatewayCredentialAuthentication"
    name = "gatewayCredential"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "ggw_<id>_<secret>",
            "description": "A gateway instance's credential (manage.py create_gateway_credential NAME).",
        }
