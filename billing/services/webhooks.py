"""Stripe's webhook events: stored once, processed by a task from a fresh read of Stripe (subscriptions, invoices)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Team, User
from accounts.services import audit_record
from billing import rating, selectors, stripe_client
from billing.models import (
    UNPAID,
    BillingAccount,
    EventStatus,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Plan,
    PlanSpan,
    StripeEvent,
    SubscriptionStatus,
)
from billing.services.dunning import NOTIFIED_ROLES, enforce_team
from billing.services.metering import invoice_check
from billing.services.plans import plan_limits_publish, plan_span_record
from project import mail
from project.errors import ServiceError
from webhooks.models import INVOICE_PAYMENT_FAILED
from webhooks.services import event_emit

logger = logging.getLogger(__name__)


def _utc(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def event_receive(*, payload: bytes, signature: str | None) -> tuple[StripeEvent, bool]:
    """Verify and store a webhook delivery; queue its processing. A redelivery is recognised and changes
    nothing. Raises stripe_client.BadSignatureError (nothing stored) when it does not verify."""
    event = stripe_client.webhook_verify(payload, signature)
    handled = event["type"] in HANDLERS
    with transaction.atomic():
        stored, created = StripeEvent.objects.get_or_create(
            stripe_id=event["id"],
            defaults={
                "type": event["type"],
                "created": _utc(event.get("created")) or timezone.now(),
                "payload": event,
                "status": EventStatus.RECEIVED if handled else EventStatus.IGNORED,
            },
        )
        if created and handled:
            from billing import tasks

            transaction.on_commit(lambda: tasks.process_event.delay(stored.pk))
    return stored, created


def event_process(*, event_id: int) -> StripeEvent | None:
    """Apply one stored event (re-reading its object from Stripe, so the order of deliveries does not
    matter). Safe to run any number of times; a failure is recorded on the event for the operator."""
    event = StripeEvent.objects.filter(pk=event_id).first()
    if event is None or event.status in (EventStatus.PROCESSED, EventStatus.IGNORED):
        return event
    StripeEvent.objects.filter(pk=event.pk).update(attempts=F("attempts") + 1)
    try:
        HANDLERS[event.type](event)
    except Exception as error:
        logger.warning("stripe event %s (%s) failed: %s", event.stripe_id, event.type, error)
        StripeEvent.objects.filter(pk=event.pk).update(status=EventStatus.FAILED, error=str(error)[:2000])
    else:
        StripeEvent.objects.filter(pk=event.pk).update(
            status=EventStatus.PROCESSED, error="", processed_at=timezone.now()
        )
    event.refresh_from_db()
    return event


def event_retry(*, event_id: int, actor: User) -> StripeEvent | None:
    """The operator's retry of a failed event (processed now, in the request)."""
    event = StripeEvent.objects.filter(pk=event_id, status=EventStatus.FAILED).first()
    if event is None:
        raise ServiceError("not_failed", "Only a failed event can be retried.", status=409)
    audit_record(action="billing.event_retried", actor=actor, target_repr=f"{event.type} {event.stripe_id}")
    return event_process(event_id=event.pk)


def _account_for_customer(customer: str, *, team_id: Any = None) -> BillingAccount:
    account = BillingAccount.objects.filter(stripe_customer_id=customer).select_related("team", "plan").first()
    if account is None and team_id:
        # Checkout created the customer for this team; the account may not have stored it if the request died.
        account = BillingAccount.objects.filter(team_id=int(team_id)).select_related("team", "plan").first()
        if account and not account.stripe_customer_id:
            BillingAccount.objects.filter(pk=account.pk, stripe_customer_id="").update(stripe_customer_id=customer)
            account.refresh_from_db()
        if account and account.stripe_customer_id != customer:
            account = None
    if account is None:
        raise LookupError(f"No team has the Stripe customer {customer}.")
    return account


def _on_checkout_completed(event: StripeEvent) -> None:
    session = stripe_client.checkout_session_retrieve(event.object_id)
    account = _account_for_customer(
        str(session.get("customer") or ""), team_id=(session.get("metadata") or {}).get("team_id")
    )
    if session.get("subscription"):
        subscription_sync(account=account, subscription_id=str(session["subscription"]))


