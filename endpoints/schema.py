"""OpenAPI description of the gateway-credential authentication (drf-spectacular)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class GatewayCredentialScheme(OpenApiAuthenticationExtension):
    target_class = "endpoints.authentication.GatewayCredentialAuthentication"
    name = "gatewayCredential"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "ggw_<id>_<secret>",
            "description": "A gateway instance's credential (manage.py create_gateway_credential NAME).",
        }
