"""`Authorization: Bearer <prefix>…` for DRF: the one shape both credential kinds share (management tokens for the
team API, gateway credentials for the gateway API). Each subclass says its prefix, how to find the live credential
by its hash, and what principal stands for it as request.user."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions

from project.secrets import sha256_hex


class MachinePrincipal:
    """request.user for a credential that is not a person (a management token, a gateway): authenticated, with none of
    a person's powers and no primary key."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None


class BearerSecretAuthentication(authentication.BaseAuthentication):
    prefix: str
    noun: str  # "management tokens (gmt_…)"
    refused: str  # "Invalid, expired or revoked token."
    realm: str

    def credential(self, secret_hash: str) -> Any | None:
        """The live credential with this hash, or None."""
        raise NotImplementedError

    def principal(self, credential: Any) -> Any:
        raise NotImplementedError

    def used(self, credential: Any) -> None:
        """Record the use (at most once a minute)."""

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Bearer <token>'.")
        raw = header[1].decode("ascii", errors="replace")
        if not raw.startswith(self.prefix):
            raise exceptions.AuthenticationFailed(f"This API takes {self.noun}.")
        credential = self.credential(sha256_hex(raw))
        if credential is None:
            raise exceptions.AuthenticationFailed(self.refused)
        self.used(credential)
        return self.principal(credential), credential

    def authenticate_header(self, request: Any) -> str:
        return f'Bearer realm="{self.realm}"'
