"""A team's plan over time: plan spans (from Stripe's subscription events or the operator), assignment, and
the limits a plan gives the gateway.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from accounts.models import Team, User
from accounts.services import audit_record
from billing import selectors
from billing.models import (
    BillingAccount,
    MeterReport,
    MeterReportStatus,
    Plan,
    PlanSpan,
)
from billing.services.checkout import account_ensure


def plan_limits_publish(*, team: Team | None, plan: Plan) -> None:
    """Tell the gateway side what the plan allows the team's endpoints (team None: teams on no plan, Free's)."""
    from endpoints.services import plan_limit_set

    plan_limit_set(team=team, rate_limit_rps=plan.rate_limit_rps)


def plan_limits_everywhere(*, plan: Plan) -> None:
    """The plan's limits changed: publish them for every team on it (and as the default, for Free)."""
    if plan.slug == selectors.FREE:
        plan_limits_publish(team=None, plan=plan)
    for account in BillingAccount.objects.filter(plan=plan).select_related("team"):
        plan_limits_publish(team=account.team, plan=plan)


def plan_assign(*, team: Team, plan: Plan, actor: User | None = None, source: str = "operator") -> BillingAccount:
    """The operator puts the team on a plan (Enterprise, say, or the demo's Growth): from now on, like a switch in the
    Customer Portal — a plan segment starts, and the plan's limits reach the gateway."""
    account = account_ensure(team=team)
    before = account.plan
    with transaction.atomic():
        BillingAccount.objects.filter(pk=account.pk).update(plan=plan)
        if before.pk != plan.pk:
            plan_span_record(team=team, plan=plan, at=timezone.now(), source=source, previous=before)
            audit_record(action="billing.plan_assigned", actor=actor, team=team,
                         before={"plan": before.pk}, after={"plan": plan.pk})  # fmt: skip
        plan_limits_publish(team=team, plan=plan)
    account.refresh_from_db()
    return account


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