def _on_subscription(event: StripeEvent) -> None:
    data = event.payload["data"]["object"]
    team_id = (data.get("metadata") or {}).get("team_id")
    account = _account_for_customer(str(data.get("customer") or ""), team_id=team_id)
    _span_from_event(account=account, event=event, subscription=data)
    subscription_sync(account=account, subscription_id=event.object_id)


ENDED = (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED)
NOT_STARTED = (SubscriptionStatus.INCOMPLETE, *ENDED)


def _span_from_event(*, account: BillingAccount, event: StripeEvent, subscription: dict[str, Any]) -> None:
    """Record the plan the event says the team was on from when it happened: a new subscription's plan from its
    start, a switch (its items changed) from the event, Free from a subscription's end. The event's own copy of the
    subscription is the state at that moment, so events processed in any order give the same history."""
    status = str(subscription.get("status") or "")
    changed = (event.payload["data"].get("previous_attributes") or {}).keys()
    if event.type == "customer.subscription.deleted" or status in ENDED:
        at = _utc(subscription.get("ended_at")) or event.created
        plan_span_record(team=account.team, plan=Plan.objects.get(slug=selectors.FREE), at=at, source=event.stripe_id)
        return
    if status in NOT_STARTED:
        return
    plan = selectors.plan_of_subscription(subscription)
    if plan is None:
        return
    if event.type == "customer.subscription.created":
        at = _utc(subscription.get("start_date")) or event.created
    elif "items" in changed:
        at = event.created
    else:
        return
    plan_span_record(team=account.team, plan=plan, at=at, subscription_id=event.object_id, source=event.stripe_id)


def subscription_sync(*, account: BillingAccount, subscription_id: str) -> BillingAccount:
    """Bring the team's plan, subscription state and card in line with the subscription as Stripe has it now."""
    fetched_at = timezone.now()
    subscription = stripe_client.subscription_retrieve(subscription_id)
    status = subscription.get("status", "")
    plan = selectors.plan_of_subscription(subscription)
    items = subscription.get("items", {}).get("data", [])
    period_end = max((item.get("current_period_end") or 0 for item in items), default=None) or None
    started = _utc(subscription.get("start_date"))
    card = subscription.get("default_payment_method")
    with transaction.atomic():
        account = BillingAccount.objects.select_for_update().select_related("plan").get(pk=account.pk)
        if account.subscription_synced_at and account.subscription_synced_at > fetched_at:
            return account  # a newer read of Stripe has been applied meanwhile
        before = {"plan": account.plan_id, "status": account.subscription_status}
        if plan and started and status not in NOT_STARTED:
            spans = PlanSpan.objects.filter(team=account.team, subscription_id=subscription_id)
            if not spans.exists():  # its start, if no event told us (the history begins with it)
                first = account.plan if account.stripe_subscription_id == subscription_id else plan
                plan_span_record(team=account.team, plan=first, at=started, subscription_id=subscription_id,
                                 source="subscription start", previous=account.plan)  # fmt: skip
        if status in ENDED:
            if account.stripe_subscription_id in ("", subscription_id):
                account.plan = Plan.objects.get(slug=selectors.FREE)
                account.subscription_status = status
                account.cancel_at_period_end = False
        else:
            if plan is None:
                raise LookupError(f"Subscription {subscription_id} has no price of a known plan.")
            if account.metered_through is None:  # metering starts with the subscription's first hour
                account.metered_through = (started or fetched_at).replace(minute=0, second=0, microsecond=0)
            account.plan = plan
            account.stripe_subscription_id = subscription_id
            account.subscription_status = status
            account.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
            account.current_period_end = _utc(period_end)
        if isinstance(card, dict) and card.get("card"):
            account.card_brand = str(card["card"].get("brand", ""))[:20]
            account.card_last4 = str(card["card"].get("last4", ""))[:4]
            account.card_exp_month = card["card"].get("exp_month")
            account.card_exp_year = card["card"].get("exp_year")
        account.subscription_synced_at = fetched_at
        account.save()
        after = {"plan": account.plan_id, "status": account.subscription_status}
        if after != before:
            audit_record(action="billing.subscription_changed", team=account.team, before=before, after=after)
        if after["plan"] != before["plan"]:
            plan_limits_publish(team=account.team, plan=account.plan)  # the new plan's rate limit reaches the gateway
        team = account.team
        transaction.on_commit(lambda: enforce_team(team=team))
    return account


