"""Structured logging: JSON lines with the request (or task) id on every line."""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

# Holds the id of the HTTP request or Celery task being handled; "-" outside both.
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "request_id"}


# URL paths whose next segment is a secret (the credential in an emailed link). A test walks every URL pattern and
# fails on a route with a secret-looking parameter (token, key, uidb36) that no prefix here covers.
SECRET_PATH_PREFIXES = ("/invitations/", "/accounts/confirm-email/", "/accounts/password/reset/key/")
_SECRET_IN_PATH = re.compile("(" + "|".join(re.escape(p) for p in SECRET_PATH_PREFIXES) + r")[^/\s'\"?#]+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """The text with the secret segment of every emailed link's path replaced by [redacted]."""
    return _SECRET_IN_PATH.sub(r"\1" + REDACTED, text)


class RedactSecretsFilter(logging.Filter):
    """Keeps invitation tokens and email-confirmation / password-reset keys out of every log line: the message,
    and string (or request) fields such as `path` — whichever logger wrote it (ours, Django's, a library's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for key, value in list(record.__dict__.items()):
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            if isinstance(value, str):
                setattr(record, key, redact(value))
            elif key == "request" and value is not None:  # django.request's errors carry the request itself
                setattr(record, key, redact(str(value)))
        return True


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra= fields are kept as top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", request_id_var.get()),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
