"""Billing accounts, Stripe customers, Checkout and the Customer Portal."""

from __future__ import annotations

import uuid

from django.utils import timezone

from accounts.models import Membership, Role, Team, User
from accounts.services import audit_record
from billing import selectors, stripe_client
from billing.models import BillingAccount, Plan
from project.errors import ServiceError


def account_ensure(*, team: Team) -> BillingAccount:
    """The team's billing account, created on the Free plan when first needed."""
    account, _created = BillingAccount.objects.select_related("plan").get_or_create(
        team=team, defaults={"plan": Plan.objects.get(slug=selectors.FREE)}
    )
    return account


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
    if selectors.has_live_subscription(account):
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
