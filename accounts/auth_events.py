"""Audit events for account changes that happen inside django-allauth.

allauth tells the outside world about these only through its signals, so this is the one
place we listen to signals (our own code calls services directly).
"""

from __future__ import annotations

from typing import Any

from allauth.account import signals as account_signals
from allauth.mfa import signals as mfa_signals

from accounts.services import audit_record


def _record(action: str) -> Any:
    def handler(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
        if user is None and request is not None and getattr(request, "user", None) is not None:
            user = request.user if request.user.is_authenticated else None
        email = kwargs.get("email_address") or kwargs.get("to_email_address")
        if user is None and email is not None:
            user = email.user
        after = {"email": email.email} if email is not None else None
        before_email = kwargs.get("from_email_address")
        before = {"email": before_email.email} if before_email is not None else None
        authenticator = kwargs.get("authenticator")
        if authenticator is not None:
            after = {"type": authenticator.type}
        audit_record(action=action, actor=user, before=before, after=after)

    handler.__name__ = f"audit_{action.replace('.', '_')}"
    return handler


HANDLERS = [
    (account_signals.password_changed, _record("auth.password_changed")),
    (account_signals.password_set, _record("auth.password_set")),
    (account_signals.password_reset, _record("auth.password_reset")),
    (account_signals.email_confirmed, _record("auth.email_verified")),
    (account_signals.email_changed, _record("auth.email_changed")),
    (account_signals.email_added, _record("auth.email_added")),
    (account_signals.email_removed, _record("auth.email_removed")),
    (account_signals.user_signed_up, _record("auth.signed_up")),
    (mfa_signals.authenticator_added, _record("mfa.enabled")),
    (mfa_signals.authenticator_removed, _record("mfa.disabled")),
    (mfa_signals.authenticator_reset, _record("mfa.recovery_codes_regenerated")),
]


def connect() -> None:
    for signal, handler in HANDLERS:
        signal.connect(handler, dispatch_uid=handler.__name__)
