"""Health alert rules: create, change, delete, and evaluate them against the minute rollups.

A rule is evaluated right after each aggregation run, for the rules of the teams (and endpoints) whose keys the run
touched (analytics sends `rollups_updated`; alerts.apps connects `rules_after_aggregation`); every 30 s by the beat
(`alerts.tasks.alert_rules_sweep`), so a rule resolves when traffic stops and no run happens; and when it is created
or changed.

Each state change notifies exactly once. The change is a conditional UPDATE (`… WHERE state = <old>`): of two
evaluations racing on a rule, the database lets one change it — that one writes the AlertChange row, the audit record
and the webhook event in the same transaction, and emails after commit — and the other finds nothing to change. An
evaluation older than the rule's last one changes nothing either (`evaluated_at <= now`), so a slow evaluator can't
undo what a newer one saw."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role, Team, User
from accounts.services import audit_record
from alerts.models import AlertChange, AlertRule
from alerts.notify import recipients_clean, recipients_of
from alerts.services import BudgetError
from analytics import selectors as usage
from billing.selectors import service_catalog
from endpoints.models import ApiKey, Endpoint
from project import mail
from project.errors import ServiceError
from webhooks.services import event_emit

logger = logging.getLogger(__name__)

EDITABLE_FIELDS = ("name", "metric", "threshold", "window_minutes", "endpoint", "service", "min_relays", "enabled",
                   "notify_roles", "notify_members")  # fmt: skip
# Who hears about a new rule unless told otherwise: the roles that manage health alerts (alerts.manage).
DEFAULT_RULE_ROLES = (Role.OWNER, Role.ADMIN, Role.DEVELOPER)
MAX_WINDOW_MINUTES = 1440
MAX_MIN_RELAYS = 1_000_000_000
MAX_LATENCY_MS = Decimal(3_600_000)  # an hour: a p95 above that is not a latency objective
CENTS = Decimal("0.01")
OK, FIRING = AlertRule.State.OK, AlertRule.State.FIRING


class AlertRuleError(BudgetError):
    """Invalid alert rule settings: `errors` maps each field to its message (forms and the API show them per
    field)."""

    def __init__(self, errors: dict[str, str]):
        super().__init__(errors)
        self.code = "invalid_alert_rule"


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _validated(team: Team, fields: dict[str, Any]) -> dict[str, Any]:
    """The rule's settings, cleaned; AlertRuleError names every bad field at once."""
    errors: dict[str, str] = {}
    name = str(fields.get("name") or "").strip()
    if not name:
        errors["name"] = "Give the rule a name."
    elif len(name) > 80:
        errors["name"] = "At most 80 characters."
    metric = fields.get("metric")
    if metric not in AlertRule.Metric.values:
        errors["metric"] = "Choose the error rate or the p95 latency."
    threshold = _decimal(fields.get("threshold"))
    if threshold is not None and threshold.adjusted() < 12:  # kept as stored and shown, then checked
        threshold = threshold.quantize(CENTS, ROUND_HALF_UP)
    if threshold is None or threshold < 0:
        errors["threshold"] = "Enter a number, zero or more."
    elif metric == AlertRule.Metric.ERROR_RATE and threshold >= 100:
        errors["threshold"] = "An error rate threshold is a percentage below 100."
    elif metric == AlertRule.Metric.P95_LATENCY and threshold > MAX_LATENCY_MS:
        errors["threshold"] = f"A latency threshold is at most {MAX_LATENCY_MS:,} ms."
    window = _whole(fields.get("window_minutes"))
    if window is None or not 1 <= window <= MAX_WINDOW_MINUTES:
        errors["window_minutes"] = f"A window is 1 to {MAX_WINDOW_MINUTES} minutes."
    min_relays = _whole(fields.get("min_relays"))
    if min_relays is None or not 1 <= min_relays <= MAX_MIN_RELAYS:
        errors["min_relays"] = "At least 1 relay."
    endpoint = fields.get("endpoint")
    if endpoint is not None and (
        not isinstance(endpoint, Endpoint) or endpoint.team_id != team.pk or endpoint.deleted_at is not None
    ):
        errors["endpoint"] = "Choose one of the team's endpoints, or none for all of them."
        endpoint = None
    service = str(fields.get("service") or "").strip()
    if service and service not in service_catalog():
        errors["service"] = "Choose a service of the catalog, or none for all of them."
    elif service and endpoint is not None and not endpoint.services.filter(pk=service).exists():
        errors["service"] = f"The endpoint {endpoint.name} does not serve {service}."
    try:
        wanted = fields.get("notify_roles")
        roles, _none = recipients_clean(team=team, roles=DEFAULT_RULE_ROLES if wanted is None else wanted, members=[])
    except ServiceError as error:
        errors[error.field or "notify_roles"] = error.message
    if errors:
        raise AlertRuleError(errors)
    assert threshold is not None  # for mypy: an error above otherwise
    return {"name": name, "metric": metric, "threshold": threshold, "window_minutes": window,
            "min_relays": min_relays, "endpoint": endpoint, "service": service,
            "enabled": bool(fields.get("enabled", True)), "notify_roles": roles}  # fmt: skip