def _on_invoice(event: StripeEvent) -> None:
    invoice_sync(invoice_id=event.object_id, event=event)


FAILURE_EVENTS = ("invoice.payment_failed", "invoice.payment_action_required")


def _line_price(line: dict[str, Any]) -> str:
    """A line's price id: `pricing.price_details.price` in this API version (there is no `line.price` any more)."""
    pricing = (line.get("pricing") or {}).get("price_details") or {}
    return str(pricing.get("price") or "")[:64]


def invoice_sync(*, invoice_id: str, event: StripeEvent | None = None) -> Invoice:
    """Mirror an invoice and its lines as Stripe has them now. A failed payment (payment_failed or
    payment_action_required) starts the grace period from the earliest such event; paying or voiding ends it."""
    data = stripe_client.invoice_retrieve(invoice_id)
    account = _account_for_customer(str(data.get("customer") or ""))
    transitions = data.get("status_transitions") or {}
    status = str(data.get("status") or InvoiceStatus.DRAFT)
    failed_event = event is not None and event.type in FAILURE_EVENTS
    line_prices = {_line_price(line) for line in data.get("lines", {}).get("data", [])}
    plan = selectors.plan_of_prices(line_prices) or account.plan
    owed = status in UNPAID and int(data.get("amount_remaining") or 0) > 0
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update().filter(stripe_id=invoice_id).first()
        newly_overdue = False
        failed_at = invoice.payment_failed_at if invoice else None
        error = invoice.payment_error if invoice else ""
        if not owed:
            failed_at, error = None, ""
        elif failed_event:
            assert event is not None
            if failed_at is None or event.created < failed_at:
                newly_overdue = failed_at is None
                failed_at = event.created
            error = (
                "Your bank asks for confirmation of the payment (e.g. 3-D Secure)."
                if event.type == "invoice.payment_action_required"
                else f"The payment attempt failed (attempt {data.get('attempt_count') or 1})."
            )
        fields = {
            "team": account.team,
            "plan": plan,
            "number": str(data.get("number") or "")[:64],
            "status": status,
            "currency": str(data.get("currency") or "usd")[:3],
            "subtotal": int(data.get("subtotal") or 0),
            "total": int(data.get("total") or 0),
            "tax": int(data.get("total") or 0) - int(data.get("total_excluding_tax") or data.get("total") or 0),
            "amount_due": int(data.get("amount_due") or 0),
            "amount_paid": int(data.get("amount_paid") or 0),
            "amount_remaining": int(data.get("amount_remaining") or 0),
            "period_start": _utc(data.get("period_start")) or timezone.now(),
            "period_end": _utc(data.get("period_end")) or timezone.now(),
            "created": _utc(data.get("created")) or timezone.now(),
            "due_date": _utc(data.get("due_date")),
            "paid_at": _utc(transitions.get("paid_at")) if status == InvoiceStatus.PAID else None,
            "finalized_at": _utc(transitions.get("finalized_at")),
            "payment_failed_at": failed_at,
            "payment_error": error[:300],
            "attempt_count": int(data.get("attempt_count") or 0),
            "hosted_invoice_url": str(data.get("hosted_invoice_url") or ""),
            "invoice_pdf": str(data.get("invoice_pdf") or ""),
            "synced_at": timezone.now(),
        }
        if invoice is None:
            try:
                with transaction.atomic():
                    invoice = Invoice.objects.create(stripe_id=invoice_id, **fields)
            except IntegrityError:  # another worker mirrored it first: update theirs
                invoice = Invoice.objects.select_for_update().get(stripe_id=invoice_id)
        for name, value in fields.items():
            setattr(invoice, name, value)
        invoice.save()
        invoice.lines.all().delete()
        InvoiceLine.objects.bulk_create(
            InvoiceLine(
                invoice=invoice,
                stripe_id=str(line.get("id", ""))[:64],
                description=str(line.get("description") or "")[:500],
                amount=int(line.get("amount") or 0),
                quantity=line.get("quantity"),
                period_start=_utc((line.get("period") or {}).get("start")),
                period_end=_utc((line.get("period") or {}).get("end")),
                price_id=_line_price(line),
            )
            for line in data.get("lines", {}).get("data", [])
        )
        team = account.team
        if newly_overdue:
            saved = invoice
            action_required = event is not None and event.type == "invoice.payment_action_required"
            payload = _payment_failed_payload(invoice, action_required=action_required)
            event_emit(team=team, type=INVOICE_PAYMENT_FAILED, payload=payload)  # once: with the email, in the lock
            transaction.on_commit(lambda: _notify_payment_failed(team=team, invoice=saved))
        transaction.on_commit(lambda: enforce_team(team=team))
        if invoice.finalized_at and invoice.missed_units is None and invoice.period_start < invoice.period_end:
            checked = invoice
            transaction.on_commit(lambda: invoice_check(invoice=checked))  # did its usage all reach Stripe in time?
    return invoice


