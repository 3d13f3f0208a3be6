"""Billing services: plans for teams, Stripe customers, Checkout and the Portal, webhook events, invoices,
dunning and the meter ledger.

Stripe calls (billing.stripe_client) always happen outside database transactions: read what is needed,
call Stripe, then write the result in a short transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, Sum
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Role, Team, User
from accounts.services import audit_record
from billing import rating, selectors, stripe_client
from billing.models import (
    BillingAccount,
    EventStatus,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    MeterReport,
    MeterReportStatus,
    Plan,
    PlanSpan,
    PlanVersion,
    Reconciliation,
    StripeEvent,
    SubscriptionStatus,
)
from project.errors import ServiceError

logger = logging.getLogger(__name__)

PAYMENT_OVERDUE = "Payment overdue: an invoice is unpaid past the grace period."
FREE_ALLOWANCE_USED = "The Free plan's monthly allowance is used up: upgrade, or keys resume next month."
BILLING_REASONS = (PAYMENT_OVERDUE, FREE_ALLOWANCE_USED)
NOTIFIED_ROLES = (Role.OWNER, Role.ADMIN, Role.FINANCE)


def _utc(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def account_ensure(*, team: Team) -> BillingAccount:
    """The team's billing account, created on the Free plan when first needed."""
    account, _created = BillingAccount.objects.select_related("plan").get_or_create(
        team=team, defaults={"plan": Plan.objects.get(slug=selectors.FREE)}
    )
    return account


# --- customers, Checkout and the Customer Portal ---------------------------------------------------


LIVE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE,
        SubscriptionStatus.UNPAID, SubscriptionStatus.INCOMPLETE, SubscriptionStatus.PAUSED)  # fmt: skip


def has_live_subscription(account: BillingAccount | None) -> bool:
    return bool(account and account.stripe_subscription_id and account.subscription_status in LIVE)


def _not_connected() -> ServiceError:
    return ServiceError(
        "payments_not_connected",
        "Payments are not connected on this installation (no Stripe key), so plans cannot be bought here.",
        status=409,
    )


def customer_ensure(*, team: Team) -> str:
    """The team's Stripe customer id, creating the customer (keyed by team id in its metadata) if needed."""
    account = account_ensure(team=team)
    if account.stripe_customer_id:
        return account.stripe_customer_id
    owner = Membership.objects.select_related("user").filter(team=team, role=Role.OWNER).first()
    customer = stripe_client.customer_create(
        team_id=team.pk,
        name=team.name,
        email=owner.user.email if owner else "",  # no owner: no address is sent
        idempotency_key=f"customer-{team.pk}",  # two racing requests get the same customer back
    )
    BillingAccount.objects.filter(pk=account.pk, stripe_customer_id="").update(stripe_customer_id=customer["id"])
    account.refresh_from_db()
    return account.stripe_customer_id


def checkout_start(*, team: Team, plan_slug: str, actor: User, success_url: str, cancel_url: str) -> str:
    """Start an upgrade: a Checkout Session for the plan (subscription mode). Returns the URL to send the user to."""
    plan = Plan.objects.filter(slug=plan_slug, self_serve=True, requires_payment=True).first()
    if plan is None:
        raise ServiceError("unknown_plan", "Choose one of the plans on this page.", field="plan")
    if not stripe_client.configured():
        raise _not_connected()
    account = account_ensure(team=team)
    if has_live_subscription(account):
        # A second Checkout would start a second subscription: paid plans change in place, in the Portal.
        raise ServiceError(
            "has_subscription",
            "The team already has a subscription: switch plans in the billing portal, where the change is prorated.",
            field="plan",
        )
    version = selectors.version_for(team=team, plan=plan, at=timezone.now())
    if version is None or not (version.stripe_usage_price_id or version.stripe_fee_price_id):
        raise ServiceError(
            "plan_not_for_sale", f"{plan.name} has no Stripe price yet; the operator needs to set it up.", status=409
        )
    customer = customer_ensure(team=team)
    session = stripe_client.checkout_session_create(
        customer=customer,
        team_id=team.pk,
        plan=plan.slug,
        fee_price=version.stripe_fee_price_id,
        usage_price=version.stripe_usage_price_id,
        success_url=success_url,
        cancel_url=cancel_url,
        idempotency_key=f"checkout-{team.pk}-{uuid.uuid4().hex}",  # each click is a new attempt; retries reuse it
    )
    audit_record(action="billing.checkout_started", actor=actor, team=team, after={"plan": plan.slug})
    return str(session["url"])


