"""`Authorization: Bearer gmt_…` for the team REST API."""

from __future__ import annotations

from accounts.models import MANAGEMENT_TOKEN_PREFIX, ManagementToken, Team
from project.authentication import BearerSecretAuthentication, MachinePrincipal
from project.secrets import touch


class TokenPrincipal(MachinePrincipal):
    """request.user for a management token: a team, not a person."""

    def __init__(self, token: ManagementToken):
        self.token = token
        self.team: Team = token.team

    def __str__(self) -> str:
        return f"token {self.token.prefix}"


class ManagementTokenAuthentication(BearerSecretAuthentication):
    prefix = MANAGEMENT_TOKEN_PREFIX
    noun = "management tokens (gmt_…)"
    refused = "Invalid, expired or revoked token."
    realm = "gatehouse"

    def credential(self, secret_hash: str) -> ManagementToken | None:
        token = (
            ManagementToken.objects.select_related("team", "membership__user", "membership__team")
            .filter(token_hash=secret_hash)
            .first()
        )
        return token if token is not None and token.is_active else None

    def principal(self, credential: ManagementToken) -> TokenPrincipal:
        return TokenPrincipal(credential)

    def used(self, credential: ManagementToken) -> None:
        touch(credential, "last_used_at")
