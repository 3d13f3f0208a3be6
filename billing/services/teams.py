"""Closing a team: its subscription is canceled first (usage reported, a final invoice), then its endpoints,
keys, tokens and members end.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from accounts.models import Team, User
from accounts.services import audit_record, team_close
from billing import selectors, stripe_client
from billing.models import (
    BillingAccount,
    SubscriptionStatus,
)
from billing.services.metering import meter_record, meter_send
from endpoints.services import team_gateway_config_delete
from project.errors import ServiceError


def subscription_cancel_for_team_deletion(*, team: Team, actor: User | None) -> None:
    """Before a team is deleted: report its closed usage hours to the meter, then cancel its subscription at Stripe
    now — a final invoice for the usage not invoiced yet, a prorated credit for the unused fee — so nothing keeps
    billing a team that no longer exists. Outside any transaction; a Stripe failure refuses the deletion."""
    account = selectors.account_of(team=team)
    if not selectors.has_live_subscription(account):
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


def team_delete(*, team: Team, actor: User, confirmation: str) -> None:
    """Delete (close) a team. Refused while an invoice is not final or unpaid. Its Stripe subscription is canceled
    first; then its endpoints, keys, tokens and invitations end and the gateway is told, members who cannot see
    billing leave, and the team stays closed: its invoices, meter ledger and billing account remain, readable by its
    owner, admins and finance (billing pages only) and by the operator.

    It lives in billing, the top app, because money decides it: an unpaid invoice refuses it, the subscription ends
    first, and the invoices stay."""
    if confirmation.strip() != team.slug:
        raise ServiceError("confirmation_mismatch", f"Type {team.slug} to confirm.", field="confirmation")
    if team.deleted_at is not None:
        raise ServiceError("team_deleted", "This team was already deleted.", status=404)
    blocker = selectors.team_deletion_blocker(team=team)
    if blocker is not None:
        raise ServiceError(blocker[0], blocker[1], status=409)
    subscription_cancel_for_team_deletion(team=team, actor=actor)  # Stripe first, outside the transaction
    with transaction.atomic():
        if team_close(team=team, actor=actor):
            team_gateway_config_delete(team=team)  # the gateway drops the team's keys on its next poll
