"""Dunning and the Free plan's hard stop: suspend and restore a team's keys for overdue invoices and a
used-up allowance.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from accounts.models import Role, Team
from billing import rating, selectors
from billing.models import BillingAccount, Invoice
from endpoints.models import TeamSuspension
from endpoints.selectors import team_suspension_reason
from endpoints.services import team_suspend, team_unsuspend

logger = logging.getLogger(__name__)


PAYMENT_OVERDUE = "Payment overdue: an invoice is unpaid past the grace period."
FREE_ALLOWANCE_USED = "The Free plan's monthly allowance is used up: upgrade, or keys resume next month."
BILLING_REASONS = (PAYMENT_OVERDUE, FREE_ALLOWANCE_USED)
NOTIFIED_ROLES = (Role.OWNER, Role.ADMIN, Role.FINANCE)


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
            exact = selectors.billable_units_total(team=team, start=segment.usage_start, end=now + timedelta(hours=1))
            units_this_period = rating.round_units(exact)
        if units_this_period >= allowance:
            return FREE_ALLOWANCE_USED
    return None


def enforce_team(*, team: Team, now: datetime | None = None, units_this_period: int | None = None) -> str | None:
    """Suspend the team's keys for an invoice overdue past the grace period or a used-up Free allowance, and
    restore them once neither holds. Suspensions made for other reasons (by the operator) are left alone."""
    now = now or timezone.now()
    reason = _suspension_reason(team=team, now=now, units_this_period=units_this_period)
    current = team_suspension_reason(team=team)
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
    now = now or timezone.now()
    start, _end = rating.period_of(now)
    per_team = selectors.usage_rows_by_team(start=start, end=now + timedelta(hours=1))
    services = selectors.service_catalog()
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
        units = rating.round_units(sum(exact.values(), Decimal(0)))
        try:
            enforce_team(team=team, now=now, units_this_period=units)
        except Exception:
            logger.exception("billing enforcement failed for team %s", team.pk)
    return len(team_ids)
