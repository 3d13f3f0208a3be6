"""Secrets: hashing for storage, prefixed secrets shown once, and "last used" stamps that cost one UPDATE a minute.

Secrets (API keys, management tokens, gateway credentials, invitation tokens) are stored as SHA-256 hashes only:
they are long random strings, so a fast hash is enough (no password stretching), and a lookup is one indexed read.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.utils import timezone


def sha256_hex(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def prefixed_secret(prefix: str) -> tuple[str, str]:
    """A new secret `<prefix><8 hex>_<43 url-safe chars>` and its 8-hex public part (shown in lists, e.g. gmt_3f9a…)."""
    public_part = secrets.token_hex(4)
    return f"{prefix}{public_part}_{secrets.token_urlsafe(32)}", public_part


TOUCH_EVERY = timedelta(minutes=1)


def touch(obj: models.Model, field: str, *, now: datetime | None = None, every: timedelta = TOUCH_EVERY) -> None:
    """Record that `obj` was used (its `field` set to now) at most once per `every`: a single UPDATE of that column,
    no read-modify-write, so concurrent requests never overwrite anything else."""
    now = now or timezone.now()
    last: Any = getattr(obj, field)
    if last is None or now - last > every:
        type(obj)._default_manager.filter(pk=obj.pk).update(**{field: now})
        setattr(obj, field, now)
