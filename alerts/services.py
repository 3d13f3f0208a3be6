"""Budgets: create, change, delete, and evaluate them against the usage ledger.

`budgets_evaluate` runs right after each aggregation run for the keys that run touched (analytics sends
`rollups_updated`; alerts.apps connects it) and whenever a budget changes. A threshold crossed fires once per budget,
period and threshold (the unique BudgetFiring row decides, in the database); its email goes out after commit."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Team, User
from accounts.permissions import allows
from accounts.services import audit_record
from alerts.models import DEFAULT_THRESHOLDS, MAX_THRESHOLDS, Budget, BudgetFiring
from analytics import selectors as usage
from billing import rating
from billing.selectors import service_catalog
from endpoints.models import ApiKey, Endpoint, TrafficStop
from endpoints.services import traffic_resume, traffic_stop
from project import mail
from project.errors import ServiceError
from webhooks.services import event_emit

logger = logging.getLogger(__name__)

EDITABLE_FIELDS = ("name", "amount", "thresholds", "period", "action")
STOP_REASON = "budget_exceeded"  # what the config feed says, and the gateway answers 402 for


class BudgetError(ServiceError):
    """Invalid budget settings: `errors` maps each field to its message (forms and the API show them per field)."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("invalid_budget", " ".join(errors.values()), status=400)
        self.errors = errors


def period_of(period: str, at: datetime) -> tuple[datetime, datetime]:
    """The budget period holding `at`: the billing month (billing.rating's) or the UTC day."""
    if period == Budget.Period.DAY:
        start = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    return rating.period_of(at)


def _validated(fields: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, str] = {}
    name = str(fields.get("name") or "").strip()
    if not name:
        errors["name"] = "Give the budget a name."
    elif len(name) > 80:
        errors["name"] = "At most 80 characters."
    try:
        amount = Decimal(str(fields.get("amount")))
    except ArithmeticError:
        amount = Decimal(0)
    if not amount.is_finite() or amount <= 0 or amount >= Decimal("1e17"):
        errors["amount"] = "Enter an amount above zero."
    thresholds = fields.get("thresholds")
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    try:
        cleaned = sorted({int(t) for t in thresholds})
    except (TypeError, ValueError):
        cleaned = []
        errors["thresholds"] = "Thresholds are whole percentages, e.g. 50, 80, 100."
    if "thresholds" not in errors and not cleaned:
        errors["thresholds"] = "Give at least one threshold, e.g. 100."
    elif any(t < 1 or t > 1000 for t in cleaned):
        errors["thresholds"] = "Each threshold is a percentage from 1 to 1000."
    elif len(cleaned) > MAX_THRESHOLDS:
        errors["thresholds"] = f"At most {MAX_THRESHOLDS} thresholds."
    action = fields.get("action") or Budget.Action.ALERT
    if action not in Budget.Action.values:
        errors["action"] = "Choose alert only or stop traffic."
    period = fields.get("period") or Budget.Period.MONTH
    scope = fields.get("scope")
    if period not in Budget.Period.values:
        errors["period"] = "Choose a billing month or a day."
    elif period == Budget.Period.DAY and scope != Budget.Scope.KEY:
        errors["period"] = "Daily budgets are for keys; a team or endpoint budget runs over the billing month."
    if errors:
        raise BudgetError(errors)
    return {"name": name, "amount": amount.quantize(Decimal("0.01")), "thresholds": cleaned, "period": period,
            "action": action}  # fmt: skip


def _target(team: Team, scope: str, endpoint: Endpoint | None, key: ApiKey | None) -> dict[str, Any]:
    if scope == Budget.Scope.TEAM:
        return {"endpoint": None, "key": None}
    if scope == Budget.Scope.ENDPOINT:
        if endpoint is None or endpoint.team_id != team.pk or endpoint.deleted_at is not None:
            raise BudgetError({"endpoint": "Choose one of the team's endpoints."})
        return {"endpoint": endpoint, "key": None}
    if scope == Budget.Scope.KEY:
        if key is None or key.team_id != team.pk or key.revoked_at is not None:
            raise BudgetError({"key": "Choose one of the team's live keys."})
        return {"endpoint": key.endpoint, "key": key}
    raise BudgetError({"scope": "Choose a scope: the team, an endpoint or a key."})


