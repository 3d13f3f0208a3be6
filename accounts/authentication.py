"""`Authorization: Bearer gmt_…` for the team REST API."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions

from accounts.models import ManagementToken, Team
from accounts.services import MANAGEMENT_TOKEN_PREFIX, management_token_touch, sha256_hex


class TokenPrincipal:
    """request.user for a management token: a team, not a person."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, token: ManagementToken):
        self.token = token
        self.team: Team = token.team

    def __str__(self) -> str:
        return f"token {self.token.prefix}"


class ManagementTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Any) -> tuple[TokenPrincipal, ManagementToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Bearer <token>'.")
        raw = header[1].decode("ascii", errors="replace")
        if not raw.startswith(MANAGEMENT_TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed("This API takes management tokens (gmt_…).")
        token = (
            ManagementToken.objects.select_related("team", "membership__user", "membership__team")
            .filter(token_hash=sha256_hex(raw))
            .first()
        )
        if token is None or not token.is_active:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        management_token_touch(token=token)
        return TokenPrincipal(token), token

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="gatehouse"'