def _members(team: Team, members: Iterable[Any] | None) -> list[User]:
    try:
        return recipients_clean(team=team, roles=[], members=members)[1]
    except ServiceError as error:
        raise AlertRuleError({"notify_members": error.message}) from None


def _snapshot(rule: AlertRule) -> dict[str, Any]:
    return {"name": rule.name, "metric": rule.metric, "threshold": str(rule.threshold),
            "window_minutes": rule.window_minutes, "endpoint": rule.endpoint.public_id if rule.endpoint else None,
            "service": rule.service, "min_relays": rule.min_relays, "enabled": rule.enabled,
            "notify_roles": list(rule.notify_roles),
            "notify_members": sorted(u.email for u in rule.notify_members.all()) if rule.pk else []}  # fmt: skip


@transaction.atomic
def alert_rule_create(
    *,
    team: Team,
    actor: User | None,
    name: str,
    metric: str,
    threshold: Decimal | int | str,
    window_minutes: int = 5,
    endpoint: Endpoint | None = None,
    service: str = "",
    min_relays: int = 20,
    enabled: bool = True,
    notify_roles: Iterable[str] | None = None,
    notify_members: Iterable[Any] | None = None,
) -> AlertRule:
    """A new health alert rule, evaluated at once (a rule set during an incident fires now). AlertRuleError names
    each bad field; notify_roles None: the owner, admins and developers."""
    values = _validated(team, {"name": name, "metric": metric, "threshold": threshold, "window_minutes": window_minutes,
                               "endpoint": endpoint, "service": service, "min_relays": min_relays, "enabled": enabled,
                               "notify_roles": notify_roles})  # fmt: skip
    members = _members(team, notify_members)
    rule = AlertRule.objects.create(team=team, created_by=actor, **values)
    rule.notify_members.set(members)
    audit_record(action="alert_rule.created", actor=actor, team=team, target=rule, after=_snapshot(rule))
    rules_evaluate(rules=[rule])
    return rule


@transaction.atomic
def alert_rule_update(*, rule: AlertRule, actor: User | None, **changes: Any) -> AlertRule:
    """Change a rule (any of EDITABLE_FIELDS), then evaluate it with its new settings. Disabling a firing rule
    resolves it (notified once, so receivers close what they opened)."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    rule = AlertRule.objects.select_for_update(of=("self",)).select_related("team", "endpoint").get(pk=rule.pk)
    before = _snapshot(rule)
    members = changes.pop("notify_members", None)
    current = {"name": rule.name, "metric": rule.metric, "threshold": rule.threshold,
               "window_minutes": rule.window_minutes, "endpoint": rule.endpoint, "service": rule.service,
               "min_relays": rule.min_relays, "enabled": rule.enabled, "notify_roles": rule.notify_roles}  # fmt: skip
    values = _validated(rule.team, current | changes)
    for name, value in values.items():
        setattr(rule, name, value)
    rule.save()
    if members is not None:
        rule.notify_members.set(_members(rule.team, members))
    audit_record(
        action="alert_rule.updated", actor=actor, team=rule.team, target=rule, before=before, after=_snapshot(rule)
    )
    if rule.enabled:
        rules_evaluate(rules=[rule])
    else:
        _stand_down(rule, cause="disabled")
    return rule


@transaction.atomic
def alert_rule_delete(*, rule: AlertRule, actor: User | None) -> None:
    """Delete a rule and its history. A firing rule resolves first (notified once)."""
    audit_record(action="alert_rule.deleted", actor=actor, team=rule.team, target=rule, before=_snapshot(rule))
    _stand_down(rule, cause="deleted")
    rule.delete()


def _stand_down(rule: AlertRule, *, cause: str) -> None:
    """A firing rule that stops being evaluated (disabled, deleted) resolves, once."""
    now = timezone.now()
    if AlertRule.objects.filter(pk=rule.pk, state=FIRING).update(state=OK, state_since=now):
        reading = Reading(rule.last_value, rule.last_relays)
        _record(rule, state=OK, reading=reading, at=now, cause=cause)


# --- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """A rule's figure over its window (None: nothing to measure) and the relays it is measured over."""

    value: Decimal | None
    relays: int

    def measured(self, rule: AlertRule) -> bool:
        """Enough relays to judge by: at least the rule's min_relays (fewer never fire)."""
        return self.relays >= rule.min_relays and self.value is not None

    def breaches(self, rule: AlertRule) -> bool:
        """Measured, and above the threshold."""
        return self.measured(rule) and self.value is not None and self.value > rule.threshold