@transaction.atomic
def budget_create(
    *,
    team: Team,
    actor: User | None,
    scope: str,
    endpoint: Endpoint | None = None,
    key: ApiKey | None = None,
    **fields: Any,
) -> Budget:
    """A new budget; thresholds already crossed this period fire at once (once each)."""
    values = _validated({**fields, "scope": scope}) | _target(team, scope, endpoint, key)
    budget = Budget.objects.create(team=team, scope=scope, created_by=actor, **values)
    audit_record(action="budget.created", actor=actor, team=team, target=budget, after=_snapshot(budget))
    budgets_evaluate(budgets=[budget])
    return budget


@transaction.atomic
def budget_update(*, budget: Budget, actor: User | None, **changes: Any) -> Budget:
    """Change a budget's name, amount, thresholds, period or action. Lowering it below what is used fires the
    thresholds now crossed, each once; raising it above what is used (or making it alert only) resumes the traffic
    it stopped."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    budget = Budget.objects.select_for_update().get(pk=budget.pk)
    before = _snapshot(budget)
    values = _validated({**before, **changes, "scope": budget.scope})
    for name, value in values.items():
        setattr(budget, name, value)
    budget.save()
    audit_record(
        action="budget.updated", actor=actor, team=budget.team, target=budget, before=before, after=_snapshot(budget)
    )
    budgets_evaluate(budgets=[budget])
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, actor: User | None) -> None:
    """Delete a budget; traffic it stopped resumes."""
    audit_record(action="budget.deleted", actor=actor, team=budget.team, target=budget, before=_snapshot(budget))
    if traffic_resume(source=_source(budget)):
        summary = f"Traffic resumed: budget {budget.name} ({_scope_label(budget)}) was deleted."
        used = standings([budget])[0].used
        event_emit(team=budget.team, type="traffic.resumed", payload=_event(budget, used) | {"summary": summary})
    budget.delete()


def _snapshot(budget: Budget) -> dict[str, Any]:
    return {"name": budget.name, "scope": budget.scope, "endpoint": budget.endpoint and budget.endpoint.public_id,
            "key": budget.key and budget.key.key_id, "measure": budget.measure, "period": budget.period,
            "amount": str(budget.amount), "thresholds": list(budget.thresholds), "action": budget.action}  # fmt: skip


# --- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """Where a budget stands in its current period."""

    budget: Budget
    period_start: datetime
    period_end: datetime
    used: Decimal

    @property
    def percent(self) -> Decimal:
        return self.used * 100 / self.budget.amount

    def crossed(self) -> list[int]:
        return [t for t in self.budget.thresholds if self.used * 100 >= self.budget.amount * t]


def _usage_rows(team: Team, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The team's rating rows per endpoint, key, service and method over [start, end): what every budget of the team
    reads its usage from (one query)."""
    return usage.usage_by(
        team=team,
        start=start,
        end=end,
        by=("endpoint", "key", "service", "method"),
        fields=rating.RATING_FIELDS,
        fresh=True,
    )


