"""Budgets: create, change, delete, and evaluate them against the usage ledger.

`budgets_evaluate` runs right after each aggregation run for the keys that run touched (analytics sends
`rollups_updated`; alerts.apps connects it) and whenever a budget changes. A threshold crossed fires once per budget,
period and threshold (the unique BudgetFiring row decides, in the database); its email goes out after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from operator import mul
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from accounts.models import Team, User
from accounts.services import audit_record
from alerts.models import DEFAULT_THRESHOLDS, MAX_THRESHOLDS, Budget, BudgetFiring, default_recipient_roles
from alerts.notify import recipients_clean, recipients_of
from analytics import selectors as usage
from billing import rating
from billing import selectors as billing
from billing.selectors import service_catalog
from endpoints.models import ApiKey, Endpoint, TrafficStop
from endpoints.services import traffic_resume, traffic_stop
from project import mail
from project.errors import ServiceError
from webhooks.services import event_emit

logger = logging.getLogger(__name__)

EDITABLE_FIELDS = ("name", "amount", "thresholds", "period", "action", "forecast", "notify_roles", "notify_members")
# What the config feed says when a budget stops traffic (the gateway answers 402), or a cap does (429).
STOP_REASONS = {
    Budget.Origin.BUDGET: "budget_exceeded",
    Budget.Origin.KEY_CAP: "daily_cap_reached",
    Budget.Origin.ENDPOINT_CAP: "monthly_cap_reached",
}


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
    measure = fields.get("measure") or Budget.Measure.UNITS
    if measure not in Budget.Measure.values:
        errors["measure"] = "Measure billable units or usage charges."
    if period not in Budget.Period.values:
        errors["period"] = "Choose a billing month or a day."
    elif period == Budget.Period.DAY and scope != Budget.Scope.KEY:
        errors["period"] = "Daily budgets are for keys; a team or endpoint budget runs over the billing month."
    elif period == Budget.Period.DAY and measure == Budget.Measure.MONEY:
        errors["period"] = "A usage-charge budget runs over the billing month (charges are rated per month)."
    try:
        wanted = fields.get("notify_roles")
        wanted = default_recipient_roles() if wanted is None else wanted
        roles, _members = recipients_clean(team=fields["team"], roles=wanted, members=[])
    except ServiceError as error:
        errors[error.field or "notify_roles"] = error.message
    if errors:
        raise BudgetError(errors)
    return {"name": name, "amount": amount.quantize(Decimal("0.01")), "thresholds": cleaned, "period": period,
            "action": action, "measure": measure, "forecast": bool(fields.get("forecast")),
            "notify_roles": roles}  # fmt: skip


def _members(team: Team, members: Iterable[Any] | None) -> list[User]:
    try:
        return recipients_clean(team=team, roles=[], members=members)[1]
    except ServiceError as error:
        raise BudgetError({"notify_members": error.message}) from None


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
    notify_members: Iterable[Any] | None = None,
    origin: str = Budget.Origin.BUDGET,
    **fields: Any,
) -> Budget:
    """A new budget; thresholds already crossed this period fire at once (once each). `fields`: name, amount,
    measure, period, thresholds, action, forecast, notify_roles (BudgetError names each bad one)."""
    values = _validated({**fields, "scope": scope, "team": team}) | _target(team, scope, endpoint, key)
    members = _members(team, notify_members)
    if origin == Budget.Origin.BUDGET:
        Team.objects.select_for_update().filter(pk=team.pk).first()  # one creation at a time: the count holds
        if Budget.objects.filter(team=team, origin=origin).count() >= settings.TEAM_MAX_BUDGETS:
            raise ServiceError(
                "quota_exceeded",
                f"This team has {settings.TEAM_MAX_BUDGETS} budgets, the most it can have. Delete budgets it no "
                "longer needs, or contact support to raise the limit.",
            )
    budget = Budget.objects.create(team=team, scope=scope, created_by=actor, origin=origin, **values)
    budget.notify_members.set(members)
    audit_record(action="budget.created", actor=actor, team=team, target=budget, after=_snapshot(budget))
    budgets_evaluate(budgets=[budget])
    return budget


@transaction.atomic
def budget_update(*, budget: Budget, actor: User | None, origin: str = Budget.Origin.BUDGET, **changes: Any) -> Budget:
    """Change a budget's name, amount, thresholds, period or action. Lowering it below what is used fires the
    thresholds now crossed, each once; raising it above what is used (or making it alert only) resumes the traffic
    it stopped."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    budget = Budget.objects.select_for_update().select_related("team").get(pk=budget.pk)
    _check_editable(budget, origin)
    before = _snapshot(budget)
    members = changes.pop("notify_members", None)
    values = _validated({**before, **changes, "scope": budget.scope, "team": budget.team})
    for name, value in values.items():
        setattr(budget, name, value)
    budget.save()
    if members is not None:
        budget.notify_members.set(_members(budget.team, members))
    after = _snapshot(budget)
    if after == before:
        return budget
    audit_record(action="budget.updated", actor=actor, team=budget.team, target=budget, before=before, after=after)
    budgets_evaluate(budgets=[budget])
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, actor: User | None, origin: str = Budget.Origin.BUDGET) -> None:
    """Delete a budget; traffic it stopped resumes."""
    _check_editable(budget, origin)
    audit_record(action="budget.deleted", actor=actor, team=budget.team, target=budget, before=_snapshot(budget))
    if traffic_resume(source=budget.stop_source):
        summary = f"Traffic resumed: budget {budget.name} ({_scope_label(budget)}) was deleted."
        used = standings([budget])[0].used
        event_emit(team=budget.team, type="traffic.resumed", payload=_event(budget, used) | {"summary": summary})
    budget.delete()


