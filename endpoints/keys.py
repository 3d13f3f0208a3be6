"""The API key format: typed prefix, 190 random bits, CRC-32 checksum.

    gk_live_<32 base62 characters><6 base62 characters of checksum>

The prefix says what it is (secret scanners and people can recognise it; live vs test); the
checksum lets anything — the gateway, our API — refuse a mistyped or truncated key without a
database lookup. CRC-32 detects every change of up to 32 bits, so every single-character change.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIXES = {"production": "gk_live_", "test": "gk_test_"}
BODY_LENGTH = 32  # 32 × log2(62) ≈ 190 bits from `secrets`
CHECKSUM_LENGTH = 6  # 62**6 > 2**32
_SHAPE = re.compile(rf"^gk_(live|test)_[0-9A-Za-z]{{{BODY_LENGTH + CHECKSUM_LENGTH}}}$")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits))


def checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode("ascii")), CHECKSUM_LENGTH)


def generate_secret(environment: str) -> str:
    """A new secret for an endpoint in `environment` (production → gk_live_, test → gk_test_)."""
    head = PREFIXES[environment] + "".join(secrets.choice(BASE62) for _ in range(BODY_LENGTH))
    return head + checksum(head)


def is_well_formed(raw: str) -> bool:
    """Shape and checksum only: no database involved."""
    if not isinstance(raw, str) or not _SHAPE.match(raw):
        return False
    return checksum(raw[:-CHECKSUM_LENGTH]) == raw[-CHECKSUM_LENGTH:]


def secret_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def secret_hint(raw: str) -> str:
    """What the UI shows to recognise a key: its prefix and first characters, and its last four."""
    return f"{raw[:12]}…{raw[-4:]}"


def public_id(prefix: str, length: int = 16) -> str:
    """A public identifier such as key_x7k2… or ep_9fq1…: unguessable, but not a secret."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))