def standings(budgets: Iterable[Budget], at: datetime | None = None) -> list[Standing]:
    """The current standing of each budget: billable units (billing's own rule) used in its period."""
    at = at or timezone.now()
    catalog = service_catalog()
    rows_by_period: dict[tuple[int, datetime, datetime], list[dict[str, Any]]] = {}
    result = []
    for budget in budgets:
        start, end = period_of(budget.period, at)
        key = (budget.team_id, start, end)
        if key not in rows_by_period:
            rows_by_period[key] = _usage_rows(budget.team, start, end)
        rows = rows_by_period[key]
        if budget.scope == Budget.Scope.ENDPOINT:
            rows = [r for r in rows if r["endpoint_id"] == budget.endpoint_id]
        elif budget.scope == Budget.Scope.KEY:
            rows = [r for r in rows if r["key_id"] == budget.key_id]
        used = sum(rating.exact_units_of(rows, catalog).values(), Decimal(0))
        result.append(Standing(budget, start, end, used))
    return result


def budgets_touched(*, key_pks: Iterable[int]) -> list[Budget]:
    """The budgets that usage of these keys counts toward: theirs, their endpoints' and their teams'."""
    keys = list(ApiKey.objects.filter(pk__in=list(key_pks)).values_list("pk", "endpoint_id", "team_id"))
    if not keys:
        return []
    key_ids = {k for k, _e, _t in keys}
    endpoint_ids = {e for _k, e, _t in keys}
    team_ids = {t for _k, _e, t in keys}
    return list(
        Budget.objects.filter(
            Q(scope=Budget.Scope.KEY, key_id__in=key_ids)
            | Q(scope=Budget.Scope.ENDPOINT, endpoint_id__in=endpoint_ids)
            | Q(scope=Budget.Scope.TEAM, team_id__in=team_ids)
        ).select_related("team", "endpoint", "key")
    )


_FIRE_SQL = """
INSERT INTO alerts_budgetfiring (budget_id, period_start, threshold, used, amount, fired_at)
VALUES (%s, %s, %s, %s, %s, now())
ON CONFLICT (budget_id, period_start, threshold) DO NOTHING
RETURNING id
"""


def budgets_evaluate(*, budgets: Iterable[Budget], at: datetime | None = None) -> list[BudgetFiring]:
    """Fire every threshold the budgets have crossed in their current period and not fired yet. The database decides
    what is new (a unique row per budget, period and threshold), so this is safe to run concurrently and again."""
    fired: list[int] = []
    with transaction.atomic(), connection.cursor() as cursor:
        standings_ = standings(budgets, at)
        for standing in standings_:
            for threshold in standing.crossed():
                cursor.execute(
                    _FIRE_SQL,
                    [standing.budget.pk, standing.period_start, threshold, standing.used, standing.budget.amount],
                )
                row = cursor.fetchone()
                if row:
                    fired.append(row[0])
        related = ("budget__team", "budget__endpoint", "budget__key")
        firings = list(BudgetFiring.objects.filter(pk__in=fired).select_related(*related))
        for firing in firings:
            audit_record(
                action="budget.threshold_crossed",
                team=firing.budget.team,
                target=firing.budget,
                after={
                    "threshold": firing.threshold,
                    "used": str(firing.used),
                    "amount": str(firing.amount),
                    "period_start": firing.period_start.isoformat(),
                },
                actor_email="gatehouse",
            )
            transaction.on_commit(partial(_notify, firing))
            _emit_firing(firing)
        for standing in standings_:  # after the alerts: "crossed 100 %", then "traffic stopped"
            _enforce(standing)
    return firings


def _source(budget: Budget) -> str:
    return f"budget:{budget.pk}"


def _enforce(standing: Standing) -> None:
    """A stop-traffic budget at or over its amount stops its scope's traffic (through the config feed); under it (a
    new period, a raised amount) or alert-only, the stop it set is lifted."""
    budget = standing.budget
    if budget.action == Budget.Action.STOP and standing.used >= budget.amount:
        stopped = traffic_stop(
            team=budget.team,
            endpoint=budget.endpoint if budget.scope == Budget.Scope.ENDPOINT else None,
            key=budget.key if budget.scope == Budget.Scope.KEY else None,
            reason=STOP_REASON,
            detail=f'Budget "{budget.name}" is used up for this period; raise or delete it to resume.',
            source=_source(budget),
        )
        if stopped:
            summary = f"Traffic stopped: budget {budget.name} is used up ({_scope_label(budget)})."
            payload = _event(budget, standing.used) | {"reason": STOP_REASON, "summary": summary}
            event_emit(team=budget.team, type="traffic.stopped", payload=payload)
    elif traffic_resume(source=_source(budget)):
        summary = f"Traffic resumed: budget {budget.name} ({_scope_label(budget)})."
        payload = _event(budget, standing.used) | {"summary": summary}
        event_emit(team=budget.team, type="traffic.resumed", payload=payload)