def portal_start(*, team: Team, actor: User, return_url: str) -> str:
    """A Customer Portal session (payment methods, invoices, cancel). Returns its URL."""
    if not stripe_client.configured():
        raise _not_connected()
    account = selectors.account_of(team=team)
    if account is None or not account.stripe_customer_id:
        raise ServiceError("no_customer", "There is no payment method to manage yet: upgrade to a paid plan first.")
    session = stripe_client.portal_session_create(
        customer=account.stripe_customer_id, return_url=return_url, idempotency_key=f"portal-{uuid.uuid4().hex}"
    )
    audit_record(action="billing.portal_opened", actor=actor, team=team)
    return str(session["url"])


def subscription_cancel_for_team_deletion(*, team: Team, actor: User | None) -> None:
    """Before a team is deleted: report its closed usage hours to the meter, then cancel its subscription at Stripe
    now — a final invoice for the usage not invoiced yet, a prorated credit for the unused fee — so nothing keeps
    billing a team that no longer exists. Outside any transaction; a Stripe failure refuses the deletion."""
    account = selectors.account_of(team=team)
    if not has_live_subscription(account):
        return
    assert account is not None  # for the type checker: has_live_subscription says so
    if not stripe_client.configured():
        raise ServiceError(
            "payments_not_connected",
            "The team has a Stripe subscription, but payments are not connected here, so it cannot be canceled. "
            "Nothing was deleted.",
            status=409,
        )
    try:
        meter_record(team=team)
        meter_send(team=team)
        try:
            subscription = stripe_client.subscription_retrieve(account.stripe_subscription_id)
        except stripe_client.StripeCallError as error:
            if not error.missing:
                raise
            subscription = {"id": account.stripe_subscription_id, "status": SubscriptionStatus.CANCELED}
        if subscription["status"] not in (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED):
            subscription = stripe_client.subscription_cancel(
                account.stripe_subscription_id, reason=f"Gatehouse team {team.slug} (id {team.pk}) deleted"
            )
    except stripe_client.StripeCallError as error:
        raise ServiceError(
            "stripe_unavailable",
            f"Stripe could not cancel the subscription ({error}). Nothing was deleted; try again in a moment.",
            status=502,
        ) from None
    BillingAccount.objects.filter(pk=account.pk).update(
        subscription_status=subscription["status"], cancel_at_period_end=False, subscription_synced_at=timezone.now()
    )
    audit_record(
        action="billing.subscription_canceled",
        actor=actor,
        team=team,
        after={"subscription": account.stripe_subscription_id, "reason": "team deleted"},
    )


# --- webhook events ------------------------------------------------------------------------------


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


MAX_EVENT_ATTEMPTS = 6


def events_due(*, now: datetime | None = None) -> list[StripeEvent]:
    """Events to (re)process: received over 2 minutes ago and never processed (their task was lost), or failed
    fewer than MAX_EVENT_ATTEMPTS times and last tried long enough ago (2, 4, 8… minutes)."""
    now = now or timezone.now()
    stuck = StripeEvent.objects.filter(status=EventStatus.RECEIVED, received_at__lt=now - timedelta(minutes=2))
    failed = StripeEvent.objects.filter(status=EventStatus.FAILED, attempts__lt=MAX_EVENT_ATTEMPTS)
    return list(stuck) + [event for event in failed if event.received_at <= now - timedelta(minutes=2**event.attempts)]


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