def window_of(rule: AlertRule, now: datetime) -> tuple[datetime, datetime]:
    """The minute buckets a rule reads at `now`: every one overlapping the last `window_minutes`, the current
    (still filling) minute included."""
    start = (now - timedelta(minutes=rule.window_minutes)).replace(second=0, microsecond=0)
    return start, now


def _reading(figures: usage.HealthFigures, metric: str) -> Reading:
    """The rule's figure, rounded as shown (two decimals) before it is compared. An error rate leaves user errors
    out, of the errors and of the relays it is over (the success rate's definition); a latency is over every relay."""
    if metric == AlertRule.Metric.ERROR_RATE:
        counted = figures.counted
        value = Decimal(figures.errors) * 100 / counted if counted > 0 else None
        return Reading(value.quantize(CENTS, ROUND_HALF_UP) if value is not None else None, counted)
    p95 = figures.p95_ms
    return Reading(Decimal(str(p95)).quantize(CENTS, ROUND_HALF_UP) if p95 is not None else None, figures.relays)


def rules_evaluate(*, rules: Iterable[AlertRule], now: datetime | None = None) -> list[AlertChange]:
    """Evaluate the enabled rules at `now`: record each one's figure, and change the state of those that crossed
    their threshold either way (each change notified once, even under concurrent evaluations). Returns the changes
    this call made."""
    now = now or timezone.now()
    figures: dict[tuple[Any, ...], usage.HealthFigures] = {}
    changes = []
    for rule in sorted((r for r in rules if r.enabled), key=lambda r: r.pk):  # pk order: no lock-order deadlocks
        start, end = window_of(rule, now)
        p95 = rule.metric == AlertRule.Metric.P95_LATENCY
        scope = (rule.team_id, rule.endpoint_id, rule.service, start, p95)
        if scope not in figures:  # rules on the same traffic and window read it once
            figures[scope] = usage.health_figures(
                team=rule.team, start=start, end=end, endpoint_id=rule.endpoint_id, service=rule.service, p95=p95
            )
        change = _apply(rule, _reading(figures[scope], rule.metric), now)
        if change is not None:
            changes.append(change)
    return changes


def _apply(rule: AlertRule, reading: Reading, now: datetime) -> AlertChange | None:
    new = FIRING if reading.breaches(rule) else OK
    old = OK if new == FIRING else FIRING
    seen = {"last_value": reading.value, "last_relays": reading.relays, "evaluated_at": now}
    in_order = AlertRule.objects.filter(Q(evaluated_at__isnull=True) | Q(evaluated_at__lte=now), pk=rule.pk)
    change = None
    if rule.state != new:  # as loaded: if another evaluation changed it since, the next one reads that (the sweep)
        with transaction.atomic():
            if in_order.filter(state=old).update(state=new, state_since=now, **seen):
                change = _record(rule, state=new, reading=reading, at=now)
    if change is None:
        in_order.update(**seen)  # no change (or another evaluation made it): the figure only
    for name, value in seen.items():
        setattr(rule, name, value)
    return change


def _record(rule: AlertRule, *, state: str, reading: Reading, at: datetime, cause: str = "") -> AlertChange:
    """What follows a state change this caller made: the history row, the audit record, the webhook event, and the
    email (after commit)."""
    rule.state, rule.state_since = state, at
    change = AlertChange.objects.create(
        rule=rule, state=state, value=reading.value, relays=reading.relays, threshold=rule.threshold, at=at
    )
    summary = _summary(rule, state, reading, cause)
    audit_record(
        action="alert_rule.firing" if state == FIRING else "alert_rule.resolved",
        team=rule.team,
        target=rule,
        after={
            "value": _plain(reading.value),
            "relays": reading.relays,
            "threshold": str(rule.threshold),
            "cause": cause or "evaluation",
        },
        actor_email="gatehouse",
    )
    payload = _event(rule, reading, at) | {"summary": summary}
    event_emit(team=rule.team, type="alert.firing" if state == FIRING else "alert.resolved", payload=payload)
    context = {
        "rule": rule,
        "team": rule.team,
        "summary": summary,
        "figure": figure_text(rule.metric, reading.value),
        "threshold": figure_text(rule.metric, rule.threshold),
        "relays": reading.relays,
        "metric": _metric_label(rule.metric),
        "measured": reading.measured(rule),
        "scope_label": scope_label(rule),
        "cause": cause,
        "at": at,
        "link": _link("alert_rules", rule.team),
        "usage_link": _link("team_home", rule.team),
    }
    template = "alerts/email/alert_firing" if state == FIRING else "alerts/email/alert_resolved"
    transaction.on_commit(partial(_notify, template, recipients_of(rule), context))
    return change