def _event(budget: Budget, used: Decimal) -> dict[str, Any]:
    """What every budget event says about its budget (webhook payload `data`)."""
    return {
        "budget": {
            "id": budget.pk,
            "name": budget.name,
            "scope": budget.scope,
            "period": budget.period,
            "amount": str(budget.amount),
            "measure": budget.measure,
            "action": budget.action,
            "endpoint_id": budget.endpoint.public_id if budget.endpoint else None,
            "key_id": budget.key.key_id if budget.key else None,
        },
        "used": str(rating.round_units(used)),
    }


def _emit_firing(firing: BudgetFiring) -> None:
    budget = firing.budget
    payload = _event(budget, firing.used) | {
        "threshold": firing.threshold,
        "period_start": firing.period_start.isoformat(),
        "summary": f"Budget {budget.name} ({_scope_label(budget)}) crossed {firing.threshold} %.",
    }
    event_emit(team=budget.team, type="budget.threshold_crossed", payload=payload)
    if firing.threshold >= 100:
        event_emit(team=budget.team, type="budget.exceeded", payload=payload)


def budgets_stopping() -> list[Budget]:
    """The budgets whose stop is in force (checked every few seconds: a new period lifts them)."""
    sources = TrafficStop.objects.filter(source__startswith="budget:").values_list("source", flat=True)
    ids = [int(source.removeprefix("budget:")) for source in sources]
    return list(Budget.objects.filter(pk__in=ids).select_related("team", "endpoint", "key"))


def evaluate_after_aggregation(*, key_pks: Iterable[int], **_: Any) -> None:
    """analytics' rollups_updated receiver: evaluate the budgets the run's keys count toward. Never lets a budget
    problem fail the aggregation run that called it (it is logged)."""
    try:
        budgets = budgets_touched(key_pks=key_pks)
        if budgets:
            budgets_evaluate(budgets=budgets)
    except Exception:
        logger.exception("budget evaluation after aggregation failed")


# --- notification ---------------------------------------------------------------------------------


def _recipients(team: Team) -> list[str]:
    """Who hears about budgets: the members who may manage them (owner, admins, finance)."""
    members = Membership.objects.filter(team=team).select_related("user").order_by("pk")
    return [m.user.email for m in members if allows(m, "budgets.manage") and m.user.is_active]


def _notify(firing: BudgetFiring) -> None:
    budget = firing.budget
    link = settings.SITE_URL.rstrip("/") + reverse("team_home", kwargs={"team_slug": budget.team.slug})
    context = {
        "budget": budget,
        "team": budget.team,
        "threshold": firing.threshold,
        "used": rating.round_units(firing.used),
        "amount": firing.amount,
        "percent": (firing.used * 100 / firing.amount).quantize(Decimal("0.1")),
        "scope_label": _scope_label(budget),
        "link": link,
    }
    for address in _recipients(budget.team):
        mail.send(template="alerts/email/budget_threshold", to=address, context=context)


def _scope_label(budget: Budget) -> str:
    if budget.scope == Budget.Scope.KEY and budget.key is not None:
        return f"key {budget.key.name} ({budget.key.key_id})"
    if budget.scope == Budget.Scope.ENDPOINT and budget.endpoint is not None:
        return f"endpoint {budget.endpoint.name}"
    return f"team {budget.team.name}"
