"""The one door to Stripe: every call Gatehouse makes goes through here, with stripe-python's StripeClient.

- Every request has a timeout (STRIPE_TIMEOUT_SECONDS) and transient failures (network errors, 409,
  429, 5xx) are retried with exponential backoff and jitter by stripe-python (STRIPE_MAX_RETRIES),
  re-sending the same idempotency key; every POST here carries an idempotency key we choose, so a
  retry or a re-run of our own task can never create a second object or a second meter event.
- No call runs inside a database transaction: a slow or failing Stripe must not hold row locks, and
  a rolled-back transaction must not leave a Stripe object we forgot. `_outside_transaction` refuses.
- Objects come back as plain dicts (`to_dict()`), errors as StripeCallError: nothing outside this module
  touches the stripe package.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

import stripe
from django.conf import settings
from django.db import connection


class NotConfiguredError(RuntimeError):
    """Payments are not connected (no STRIPE_SECRET_KEY)."""


class StripeCallError(Exception):
    """Stripe refused or could not be reached (after the retries)."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    @property
    def missing(self) -> bool:
        return self.code == "resource_missing"

    @property
    def transient(self) -> bool:
        """Worth trying again later: no answer, a 409 (a concurrent request), 429 or a 5xx. Any other 4xx is Stripe
        refusing this request as it stands, and will refuse it again."""
        return self.status is None or self.status in (409, 429) or self.status >= 500

    @property
    def identifier_already_used(self) -> bool:
        """Stripe already holds a meter event with this identifier: a 400 saying so, with no error code."""
        return self.status == 400 and self.message.startswith("An event already exists with identifier")


class BadSignatureError(ValueError):
    """A webhook whose signature does not verify or whose timestamp is outside the tolerance."""


def configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


@cache
def _client(api_key: str, timeout: int, retries: int) -> stripe.StripeClient:
    return stripe.StripeClient(api_key, http_client=stripe.RequestsClient(timeout=timeout), max_network_retries=retries)


def _stripe() -> stripe.StripeClient:
    if not configured():
        raise NotConfiguredError("Payments are not connected: set STRIPE_SECRET_KEY.")
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_TIMEOUT_SECONDS, settings.STRIPE_MAX_RETRIES)


def _outside_transaction() -> None:
    # Tests run inside their own atomic blocks (marked _from_testcase); only the application's count.
    if any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks):
        raise RuntimeError("Stripe is called inside a database transaction; call it before or after.")