def _payment_failed_payload(invoice: Invoice, *, action_required: bool) -> dict[str, Any]:
    """The invoice.payment_failed webhook event's data: the invoice, when the keys stop, and a line for people."""
    overdue = selectors.Overdue.of(invoice)
    amount = f"{rating.dollars(invoice.amount_due)} {invoice.currency.upper()}"
    what = "needs your confirmation (e.g. 3-D Secure)" if action_required else "failed"
    return {
        "invoice": {
            "id": invoice.stripe_id,
            "number": invoice.number,
            "amount_due": str(rating.dollars(invoice.amount_due)),
            "currency": invoice.currency,
            "hosted_invoice_url": invoice.hosted_invoice_url or None,
            "attempt_count": invoice.attempt_count or None,
        },
        "reason": "payment_action_required" if action_required else "payment_failed",
        "keys_stop_at": overdue.suspend_at.isoformat(),
        "summary": (
            f"The payment of invoice {invoice.number or invoice.stripe_id} ({amount}) {what}. Pay it before "
            f"{overdue.suspend_at:%Y-%m-%d %H:%M} UTC, or the team's API keys stop."
        ),
    }


def _notify_payment_failed(*, team: Team, invoice: Invoice) -> None:
    overdue = selectors.Overdue.of(invoice)
    link = settings.SITE_URL + reverse("billing_home", kwargs={"team_slug": team.slug})
    recipients = Membership.objects.filter(team=team, role__in=NOTIFIED_ROLES).values_list("user__email", flat=True)
    for email in sorted(set(recipients)):
        mail.send(
            template="billing/email/payment_failed",
            to=email,
            context={
                "team": team,
                "invoice": invoice,
                "amount": f"${overdue.amount:,.2f}",
                "suspend_at": overdue.suspend_at,
                "action_required": "confirmation" in invoice.payment_error,
                "pay_link": invoice.hosted_invoice_url or link,
                "link": link,
            },
        )


HANDLERS: dict[str, Callable[[StripeEvent], None]] = {
    "checkout.session.completed": _on_checkout_completed,
    "customer.subscription.created": _on_subscription,
    "customer.subscription.updated": _on_subscription,
    "customer.subscription.deleted": _on_subscription,
    "invoice.created": _on_invoice,
    "invoice.finalized": _on_invoice,
    "invoice.paid": _on_invoice,
    "invoice.payment_succeeded": _on_invoice,
    "invoice.payment_failed": _on_invoice,
    "invoice.payment_action_required": _on_invoice,
    "invoice.voided": _on_invoice,
    "invoice.marked_uncollectible": _on_invoice,
    "invoice.updated": _on_invoice,
}
