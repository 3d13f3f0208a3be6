"""Webhook signatures, Stripe-style: `Gatehouse-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

The timestamp is inside what is signed, so a captured request cannot be replayed later than the receiver's tolerance;
during a secret rotation the header carries one v1 per valid secret. `verify_signature` is what the docs show
receivers (in Python; the page shows Node too).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "Gatehouse-Signature"
DEFAULT_TOLERANCE = 300  # seconds


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str], body: bytes, *, timestamp: int | None = None) -> str:
    """The header value for `body`, signed now (or at `timestamp`) with each of `secrets`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={timestamp}", *(f"v1={_digest(secret, timestamp, body)}" for secret in secrets)])


def verify_signature(
    secret: str, header: str, body: bytes, tolerance: int = DEFAULT_TOLERANCE, *, now: float | None = None
) -> bool:
    """Whether `header` signs exactly `body` with `secret`, within `tolerance` seconds of now."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, signature) for signature in signatures)