def _call(method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    _outside_transaction()
    try:
        result = method(*args, **kwargs)
    except stripe.StripeError as error:
        error_body = getattr(error, "error", None)
        code = getattr(error_body, "code", None) or getattr(error, "code", None) or ""
        raise StripeCallError(
            getattr(error, "user_message", None) or str(error) or type(error).__name__,
            code=str(code),
            status=getattr(error, "http_status", None),
        ) from error
    return result.to_dict()


def _options(idempotency_key: str) -> dict[str, Any]:
    return {"idempotency_key": namespaced(idempotency_key)}


def namespaced(key: str) -> str:
    """An idempotency key or meter identifier unique to this installation (STRIPE_NAMESPACE), so two installations
    sharing a Stripe account (staging and production, say) never collide."""
    return f"{settings.STRIPE_NAMESPACE}-{key}"


# --- customers, Checkout, the Customer Portal ---------------------------------------------------


def customer_create(*, team_id: int, name: str, email: str, idempotency_key: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": name,
        "metadata": {"team_id": str(team_id), "installation": settings.STRIPE_NAMESPACE},
    }
    if email:  # a team without an owner has no address to give; an empty string is not one
        params["email"] = email
    return _call(_stripe().v1.customers.create, params=params, options=_options(idempotency_key))


def checkout_session_create(
    *,
    customer: str,
    team_id: int,
    plan: str,
    fee_price: str,
    usage_price: str,
    success_url: str,
    cancel_url: str,
    idempotency_key: str,
) -> dict[str, Any]:
    """A Checkout Session in subscription mode: the plan's monthly fee (if any) and its metered usage price.

    The subscription's billing periods are Gatehouse's — UTC calendar months — anchored to the 1st at 00:00:00 UTC:
    the first invoice charges the fee for the rest of this month (prorated), and later ones close each month. Billing
    mode is flexible (Stripe's default in this API version, set explicitly): a plan switch in the Customer Portal
    bills the old price's usage up to the switch and the new price's from it."""
    line_items: list[dict[str, Any]] = []
    if fee_price:
        line_items.append({"price": fee_price, "quantity": 1})
    if usage_price:
        line_items.append({"price": usage_price})  # metered: no quantity, the meter says how much
    metadata = {"team_id": str(team_id), "plan": plan}
    return _call(
        _stripe().v1.checkout.sessions.create,
        params={
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": str(team_id),
            "line_items": line_items,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": metadata,
            "subscription_data": {
                "metadata": metadata,
                "billing_cycle_anchor_config": {"day_of_month": 1, "hour": 0, "minute": 0, "second": 0},
                "proration_behavior": "create_prorations",
                "billing_mode": {"type": "flexible"},
            },
        },
        options=_options(idempotency_key),
    )


def portal_session_create(*, customer: str, return_url: str, idempotency_key: str) -> dict[str, Any]:
    return _call(
        _stripe().v1.billing_portal.sessions.create,
        params={"customer": customer, "return_url": return_url},
        options=_options(idempotency_key),
    )


# --- objects webhooks tell us about (always re-read: deliveries come in any order) ---------------


def subscription_retrieve(subscription_id: str) -> dict[str, Any]:
    return _call(_stripe().v1.subscriptions.retrieve, subscription_id, params={"expand": ["default_payment_method"]})


def subscription_cancel(subscription_id: str, *, reason: str) -> dict[str, Any]:
    """Cancel now, with a final invoice for usage not invoiced yet and a prorated credit for the unused fee.

    (DELETE takes no idempotency key at Stripe; a repeat finds the subscription canceled, so callers retrieve first.)"""
    return _call(
        _stripe().v1.subscriptions.cancel,
        subscription_id,
        params={"invoice_now": True, "prorate": True, "cancellation_details": {"comment": reason[:500]}},
    )


def checkout_session_retrieve(session_id: str) -> dict[str, Any]:
    return _call(_stripe().v1.checkout.sessions.retrieve, session_id)


def invoice_retrieve(invoice_id: str) -> dict[str, Any]:
    """The invoice with all its lines (Stripe embeds the first ten; the rest are paged in)."""
    invoice = _call(_stripe().v1.invoices.retrieve, invoice_id)
    lines = invoice.get("lines") or {"data": [], "has_more": False}
    data = list(lines.get("data", []))
    has_more = bool(lines.get("has_more"))
    while has_more:
        page = _call(
            _stripe().v1.invoices.line_items.list, invoice_id, params={"limit": 100, "starting_after": data[-1]["id"]}
        )
        data.extend(page.get("data", []))
        has_more = bool(page.get("has_more"))
    invoice["lines"] = {"data": data, "has_more": False}
    return invoice


def payment_method_retrieve(payment_method_id: str) -> dict[str, Any]:
    return _call(_stripe().v1.payment_methods.retrieve, payment_method_id)


# --- Billing Meters --------------------------------------------------------------------------------


def meter_event_create(*, customer: str, value: int, timestamp: datetime, identifier: str) -> dict[str, Any]:
    """One meter event; the identifier (namespaced by the caller) is also the idempotency key, so sending it again
    never counts twice: within 24 hours Stripe replays the answer, later it refuses the identifier
    (StripeCallError.identifier_already_used)."""
    return _call(
        _stripe().v1.billing.meter_events.create,
        params={
            "event_name": settings.STRIPE_METER_EVENT_NAME,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "timestamp": int(timestamp.timestamp()),
            "identifier": identifier,
        },
        options={"idempotency_key": identifier},
    )


def meter_event_summaries(*, customer: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Stripe's per-day totals of the meter for one customer over [start, end), which must be UTC midnights (Stripe
    refuses a day grouping with any other window)."""
    if not settings.STRIPE_METER_ID:
        raise NotConfiguredError("Set STRIPE_METER_ID to reconcile usage with Stripe's meter.")
    for moment in (start, end):
        if moment.astimezone(UTC) != moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0):
            raise ValueError(f"meter summaries by day need UTC midnights, not {moment.isoformat()}")
    params: dict[str, Any] = {
        "customer": customer,
        "start_time": int(start.timestamp()),
        "end_time": int(end.timestamp()),
        "value_grouping_window": "day",
        "limit": 100,
    }
    summaries: list[dict[str, Any]] = []
    while True:
        page = _call(_stripe().v1.billing.meters.event_summaries.list, settings.STRIPE_METER_ID, params=params)
        summaries.extend(page.get("data", []))
        if not page.get("has_more"):
            return summaries
        params = {**params, "starting_after": summaries[-1]["id"]}


# --- webhooks ------------------------------------------------------------------------------------


def webhook_verify(payload: bytes, signature: str | None, *, tolerance: int = 300) -> dict[str, Any]:
    """The event in a webhook body whose Stripe-Signature verifies against STRIPE_WEBHOOK_SECRET within
    `tolerance` seconds; BadSignatureError otherwise."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise BadSignatureError("No webhook secret is configured.")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature, settings.STRIPE_WEBHOOK_SECRET, tolerance=tolerance
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as error:
        raise BadSignatureError(str(error)) from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise BadSignatureError("The body is not JSON.") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise BadSignatureError("The body is not a Stripe event.")
    return event