def _plan_of_subscription(subscription: dict[str, Any]) -> Plan | None:
    """The plan whose prices the subscription's items carry — what the Customer Portal changes when a customer
    switches plans — and only when no item's price is known, the plan Checkout wrote into its metadata."""
    prices = {str((item.get("price") or {}).get("id") or "") for item in subscription.get("items", {}).get("data", [])}
    plan = _plan_of_prices(prices)
    if plan:
        return plan
    slug = (subscription.get("metadata") or {}).get("plan")
    return Plan.objects.filter(slug=slug).first() if slug else None


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
    plan = _plan_of_subscription(subscription)
    if plan is None:
        return
    if event.type == "customer.subscription.created":
        at = _utc(subscription.get("start_date")) or event.created
    elif "items" in changed:
        at = event.created
    else:
        return
    plan_span_record(team=account.team, plan=plan, at=at, subscription_id=event.object_id, source=event.stripe_id)


HISTORY_START = datetime(2000, 1, 1, tzinfo=UTC)  # before any subscription: the plan a team had before its history


def plan_span_record(
    *, team: Team, plan: Plan, at: datetime, subscription_id: str = "", source: str = "", previous: Plan | None = None
) -> PlanSpan:
    """The team is on `plan` from `at` (idempotent: one span per instant). A team's first span also records the plan
    it was on before (`previous`, default its account's) from the beginning (HISTORY_START), so its history stays
    whole whatever order the events come in.

    Meter rows recorded for the hours from the change on under the previous plan (the webhook came late) are
    recorded again under the new one if none was sent yet; sent ones are left for reconciliation to flag."""
    with transaction.atomic():
        if not PlanSpan.objects.filter(team=team).exists():
            account = account_ensure(team=team)
            PlanSpan.objects.get_or_create(
                team=team, starts_at=HISTORY_START, defaults={"plan": previous or account.plan, "source": "before"}
            )
        span, _created = PlanSpan.objects.get_or_create(
            team=team,
            starts_at=at,
            defaults={"plan": plan, "subscription_id": subscription_id, "source": source[:100]},
        )
        hour = at.replace(minute=0, second=0, microsecond=0)
        later = MeterReport.objects.filter(team=team, hour__gte=hour)
        if later.filter(segment_start__lt=at).exists() and not later.filter(status=MeterReportStatus.SENT).exists():
            later.delete()
            BillingAccount.objects.filter(team=team, metered_through__gt=hour).update(metered_through=hour)
    return span


def _plan_of_prices(prices: set[str]) -> Plan | None:
    prices.discard("")
    if not prices:
        return None
    version = (
        PlanVersion.objects.filter(Q(stripe_fee_price_id__in=prices) | Q(stripe_usage_price_id__in=prices))
        .select_related("plan")
        .first()
    )
    return version.plan if version else None


def subscription_sync(*, account: BillingAccount, subscription_id: str) -> BillingAccount:
    """Bring the team's plan, subscription state and card in line with the subscription as Stripe has it now."""
    fetched_at = timezone.now()
    subscription = stripe_client.subscription_retrieve(subscription_id)
    status = subscription.get("status", "")
    plan = _plan_of_subscription(subscription)
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
            from endpoints.services import team_limits_changed

            team_limits_changed(team=account.team)  # the new plan's rate limit reaches the gateway
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
    plan = _plan_of_prices({_line_price(line) for line in data.get("lines", {}).get("data", [])}) or account.plan
    owed = status in selectors.UNPAID and int(data.get("amount_remaining") or 0) > 0
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
            transaction.on_commit(lambda: _notify_payment_failed(team=team, invoice=saved))
        transaction.on_commit(lambda: enforce_team(team=team))
        if invoice.finalized_at and invoice.missed_units is None and invoice.period_start < invoice.period_end:
            checked = invoice
            transaction.on_commit(lambda: invoice_check(invoice=checked))  # did its usage all reach Stripe in time?
    return invoice