def _check_editable(budget: Budget, origin: str) -> None:
    """A cap's budget changes with its cap (on the key's or the endpoint's page), nowhere else."""
    if budget.origin != origin:
        where = "key's" if budget.origin == Budget.Origin.KEY_CAP else "endpoint's"
        raise ServiceError(
            "budget_is_a_cap",
            f"This budget is the {where} cap; change or remove the cap on the {where} page.",
            status=409,
        )


def _snapshot(budget: Budget) -> dict[str, Any]:
    return {"name": budget.name, "scope": budget.scope, "endpoint": budget.endpoint and budget.endpoint.public_id,
            "key": budget.key and budget.key.key_id, "measure": budget.measure, "period": budget.period,
            "amount": str(budget.amount), "thresholds": list(budget.thresholds), "action": budget.action,
            "forecast": budget.forecast, "notify_roles": list(budget.notify_roles),
            "notify_members": sorted(u.email for u in budget.notify_members.all()) if budget.pk else []}  # fmt: skip


# --- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """Where a budget stands in its current period: what it used (units, or dollars of usage charges), and when this
    period's pace would use it all up, if that is before the period ends."""

    budget: Budget
    period_start: datetime
    period_end: datetime
    used: Decimal
    forecast_at: datetime | None = None

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


Units = dict[str, Decimal]  # exact billable units per service


def _charges(scope: Units, team: Units, prices: rating.Prices, factor: Decimal = Decimal(1)) -> Decimal:
    """The usage charge of `scope`'s units: the team's units (times `factor`, for a forecast) rated as billing rates
    them, each service's charge shared by its units. For the whole team it is the invoice's usage amount."""
    rated = rating.rate({service: units * factor for service, units in team.items()}, prices)
    charges = {line.service_id: line.amount for line in rated.lines}
    share = sum((charges.get(s, Decimal(0)) * units / team[s] for s, units in scope.items() if team.get(s)), Decimal(0))
    return rating.round_cents(share)


MIN_PACE_SHARE = 24  # a pace needs 1/24 of the period behind it (an hour of a day, ~a day of a month) to forecast


def _forecast(measure: Callable[[Decimal], Decimal], amount: Decimal, start: datetime, end: datetime,
              at: datetime) -> datetime | None:  # fmt: skip
    """When the period's pace so far (`measure(f)`: what it uses by start + f × elapsed) reaches `amount`, if that is
    before the period ends and it has not yet: the smallest such f, to the minute."""
    elapsed = at - start
    if elapsed * MIN_PACE_SHARE < end - start or measure(Decimal(1)) >= amount:
        return None
    last = Decimal((end - start) / elapsed)
    if measure(last) < amount:
        return None
    low, high = Decimal(1), last  # measure(low) < amount <= measure(high)
    while (high - low) * Decimal(elapsed.total_seconds()) > 60:
        middle = (low + high) / 2
        low, high = (middle, high) if measure(middle) < amount else (low, middle)
    return (start + elapsed * float(high)).replace(second=0, microsecond=0)