def rules_touched(*, key_pks: Iterable[int]) -> list[AlertRule]:
    """The enabled rules that usage of these keys counts toward: their teams' rules on every endpoint or on theirs."""
    keys = list(ApiKey.objects.filter(pk__in=list(key_pks)).values_list("endpoint_id", "team_id"))
    if not keys:
        return []
    endpoint_ids = {endpoint for endpoint, _team in keys}
    team_ids = {team for _endpoint, team in keys}
    rules = _evaluated().filter(team_id__in=team_ids).filter(Q(endpoint__isnull=True) | Q(endpoint_id__in=endpoint_ids))
    return list(rules)


def rules_enabled() -> list[AlertRule]:
    """Every enabled rule of a live team (the sweep evaluates them all: a window empties without any aggregation
    run)."""
    return list(_evaluated().order_by("pk"))


def _evaluated() -> QuerySet[AlertRule]:
    """The rules evaluations look at: enabled, of teams not deleted."""
    rules = AlertRule.objects.filter(enabled=True, team__deleted_at__isnull=True)
    return rules.select_related("team", "endpoint")


def rules_after_aggregation(*, key_pks: Iterable[int], **_: Any) -> None:
    """analytics' rollups_updated receiver: evaluate the rules the run's keys count toward. Never lets an alert rule
    problem fail the aggregation run that called it (it is logged)."""
    try:
        rules = rules_touched(key_pks=key_pks)
        if rules:
            rules_evaluate(rules=rules)
    except Exception:
        logger.exception("alert rule evaluation after aggregation failed")


# --- what a change says ---------------------------------------------------------------------------


def scope_label(rule: AlertRule) -> str:
    """The traffic a rule watches, in words."""
    if rule.endpoint is not None and rule.service:
        return f"endpoint {rule.endpoint.name}, service {rule.service}"
    if rule.endpoint is not None:
        return f"endpoint {rule.endpoint.name}"
    if rule.service:
        return f"service {rule.service} on every endpoint"
    return f"every endpoint of {rule.team.name}"


def _plain(value: Decimal | None) -> str | None:
    """A figure without trailing zeros: 7.5, 500, 21.81."""
    if value is None:
        return None
    text = f"{value:.2f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def figure_text(metric: str, value: Decimal | None) -> str:
    """A rule's figure or threshold with its unit: "7.5 %", "812 ms"."""
    if value is None:
        return "no data"
    return f"{_plain(value)} %" if metric == AlertRule.Metric.ERROR_RATE else f"{_plain(value)} ms"


def _metric_label(metric: str) -> str:
    return "error rate" if metric == AlertRule.Metric.ERROR_RATE else "p95 latency"


def _summary(rule: AlertRule, state: str, reading: Reading, cause: str) -> str:
    """One line for people (emails' gist, Slack-format webhooks)."""
    what = f"{_metric_label(rule.metric)} {figure_text(rule.metric, reading.value)}"
    window = f"over the last {rule.window_minutes} min, {reading.relays} relays"
    limit = f"threshold {figure_text(rule.metric, rule.threshold)}"
    if state == FIRING:
        return f"Alert {rule.name} is firing: {what} {window} ({limit}) on {scope_label(rule)}."
    if cause:
        return f"Alert {rule.name} resolved: the rule was {cause} ({scope_label(rule)})."
    if not reading.measured(rule):
        return (
            f"Alert {rule.name} resolved: too little traffic to measure ({reading.relays} relays over the last "
            f"{rule.window_minutes} min, fewer than {rule.min_relays}) on {scope_label(rule)}."
        )
    return f"Alert {rule.name} resolved: {what} {window} ({limit}) on {scope_label(rule)}."


def _event(rule: AlertRule, reading: Reading, at: datetime) -> dict[str, Any]:
    """What an alert event says (webhook payload `data`)."""
    return {
        "rule": {
            "id": rule.pk,
            "name": rule.name,
            "metric": rule.metric,
            "threshold": str(rule.threshold),
            "window_minutes": rule.window_minutes,
            "min_relays": rule.min_relays,
            "endpoint_id": rule.endpoint.public_id if rule.endpoint else None,
            "service": rule.service or None,
        },
        "state": rule.state,
        "value": str(reading.value) if reading.value is not None else None,
        "relays": reading.relays,
        "since": at.isoformat(),
    }


def _link(name: str, team: Team) -> str:
    return settings.SITE_URL.rstrip("/") + reverse(name, kwargs={"team_slug": team.slug})


def _notify(template: str, addresses: list[str], context: dict[str, Any]) -> None:
    for address in addresses:
        mail.send(template=template, to=address, context=context)