def _notify_payment_failed(*, team: Team, invoice: Invoice) -> None:
    from accounts import emails

    overdue = selectors.Overdue(invoice, invoice.payment_failed_at + selectors.grace_period())  # type: ignore[operator]
    link = settings.SITE_URL + reverse("billing_home", kwargs={"team_slug": team.slug})
    recipients = Membership.objects.filter(team=team, role__in=NOTIFIED_ROLES).values_list("user__email", flat=True)
    for email in sorted(set(recipients)):
        emails.send(
            template="payment_failed",
            folder="billing/email",
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


# --- dunning and the Free plan's hard stop -------------------------------------------------------


def _suspension_reason(*, team: Team, now: datetime, units_this_period: int | None = None) -> str | None:
    overdue = selectors.overdue_of(team=team)
    if overdue and now >= overdue.suspend_at:
        return PAYMENT_OVERDUE
    account = selectors.account_of(team=team)
    plan = selectors.plan_of(team=team, account=account)
    if plan.hard_cap:
        period_start, _end = rating.period_of(now)
        segment = selectors.plan_segments(team=team, start=period_start, end=now, account=account)[-1]
        version = selectors.version_for(team=team, plan=plan, at=segment.start)
        allowance = version.included_units if version else 0
        if units_this_period is None or segment.start > period_start:  # the allowance counts from the switch
            exact = rating.billable_units(team=team, start=segment.usage_start, end=now + timedelta(hours=1))
            units_this_period = int(sum(exact.values(), Decimal(0)).to_integral_value(ROUND_HALF_UP))
        if units_this_period >= allowance:
            return FREE_ALLOWANCE_USED
    return None


def enforce_team(*, team: Team, now: datetime | None = None, units_this_period: int | None = None) -> str | None:
    """Suspend the team's keys for an invoice overdue past the grace period or a used-up Free allowance, and
    restore them once neither holds. Suspensions made for other reasons (by the operator) are left alone."""
    from endpoints.models import TeamSuspension
    from endpoints.services import team_suspend, team_unsuspend

    now = now or timezone.now()
    reason = _suspension_reason(team=team, now=now, units_this_period=units_this_period)
    current = TeamSuspension.objects.filter(team=team).values_list("reason", flat=True).first()
    if current is not None and current not in BILLING_REASONS:
        return current
    if reason and reason != current:
        team_suspend(team=team, reason=reason)
    elif reason is None and current is not None:
        team_unsuspend(team=team)
    return reason


def enforce_all(*, now: datetime | None = None) -> int:
    """enforce_team for every team it could concern: an overdue invoice, a billing suspension, or a Free
    plan with usage this period (their units in one query). Returns how many teams were checked."""
    from analytics import selectors as usage
    from endpoints.models import TeamSuspension

    now = now or timezone.now()
    start, _end = rating.period_of(now)
    rows = usage.usage_by(team=None, start=start, end=now + timedelta(hours=1), by=("team", "service", "method"),
                          fields=rating.RATING_FIELDS)  # fmt: skip
    services = rating.catalog()
    per_team: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        per_team.setdefault(row["team_id"], []).append(row)
    free_with_usage = set(
        BillingAccount.objects.filter(plan__hard_cap=True, team_id__in=per_team).values_list("team_id", flat=True)
    ) | set(Team.objects.filter(pk__in=per_team, billing__isnull=True).values_list("pk", flat=True))
    team_ids = (
        free_with_usage
        | set(Invoice.objects.filter(payment_failed_at__isnull=False).values_list("team_id", flat=True))
        | set(TeamSuspension.objects.filter(reason__in=BILLING_REASONS).values_list("team_id", flat=True))
    )
    for team in Team.objects.filter(pk__in=team_ids):
        exact = rating.exact_units_of(per_team.get(team.pk, []), services)
        units = int(sum(exact.values(), Decimal(0)).to_integral_value(ROUND_HALF_UP))
        try:
            enforce_team(team=team, now=now, units_this_period=units)
        except Exception:
            logger.exception("billing enforcement failed for team %s", team.pk)
    return len(team_ids)


# --- the meter ledger ----------------------------------------------------------------------------

# An hour is reported once compaction has written it: closed hours are compacted at once, every 15 s.
SETTLE = timedelta(minutes=5)
# Stripe finalizes a subscription's invoice about an hour after its period ends; usage reported until then is on it.
STRIPE_FINALIZATION_GRACE = timedelta(hours=1)
MAX_SEND_ATTEMPTS = 8
# Stripe accepts meter events timestamped within the past 35 days (and at most 5 minutes ahead). A row older than
# this margin is never sent — Stripe would refuse it — but set aside, visible to the operator.
METER_EVENT_MAX_AGE = timedelta(days=35) - timedelta(hours=1)
# Consecutive failures Stripe may answer again (outage, rate limit) that end a run: the rest waits for the next one.
MAX_TRANSIENT_FAILURES = 2


def _rounded(value: Decimal) -> int:
    return int(value.to_integral_value(ROUND_HALF_UP))


def _metered_spans(*, team: Team, start: datetime, end: datetime) -> list[selectors.Span]:
    """The segments of paid plans over [start, end), period by period (a segment never crosses a period end)."""
    spans: list[selectors.Span] = []
    period_start, period_end = rating.period_of(start)
    while period_start < end:
        spans += [span for span in selectors.plan_segments(team=team, start=period_start, end=period_end)
                  if span.plan.requires_payment and span.usage_end > start and span.usage_start < end]  # fmt: skip
        period_start, period_end = rating.period_of(period_end)
    return spans


def _exact(team: Team, start: datetime, end: datetime, services: dict[str, Any]) -> Decimal:
    if end <= start:
        return Decimal(0)
    return sum(rating.billable_units(team=team, start=start, end=end, services=services).values(), Decimal(0))


def _open_spans(*, team: Team, first: datetime, last: datetime, now: datetime) -> list[selectors.Span]:
    """The paid segments the ledger still writes to: those with hours at or after `first`, and the one that ended
    with the last period while Stripe has not finalized its invoice (late records for it still count). A segment a
    plan switch ended is closed: Stripe billed it at the switch."""
    boundary = rating.period_of(first)[0]
    spans = _metered_spans(team=team, start=min(first, boundary - timedelta(seconds=1)), end=max(last, first))
    finalized = Invoice.objects.filter(team=team, period_end=boundary, finalized_at__isnull=False).exists()
    grace = now < boundary + STRIPE_FINALIZATION_GRACE and not finalized
    return [span for span in spans if span.usage_end > first or (span.end == boundary and grace)]


def meter_record(*, team: Team, now: datetime | None = None) -> int:
    """Add the team's closed, unreported hours on paid plans to the meter ledger (a row per hour with usage). Each
    row's units are the rounded cumulative units of its segment through that hour minus what the segment's earlier
    rows carry, so a segment's rows add up to exactly its rated units. Records that arrive late for hours already
    reported are carried when the next hour closes by the segment's next row (or one for that hour) — and in the
    hour after a period's end, every run, by a row of their own a second after the closed segment's last one, while
    Stripe has not finalized its invoice. Hours on Free (before a subscription, after it ends) are never metered.
    Returns how many rows were added."""
    now = now or timezone.now()
    account = selectors.account_of(team=team)
    if account is None or not account.stripe_customer_id or account.metered_through is None:
        return 0
    last = max((now - SETTLE).replace(minute=0, second=0, microsecond=0), account.metered_through)
    first = account.metered_through
    closing = first == rating.period_of(first)[0] and now < first + STRIPE_FINALIZATION_GRACE
    if last == first and not closing:
        return 0  # no hour closed since the last run; late records wait for the next one (a period's end, not)
    spans = _open_spans(team=team, first=first, last=last, now=now)
    if not spans:
        if last > first:
            BillingAccount.objects.filter(pk=account.pk, metered_through=first).update(metered_through=last)
        return 0
    rows: dict[datetime, list[dict[str, Any]]] = {}
    for span in spans:  # only the paid segments' hours: a long spell on Free in between is never read
        low, high = max(span.usage_start, first), min(span.usage_end, last)
        if low < high:
            rows |= rating_rows_by_hour(team=team, start=low, end=high)
    services = rating.catalog()
    catch_up = {  # each segment's exact units before `first` as the rollups have them now (late records included)
        span.start: _exact(team, span.usage_start, min(first, span.usage_end), services) for span in spans
    }
    added = []
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().get(pk=account.pk)
        if locked.metered_through != first:
            return 0  # another run recorded these hours meanwhile
        for span in spans:
            previous = MeterReport.objects.filter(team=team, segment_start=span.start).order_by("-timestamp").first()
            reported = previous.cumulative if previous else Decimal(0)
            cumulative = catch_up[span.start]
            closed = list(_hours(max(span.usage_start, first), min(span.usage_end, last)))
            stamps = [max(hour, span.start) for hour in closed if hour in rows]
            if not stamps and _rounded(cumulative) > _rounded(reported):  # late records, and no row to carry them
                if closed:
                    stamps = [max(closed[-1], span.start)]
                else:
                    stamps = [previous.timestamp + timedelta(seconds=1) if previous else span.start]
            for stamp in stamps:
                hour = stamp.replace(minute=0, second=0, microsecond=0)
                cumulative += sum(rating.exact_units_of(rows.get(hour, []), services).values(), Decimal(0))
                units = _rounded(cumulative) - _rounded(reported)
                added.append(
                    MeterReport(
                        team=team,
                        hour=hour,
                        timestamp=stamp,
                        segment_start=span.start,
                        cumulative=cumulative,
                        units=units,
                        identifier=_meter_identifier(team, stamp),
                        stripe_customer_id=locked.stripe_customer_id,
                        status=MeterReportStatus.PENDING if units > 0 else MeterReportStatus.SKIPPED,
                    )
                )
                reported = cumulative
        MeterReport.objects.bulk_create(added)
        locked.metered_through = last
        locked.save(update_fields=["metered_through"])
    return len(added)


def _hours(start: datetime, end: datetime) -> list[datetime]:
    hours = []
    while start < end:
        hours.append(start)
        start += timedelta(hours=1)
    return hours


def _meter_identifier(team: Team, timestamp: datetime) -> str:
    stamp = f"{timestamp:%Y%m%dT%H%M}" + (f"{timestamp:%S}" if timestamp.second else "")
    return stripe_client.namespaced(f"{team.pk}-{stamp}")


def rating_rows_by_hour(*, team: Team, start: datetime, end: datetime) -> dict[datetime, list[dict[str, Any]]]:
    from analytics import selectors as usage

    per_hour: dict[datetime, list[dict[str, Any]]] = {}
    for row in usage.usage_by(team=team, start=start, end=end, by=("service", "method"), fields=rating.RATING_FIELDS,
                              hourly=True):  # fmt: skip
        per_hour.setdefault(row["bucket"], []).append(row)
    return per_hour


def meter_send(*, team: Team, now: datetime | None = None) -> tuple[int, int]:
    """Send the team's unsent ledger rows to Stripe, oldest first (each once: the identifier is the idempotency
    key). Returns (sent, failed).

    Stripe sums meter events by timestamp, so their order does not matter and one row never holds back another:
    a row Stripe refuses as it stands (a 4xx) is marked failed for good, for the operator, and the others go on;
    a row older than Stripe accepts is never sent but set aside (expired); only repeated answers worth retrying
    (no answer, 409, 429, 5xx: Stripe is struggling) end the run, and the next one picks up from there."""
    now = now or timezone.now()
    sent = failed = transient_in_a_row = 0
    MeterReport.objects.filter(
        team=team,
        status__in=(MeterReportStatus.PENDING, MeterReportStatus.FAILED),
        timestamp__lt=now - METER_EVENT_MAX_AGE,
    ).update(
        status=MeterReportStatus.EXPIRED, error="Older than the 35 days Stripe's meter accepts: settle it by hand."
    )
    pending = MeterReport.objects.filter(
        team=team, status__in=(MeterReportStatus.PENDING, MeterReportStatus.FAILED), attempts__lt=MAX_SEND_ATTEMPTS
    ).order_by("hour")
    for report in pending:
        MeterReport.objects.filter(pk=report.pk).update(attempts=F("attempts") + 1)
        try:
            stripe_client.meter_event_create(
                customer=report.stripe_customer_id, value=report.units, timestamp=report.timestamp,
                identifier=report.identifier,
            )  # fmt: skip
        except stripe_client.StripeCallError as error:
            if error.identifier_already_used:  # Stripe has it already (sent by a run that died before marking it)
                MeterReport.objects.filter(pk=report.pk).update(status=MeterReportStatus.SENT, sent_at=timezone.now())
                sent += 1
                transient_in_a_row = 0
                continue
            failed += 1
            if error.transient:
                MeterReport.objects.filter(pk=report.pk).update(status=MeterReportStatus.FAILED, error=str(error)[:500])
                transient_in_a_row += 1
                if transient_in_a_row >= MAX_TRANSIENT_FAILURES:
                    break
                continue
            MeterReport.objects.filter(pk=report.pk).update(
                status=MeterReportStatus.FAILED, attempts=MAX_SEND_ATTEMPTS, error=str(error)[:500]
            )
            transient_in_a_row = 0
            continue
        MeterReport.objects.filter(pk=report.pk).update(status=MeterReportStatus.SENT, sent_at=timezone.now(), error="")
        sent += 1
        transient_in_a_row = 0
    return sent, failed


def metered_teams() -> list[Team]:
    """Teams with hours to meter: a live subscription, or an ended one whose last paid hours are not all recorded (a
    canceled team is metered up to its end, never after)."""
    ended_since = PlanSpan.objects.filter(team=OuterRef("pk"), starts_at__gt=OuterRef("billing__metered_through"))
    return list(
        Team.objects.filter(billing__stripe_customer_id__gt="", billing__metered_through__isnull=False)
        .filter(Q(billing__subscription_status__in=LIVE) | Exists(ended_since))
        .order_by("pk")
    )


# --- reconciliation ------------------------------------------------------------------------------


@dataclass
class ReconcileResult:
    checked: int = 0
    differences: int = 0
    missed_invoices: int = 0


def reconcile_day(*, team: Team, day: datetime) -> Reconciliation | None:
    """Compare one whole UTC day of the team's billable units — ours from the rollups now, what the ledger sent, and
    what Stripe's meter summed — and store the result (the operator page lists differences). None while the day
    is not fully reported yet: Stripe sums whole days only (its day windows start and end at UTC midnight)."""
    start = day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    account = selectors.account_of(team=team)
    if account is None or account.metered_through is None or account.metered_through < end:
        return None
    ours = sum(units for _span, units in _metered_units(team=team, start=start, end=end))
    reported = (
        MeterReport.objects.filter(
            team=team, timestamp__gte=start, timestamp__lt=end, status=MeterReportStatus.SENT
        ).aggregate(n=Sum("units"))["n"]
        or 0
    )
    stripe_total, error = None, ""
    try:
        if account is None or not account.stripe_customer_id:
            raise stripe_client.NotConfiguredError("The team has no Stripe customer.")
        summaries = stripe_client.meter_event_summaries(customer=account.stripe_customer_id, start=start, end=end)
        stripe_total = sum(int(Decimal(str(s.get("aggregated_value") or 0))) for s in summaries)
    except (stripe_client.StripeCallError, stripe_client.NotConfiguredError) as failure:
        error = str(failure)[:300]
    result, _created = Reconciliation.objects.update_or_create(
        team=team,
        day=start.date(),
        defaults={"ours": ours, "reported": reported, "stripe": stripe_total, "error": error},
    )
    return result


def _metered_units(*, team: Team, start: datetime, end: datetime) -> list[tuple[selectors.Span, int]]:
    """Each paid segment overlapping [start, end), with its units in that range as the meter ledger carries them
    (rounded cumulatively from the segment's start), from the rollups as they are now."""
    services = rating.catalog()
    out = []
    for span in _metered_spans(team=team, start=start, end=end):
        low, high = max(start, span.usage_start), min(end, span.usage_end)
        before = _exact(team, span.usage_start, low, services)
        out.append((span, _rounded(before + _exact(team, low, high, services)) - _rounded(before)))
    return out


def invoice_check(*, invoice: Invoice) -> int | None:
    """How many units of the usage a finalized invoice bills did not reach Stripe's meter in time — before the
    invoice finalized, or for a segment a plan switch ended, before the switch (when Stripe billed that segment) —
    stored on the invoice for the operator (and None for an invoice that bills no usage period or is a draft)."""
    if invoice.finalized_at is None or invoice.period_start >= invoice.period_end:
        return None
    missed = 0
    for span, units in _metered_units(team=invoice.team, start=invoice.period_start, end=invoice.period_end):
        closes = invoice.finalized_at if span.end >= invoice.period_end else min(span.end, invoice.finalized_at)
        billed = MeterReport.objects.filter(
            team=invoice.team,
            segment_start=span.start,
            hour__gte=max(invoice.period_start, span.usage_start),
            hour__lt=min(invoice.period_end, span.usage_end),
            status=MeterReportStatus.SENT,
            sent_at__lte=closes,
        ).aggregate(n=Sum("units"))["n"]
        missed += max(units - (billed or 0), 0)
    Invoice.objects.filter(pk=invoice.pk).update(missed_units=missed, missed_checked_at=timezone.now())
    if missed:
        logger.warning("usage missed invoice %s of team %s", invoice.stripe_id, invoice.team_id,
                       extra={"missed_units": missed})  # fmt: skip
    return missed


# Records are accepted up to 35 days late, so an invoice is checked again every night for that long.
INVOICE_CHECK_DAYS = 36


def reconcile(*, day: datetime | None = None) -> ReconcileResult:
    """Reconcile yesterday (or `day`) for every metered team, and check that the usage of every invoice finalized in
    the last INVOICE_CHECK_DAYS reached Stripe before it finalized."""
    day = day or timezone.now() - timedelta(days=1)
    result = ReconcileResult()
    recent = Invoice.objects.filter(
        finalized_at__gte=timezone.now() - timedelta(days=INVOICE_CHECK_DAYS), period_end__gt=F("period_start")
    ).select_related("team")
    for invoice in recent:
        try:
            result.missed_invoices += 1 if invoice_check(invoice=invoice) else 0
        except Exception:
            logger.exception("invoice check failed for %s", invoice.stripe_id)
    for team in metered_teams():
        row = reconcile_day(team=team, day=day)
        if row is None:
            continue
        result.checked += 1
        result.differences += 0 if row.matches else 1
        if not row.matches:
            logger.warning("meter reconciliation differs for team %s on %s", team.pk, row.day,
                           extra={"ours": row.ours, "reported": row.reported, "stripe": row.stripe})  # fmt: skip
    return result