def standings(budgets: Iterable[Budget], at: datetime | None = None) -> list[Standing]:
    """The current standing of each budget in its period: billable units (billing's own rule) or their usage charge
    (billing's rating, at the team's plan prices), and its forecast. One usage query per team and period."""
    at = at or timezone.now()
    catalog = service_catalog()
    rows_by_period: dict[tuple[int, datetime, datetime], list[dict[str, Any]]] = {}
    prices_by_team: dict[int, rating.Prices] = {}
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
        scope = rating.exact_units_of(rows, catalog)
        measure: Callable[[Decimal], Decimal]
        if budget.measure == Budget.Measure.MONEY:
            if budget.team_id not in prices_by_team:
                prices_by_team[budget.team_id] = billing.usage_prices_at(team=budget.team, at=at)
            team = rating.exact_units_of(rows_by_period[key], catalog)
            measure = partial(_charges, scope, team, prices_by_team[budget.team_id])
        else:
            measure = partial(mul, sum(scope.values(), Decimal(0)))
        used = measure(Decimal(1))
        forecast_at = _forecast(measure, budget.amount, start, end, at)
        result.append(Standing(budget, start, end, used, forecast_at))
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
INSERT INTO alerts_budgetfiring (budget_id, period_start, kind, threshold, used, amount, forecast_at, fired_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (budget_id, period_start, kind, threshold) DO NOTHING
RETURNING id
"""


def budgets_evaluate(*, budgets: Iterable[Budget], at: datetime | None = None) -> list[BudgetFiring]:
    """Fire every threshold the budgets have crossed in their current period and not fired yet. The database decides
    what is new (a unique row per budget, period and threshold), so this is safe to run concurrently and again."""
    fired: list[int] = []
    with transaction.atomic(), connection.cursor() as cursor:
        standings_ = standings(budgets, at)
        for standing in standings_:
            due: list[tuple[str, int, datetime | None]] = [
                (BudgetFiring.Kind.THRESHOLD, threshold, None) for threshold in standing.crossed()
            ]
            if standing.budget.forecast and standing.forecast_at:
                due.append((BudgetFiring.Kind.FORECAST, 100, standing.forecast_at))
            budget, start, used = standing.budget, standing.period_start, standing.used
            for kind, threshold, forecast_at in due:
                cursor.execute(_FIRE_SQL, [budget.pk, start, kind, threshold, used, budget.amount, forecast_at])
                row = cursor.fetchone()
                if row:
                    fired.append(row[0])
        related = ("budget__team", "budget__endpoint", "budget__key")
        firings = list(BudgetFiring.objects.filter(pk__in=fired).select_related(*related).order_by("pk"))
        for firing in firings:
            forecast = firing.kind == BudgetFiring.Kind.FORECAST
            audit_record(
                action="budget.forecast" if forecast else "budget.threshold_crossed",
                team=firing.budget.team,
                target=firing.budget,
                after={
                    "threshold": firing.threshold,
                    "used": str(firing.used),
                    "amount": str(firing.amount),
                    "period_start": firing.period_start.isoformat(),
                    **({"forecast_at": firing.forecast_at.isoformat()} if firing.forecast_at else {}),
                },
                actor_email="gatehouse",
            )
            transaction.on_commit(partial(_notify, firing))
            _emit_firing(firing)
        sources = [standing.budget.stop_source for standing in standings_]
        stopped = Budget.ids_of_stop_sources(
            TrafficStop.objects.filter(source__in=sources).values_list("source", flat=True)
        )
        for standing in standings_:  # after the alerts: "crossed 100 %", then "traffic stopped"
            _enforce(standing, stopped=standing.budget.pk in stopped)
    return firings


def _enforce(standing: Standing, *, stopped: bool) -> None:
    """A stop-traffic budget at or over its amount stops its scope's traffic (through the config feed); under it (a
    new period, a raised amount) or alert-only, the stop it set is lifted. `stopped`: its stop was in force when the
    evaluation began (what is already so costs no query; traffic_stop and traffic_resume decide under a lock)."""
    budget = standing.budget
    over = budget.action == Budget.Action.STOP and standing.used >= budget.amount
    if over == stopped:
        return
    if over:
        reason = STOP_REASONS[Budget.Origin(budget.origin)]
        created = traffic_stop(
            team=budget.team,
            endpoint=budget.endpoint if budget.scope == Budget.Scope.ENDPOINT else None,
            key=budget.key if budget.scope == Budget.Scope.KEY else None,
            reason=reason,
            detail=_stop_detail(standing),
            source=budget.stop_source,
        )
        if created:
            summary = f"Traffic stopped: {budget.name} is used up ({_scope_label(budget)})."
            payload = _event(budget, standing.used) | {"reason": reason, "summary": summary}
            event_emit(team=budget.team, type="traffic.stopped", payload=payload)
    elif traffic_resume(source=budget.stop_source):
        summary = f"Traffic resumed: budget {budget.name} ({_scope_label(budget)})."
        payload = _event(budget, standing.used) | {"summary": summary}
        event_emit(team=budget.team, type="traffic.resumed", payload=payload)


def _stop_detail(standing: Standing) -> str:
    """What the banner and the feed's detail tell people: what is used up, when it lifts, and how to lift it now."""
    budget = standing.budget
    until = f"{standing.period_end:%d %b %Y %H:%M} UTC"
    if budget.origin == Budget.Origin.KEY_CAP:
        return (
            f"The key's daily cap of {budget.amount:,.0f} units is used up until {until}; raise it on the key's page."
        )
    if budget.origin == Budget.Origin.ENDPOINT_CAP:
        return (
            f"The endpoint's monthly cap of {budget.amount:,.0f} units is used up until {until}; raise it on its page."
        )
    return f'Budget "{budget.name}" is used up until {until}; raise or delete it to resume.'


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
            "origin": budget.origin,
            "endpoint_id": budget.endpoint.public_id if budget.endpoint else None,
            "key_id": budget.key.key_id if budget.key else None,
        },
        "used": str(rating.round_units(used) if budget.measure == Budget.Measure.UNITS else rating.round_cents(used)),
    }


def _emit_firing(firing: BudgetFiring) -> None:
    budget = firing.budget
    payload = _event(budget, firing.used) | {"threshold": firing.threshold,
                                             "period_start": firing.period_start.isoformat()}  # fmt: skip
    if firing.kind == BudgetFiring.Kind.FORECAST and firing.forecast_at:
        when = f"{firing.forecast_at:%d %b %Y %H:%M} UTC"
        summary = f"Budget {budget.name} ({_scope_label(budget)}): at this pace it is used up on {when}."
        event_emit(team=budget.team, type="budget.forecast",
                   payload=payload | {"forecast_at": firing.forecast_at.isoformat(), "summary": summary})  # fmt: skip
        return
    payload["summary"] = f"Budget {budget.name} ({_scope_label(budget)}) crossed {firing.threshold} %."
    event_emit(team=budget.team, type="budget.threshold_crossed", payload=payload)
    if firing.threshold >= 100:
        event_emit(team=budget.team, type="budget.exceeded", payload=payload)


def budgets_stopping() -> list[Budget]:
    """The budgets whose stop is in force (checked every few seconds: a new period lifts them)."""
    ids = Budget.ids_of_stop_sources(TrafficStop.objects.values_list("source", flat=True))
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


def figure(budget: Budget, value: Decimal, *, unit: bool = True) -> str:
    """An amount as people read it: 1,234 units (or 1,234, without the unit), or $12.34 (plans are priced in US
    dollars)."""
    if budget.measure == Budget.Measure.MONEY:
        return f"${value:,.2f}"
    return f"{rating.round_units(value):,}" + (" units" if unit else "")


def _notify(firing: BudgetFiring) -> None:
    budget = firing.budget
    link = settings.SITE_URL.rstrip("/") + reverse("budgets", kwargs={"team_slug": budget.team.slug})
    context = {
        "budget": budget,
        "team": budget.team,
        "firing": firing,
        "threshold": firing.threshold,
        "used": figure(budget, firing.used, unit=False),
        "amount": figure(budget, firing.amount),
        "percent": (firing.used * 100 / firing.amount).quantize(Decimal("0.1")),
        "scope_label": _scope_label(budget),
        "link": link,
    }
    for address in recipients_of(budget):
        mail.send(template="alerts/email/budget_threshold", to=address, context=context)


def _scope_label(budget: Budget) -> str:
    if budget.scope == Budget.Scope.KEY and budget.key is not None:
        return f"key {budget.key.name} ({budget.key.key_id})"
    if budget.scope == Budget.Scope.ENDPOINT and budget.endpoint is not None:
        return f"endpoint {budget.endpoint.name}"
    return f"team {budget.team.name}"
