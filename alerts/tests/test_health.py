"""Health alert rules go ok → firing → resolved from the minute rollups, notifying once per change.

Usage goes through the real gateway API, ingestion and aggregation (whose rollups_updated signal evaluates the rules);
the records of `usage.record` all sit in one minute, the last whole one before the test started."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.db import connection

from accounts.models import AuditEvent
from alerts import health, tasks
from alerts.health import AlertRuleError
from alerts.models import AlertChange, AlertRule
from alerts.tests.test_budgets import _aggregate, _push
from analytics import aggregation, histogram
from analytics.selectors import health_figures
from endpoints.services import api_key_create, endpoint_create
from webhooks.models import WebhookEvent

UPSTREAM = {"status": 502, "error_class": "upstream"}
GATEWAY = {"status": 504, "error_class": "gateway"}
USER = {"status": 429, "error_class": "user"}


@pytest.fixture
def developer(member_of):
    return member_of("developer", "dev@a.example")


@pytest.fixture
def finance(member_of):
    return member_of("finance", "fran@a.example")


def _rule(team, actor, **fields) -> AlertRule:
    values = {"name": "Errors", "metric": "error_rate", "threshold": 10, "min_relays": 10} | fields
    return health.alert_rule_create(team=team, actor=actor, **values)


def _minute(usage):
    return usage.now.replace(second=0)


def _changes(rule: AlertRule) -> list[tuple[str, Decimal | None, int]]:
    return list(AlertChange.objects.filter(rule=rule).order_by("at", "pk").values_list("state", "value", "relays"))


def _events(team) -> list[str]:
    return list(WebhookEvent.objects.filter(team=team).order_by("pk").values_list("type", flat=True))


# --- the selector ----------------------------------------------------------------------------------


def test_health_figures_are_the_windows_relays_errors_and_p95(usage, team_a, owner_a):
    other_endpoint = endpoint_create(team=team_a, name="Other", services=["eth-mainnet"], actor=owner_a)
    other_key, _secret = api_key_create(endpoint=other_endpoint, name="k", actor=owner_a)
    _push(usage, 10)
    _push(usage, 3, **USER)
    _push(usage, 2, **UPSTREAM)
    _push(usage, 1, latency_ms=900.0, **GATEWAY)
    _push(usage, 4, service="base", **UPSTREAM)
    _push(usage, 5, key=other_key, **UPSTREAM)
    aggregation.aggregate_pending(time_budget_seconds=10)
    start = _minute(usage)
    end = start + timedelta(minutes=1)

    team = health_figures(team=team_a, start=start, end=end)
    assert (team.relays, team.errors_user, team.errors, team.counted) == (25, 3, 12, 22)
    assert team.error_rate == 12 / 22

    endpoint = health_figures(team=team_a, start=start, end=end, endpoint_id=usage.endpoint.pk)
    assert (endpoint.relays, endpoint.errors_user, endpoint.errors) == (20, 3, 7)
    eth = health_figures(team=team_a, start=start, end=end, endpoint_id=usage.endpoint.pk, service="eth-mainnet")
    assert (eth.relays, eth.errors_user, eth.errors) == (16, 3, 3)
    assert eth.error_rate == 3 / 13  # user errors leave the denominator: 1 − success rate
    # 16 relays: the p95 is the 16th smallest (nearest rank), the 900 ms one, read from the minute histograms.
    assert eth.p95_ms == histogram.bucket_value(histogram.bucket_of(900.0))
    base = health_figures(team=team_a, start=start, end=end, service="base", p95=False)
    assert (base.relays, base.errors, base.p95_ms) == (4, 4, None)

    # [start, end): the minute before and the minute after hold nothing.
    assert health_figures(team=team_a, start=end, end=end + timedelta(minutes=5)).relays == 0
    empty = health_figures(team=team_a, start=start - timedelta(minutes=5), end=start)
    assert (empty.relays, empty.error_rate, empty.p95_ms) == (0, None, None)


# --- ok → firing → resolved -------------------------------------------------------------------------


def test_a_rule_fires_once_and_resolves_once_right_after_the_runs(
    usage, team_a, owner_a, developer, finance, django_capture_on_commit_callbacks
):
    rule = _rule(team_a, owner_a, name="Wallet errors", endpoint=usage.endpoint)
    _push(usage, 20)
    _aggregate(django_capture_on_commit_callbacks)
    rule.refresh_from_db()
    assert (rule.state, rule.last_value, rule.last_relays) == ("ok", Decimal("0.00"), 20)
    assert mail.outbox == []

    _push(usage, 10, **UPSTREAM)
    _aggregate(django_capture_on_commit_callbacks)  # 10 of 30: 33.33 %
    rule.refresh_from_db()
    assert (rule.state, rule.last_value, rule.last_relays) == ("firing", Decimal("33.33"), 30)
    assert _changes(rule) == [("firing", Decimal("33.33"), 30)]
    assert sorted(m.to[0] for m in mail.outbox) == sorted([owner_a.email, "dev@a.example"])  # not finance
    subject = mail.outbox[0].subject
    assert subject == "[Gatehouse] Firing: Wallet errors — error rate 33.33 % (above 10 %) on endpoint Wallet"
    assert "is 33.33 % over the last 5 minutes (30 relays), above its threshold of 10 %" in mail.outbox[0].body
    assert f"/t/{team_a.slug}/alerts/" in mail.outbox[0].body
    (event,) = WebhookEvent.objects.filter(team=team_a, type="alert.firing")
    assert event.payload["summary"] == (
        "Alert Wallet errors is firing: error rate 33.33 % over the last 5 min, 30 relays (threshold 10 %) on "
        "endpoint Wallet."
    )
    assert event.payload["rule"] | {"id": 0} == {
        "id": 0, "name": "Wallet errors", "metric": "error_rate", "threshold": "10.00", "window_minutes": 5,
        "min_relays": 10, "endpoint_id": usage.endpoint.public_id, "service": None,
    }  # fmt: skip
    assert (event.payload["state"], event.payload["value"], event.payload["relays"]) == ("firing", "33.33", 30)

    # Still firing, run after run and evaluation after evaluation: nothing new.
    for _ in range(2):
        _push(usage, 5, **GATEWAY)
        _aggregate(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        health.rules_evaluate(rules=[rule])
        tasks.alert_rules_sweep()
    rule.refresh_from_db()
    assert (rule.state, rule.last_value, rule.last_relays) == ("firing", Decimal("50.00"), 40)
    assert len(_changes(rule)) == 1
    assert len(mail.outbox) == 2
    assert _events(team_a) == ["alert.firing"]

    # Healthy traffic dilutes the errors below 10 %: resolved, once.
    _push(usage, 200)
    _aggregate(django_capture_on_commit_callbacks)  # 20 errors of 240: 8.33 %
    rule.refresh_from_db()
    assert rule.state == "ok"
    assert _changes(rule) == [("firing", Decimal("33.33"), 30), ("ok", Decimal("8.33"), 240)]
    assert len(mail.outbox) == 4
    assert mail.outbox[2].subject == "[Gatehouse] Resolved: Wallet errors on endpoint Wallet"
    assert "is 8.33 % over the last 5 minutes (240 relays), no longer above its threshold of 10 %" in (
        mail.outbox[2].body
    )
    assert _events(team_a) == ["alert.firing", "alert.resolved"]
    audit = AuditEvent.objects.filter(team=team_a, target_id=str(rule.pk)).order_by("pk")
    assert list(audit.values_list("action", "actor_email")) == [
        ("alert_rule.created", owner_a.email), ("alert_rule.firing", "gatehouse"), ("alert_rule.resolved", "gatehouse")
    ]  # fmt: skip

    with django_capture_on_commit_callbacks(execute=True):
        health.rules_after_aggregation(key_pks=[usage.key.pk])  # a redelivered run: nothing new
    assert len(_changes(rule)) == 2
    assert len(mail.outbox) == 4


def test_user_errors_count_neither_as_errors_nor_toward_the_minimum(
    usage, team_a, owner_a, django_capture_on_commit_callbacks
):
    rule = _rule(team_a, owner_a, threshold=5, min_relays=10)
    _push(usage, 20)
    _push(usage, 49, **USER)  # bad keys and rate limits: the client's doing, not an outage
    _aggregate(django_capture_on_commit_callbacks)
    rule.refresh_from_db()
    assert (rule.state, rule.last_value, rule.last_relays) == ("ok", Decimal("0.00"), 20)

    other = _rule(team_a, owner_a, name="Small", threshold=5, min_relays=30)
    _push(usage, 5, **UPSTREAM)  # 5 of 25 counted relays: 20 %, but 25 < 30 (the 49 user errors don't make it 74)
    _aggregate(django_capture_on_commit_callbacks)
    rule.refresh_from_db()
    other.refresh_from_db()
    assert (rule.state, rule.last_value, rule.last_relays) == ("firing", Decimal("20.00"), 25)
    assert (other.state, other.last_value, other.last_relays) == ("ok", Decimal("20.00"), 25)
    assert AlertChange.objects.filter(rule=other).count() == 0


def test_fewer_relays_than_the_minimum_never_fire(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    rule = _rule(team_a, owner_a, min_relays=20)
    _push(usage, 19, **UPSTREAM)
    _aggregate(django_capture_on_commit_callbacks)
    rule.refresh_from_db()
    assert (rule.state, rule.last_value, rule.last_relays) == ("ok", Decimal("100.00"), 19)
    assert mail.outbox == []

    _push(usage, 1, **UPSTREAM)
    _aggregate(django_capture_on_commit_callbacks)
    rule.refresh_from_db()
    assert (rule.state, rule.last_relays) == ("firing", 20)


def test_rules_watch_their_endpoint_and_service_only(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    other_endpoint = endpoint_create(team=team_a, name="Other", services=["eth-mainnet", "base"], actor=owner_a)
    other_key, _secret = api_key_create(endpoint=other_endpoint, name="k", actor=owner_a)
    wallet = _rule(team_a, owner_a, name="Wallet", endpoint=usage.endpoint)
    other = _rule(team_a, owner_a, name="Other", endpoint=other_endpoint)
    base = _rule(team_a, owner_a, name="Base", service="base")
    eth = _rule(team_a, owner_a, name="Eth on wallet", endpoint=usage.endpoint, service="eth-mainnet")
    team = _rule(team_a, owner_a, name="Team")
    _push(usage, 20, **UPSTREAM)
    _push(usage, 20, key=other_key, service="base")
    _aggregate(django_capture_on_commit_callbacks)
    states = dict(AlertRule.objects.values_list("name", "state"))
    assert states == {"Wallet": "firing", "Other": "ok", "Base": "ok", "Eth on wallet": "firing", "Team": "firing"}
    values = dict(AlertRule.objects.values_list("name", "last_value"))
    assert values == {"Wallet": 100, "Other": 0, "Base": 0, "Eth on wallet": 100, "Team": 50}

    # A run of the other endpoint's keys evaluates the rules on every endpoint and on that one, not the wallet's.
    assert {r.name for r in health.rules_touched(key_pks=[other_key.pk])} == {"Other", "Base", "Team"}
    assert {r.pk for r in health.rules_touched(key_pks=[usage.key.pk])} == {wallet.pk, base.pk, eth.pk, team.pk}
    assert health.rules_touched(key_pks=[]) == []
    assert other.pk not in {r.pk for r in health.rules_touched(key_pks=[usage.key.pk])}


def test_a_p95_latency_rule_reads_the_minute_histograms(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    rule = _rule(team_a, owner_a, name="Slow", metric="p95_latency", threshold=500)
    _push(usage, 20)  # 20 to 26 ms
    _aggregate(django_capture_on_commit_callbacks)
    rule.refresh_from_db()
    expected = Decimal(str(histogram.bucket_value(histogram.bucket_of(26.0)))).quantize(Decimal("0.01"))
    assert (rule.state, rule.last_value, rule.last_relays) == ("ok", expected, 20)

    _push(usage, 2, latency_ms=1200.0, **USER)  # a latency is over every relay, user errors included
    _aggregate(django_capture_on_commit_callbacks)  # 2 of 22 slow: the 21st smallest is one of them
    rule.refresh_from_db()
    slow = Decimal(str(histogram.bucket_value(histogram.bucket_of(1200.0)))).quantize(Decimal("0.01"))
    assert (rule.state, rule.last_value, rule.last_relays) == ("firing", slow, 22)
    assert "p95 latency" in mail.outbox[0].subject
    assert f"{slow.normalize():f} ms" in mail.outbox[0].subject


# --- exactly once, under races and over time ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluations_change_a_rule_once(usage, team_a, owner_a):
    _push(usage, 30, **UPSTREAM)
    aggregation.aggregate_pending(time_budget_seconds=10)
    rule = AlertRule.objects.create(team=team_a, name="Race", metric="error_rate", threshold=5, min_relays=10)
    barrier = threading.Barrier(4)
    made: list[AlertChange] = []
    errors: list[BaseException] = []

    def evaluate() -> None:
        try:
            own = AlertRule.objects.select_related("team", "endpoint").get(pk=rule.pk)
            barrier.wait(10)
            made.extend(health.rules_evaluate(rules=[own]))
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(made) == 1  # four evaluations at once: one changed the rule, the others found nothing to change
    assert AlertChange.objects.filter(rule=rule).count() == 1
    assert _events(team_a) == ["alert.firing"]
    assert [m.to for m in mail.outbox] == [[owner_a.email]]
    rule.refresh_from_db()
    assert rule.state == "firing"


def test_an_older_evaluation_never_undoes_a_newer_one(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    _push(usage, 30, **UPSTREAM)
    _aggregate(django_capture_on_commit_callbacks)
    rule = AlertRule.objects.create(team=team_a, name="Late", metric="error_rate", threshold=5, min_relays=10)
    now = _minute(usage) + timedelta(minutes=1)
    assert [c.state for c in health.rules_evaluate(rules=[rule], now=now)] == ["firing"]
    stale = AlertRule.objects.get(pk=rule.pk)
    assert health.rules_evaluate(rules=[stale], now=now + timedelta(minutes=30)) != []  # window empty: resolved
    assert health.rules_evaluate(rules=[AlertRule.objects.get(pk=rule.pk)], now=now) == []  # a slow evaluator
    rule.refresh_from_db()
    assert (rule.state, rule.last_relays) == ("ok", 0)


def test_the_sweep_resolves_a_rule_once_its_window_empties(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    rule = _rule(team_a, owner_a, window_minutes=10)
    _push(usage, 20, **UPSTREAM)
    _aggregate(django_capture_on_commit_callbacks)
    assert AlertRule.objects.get(pk=rule.pk).state == "firing"
    minute = _minute(usage)

    # The same minute's data stays in the window for 10 minutes: still firing, nothing new.
    changes = health.rules_evaluate(rules=health.rules_enabled(), now=minute + timedelta(minutes=10, seconds=59))
    assert changes == []
    # Traffic stopped: no aggregation run happens, the beat's sweep sees the window empty.
    with (
        time_machine.travel(minute + timedelta(minutes=11, seconds=1), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert tasks.alert_rules_sweep() == {"rules": 1, "changes": 1}
        assert tasks.alert_rules_sweep() == {"rules": 1, "changes": 0}
    rule.refresh_from_db()
    assert (rule.state, rule.last_value, rule.last_relays) == ("ok", None, 0)
    assert _changes(rule) == [("firing", Decimal("100.00"), 20), ("ok", None, 0)]
    resolved = mail.outbox[-1]
    assert resolved.subject == f"[Gatehouse] Resolved: Errors on every endpoint of {team_a.name}"
    assert "too little traffic to measure" in resolved.body
    assert "0 relays over the last 10 minutes, fewer than its minimum of 10" in resolved.body
    assert _events(team_a) == ["alert.firing", "alert.resolved"]


def test_a_window_reads_every_minute_it_overlaps(usage, team_a, owner_a):
    rule = AlertRule(team=team_a, name="w", metric="error_rate", threshold=5, window_minutes=5)
    minute = _minute(usage)
    assert health.window_of(rule, minute + timedelta(seconds=30)) == (
        minute - timedelta(minutes=5),
        minute + timedelta(seconds=30),
    )
    assert health.window_of(rule, minute) == (minute - timedelta(minutes=5), minute)


def test_a_rule_set_during_an_incident_fires_at_once(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    _push(usage, 20, **UPSTREAM)
    _aggregate(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks() as after_commit:
        rule = _rule(team_a, owner_a)
    assert rule.state == "firing"
    assert mail.outbox == []  # nothing is sent before the change commits
    for callback in after_commit:
        callback()
    assert [m.subject for m in mail.outbox] == [
        f"[Gatehouse] Firing: Errors — error rate 100 % (above 10 %) on every endpoint of {team_a.name}"
    ]


def test_disabling_or_deleting_a_firing_rule_resolves_it_once(
    usage, team_a, owner_a, django_capture_on_commit_callbacks
):
    _push(usage, 20, **UPSTREAM)
    _aggregate(django_capture_on_commit_callbacks)
    first = _rule(team_a, owner_a, name="First")
    second = _rule(team_a, owner_a, name="Second")
    second_pk = second.pk
    with django_capture_on_commit_callbacks(execute=True):
        health.alert_rule_update(rule=first, actor=owner_a, enabled=False)
        health.alert_rule_update(rule=first, actor=owner_a, name="First, renamed")  # still disabled: nothing
        health.alert_rule_delete(rule=second, actor=owner_a)
    first.refresh_from_db()
    assert (first.state, first.enabled) == ("ok", False)
    assert [c[0] for c in _changes(first)] == ["firing", "ok"]
    assert _events(team_a) == ["alert.firing", "alert.firing", "alert.resolved", "alert.resolved"]
    resolved = WebhookEvent.objects.filter(type="alert.resolved").order_by("pk")
    assert [e.payload["summary"] for e in resolved] == [
        f"Alert First resolved: the rule was disabled (every endpoint of {team_a.name}).",
        f"Alert Second resolved: the rule was deleted (every endpoint of {team_a.name}).",
    ]
    assert [m.subject for m in mail.outbox[-2:]] == [
        f"[Gatehouse] Resolved: First on every endpoint of {team_a.name}",
        f"[Gatehouse] Resolved: Second on every endpoint of {team_a.name}",
    ]
    assert "the rule was deleted while it was firing" in mail.outbox[-1].body
    assert not AlertRule.objects.filter(pk=second_pk).exists()
    assert AuditEvent.objects.filter(action="alert_rule.deleted", target_id=str(second_pk)).count() == 1
    assert AuditEvent.objects.filter(action="alert_rule.updated", target_id=str(first.pk)).count() == 2

    with django_capture_on_commit_callbacks(execute=True):
        health.alert_rule_update(rule=first, actor=owner_a, enabled=True)  # on again, still breaching: fires
    assert [c[0] for c in _changes(first)] == ["firing", "ok", "firing"]


def test_a_failing_evaluation_never_fails_the_aggregation_run(usage, team_a, owner_a, monkeypatch, caplog):
    _rule(team_a, owner_a)

    def broken(**_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(health, "rules_evaluate", broken)
    health.rules_after_aggregation(key_pks=[usage.key.pk])
    assert "alert rule evaluation after aggregation failed" in caplog.text


def test_recipients_are_the_chosen_roles_and_members(usage, team_a, owner_a, developer, finance):
    rule = _rule(team_a, owner_a, notify_roles=["finance"], notify_members=["dev@a.example"])
    assert rule.notify_roles == ["finance"]
    assert [u.email for u in rule.notify_members.all()] == ["dev@a.example"]
    default = _rule(team_a, owner_a, name="Default")
    assert default.notify_roles == ["owner", "admin", "developer"]


# --- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 81}, "name"),
        ({"metric": "uptime"}, "metric"),
        ({"threshold": -1}, "threshold"),
        ({"threshold": "lots"}, "threshold"),
        ({"threshold": "NaN"}, "threshold"),
        ({"threshold": 100}, "threshold"),  # an error rate is below 100 %
        ({"metric": "p95_latency", "threshold": 3_600_001}, "threshold"),
        ({"window_minutes": 0}, "window_minutes"),
        ({"window_minutes": 1441}, "window_minutes"),
        ({"window_minutes": "five"}, "window_minutes"),
        ({"min_relays": 0}, "min_relays"),
        ({"service": "dogecoin"}, "service"),
        ({"notify_roles": ["boss"]}, "notify_roles"),
        ({"notify_members": ["stranger@x.example"]}, "notify_members"),
    ],
)
def test_bad_settings_are_refused_per_field_and_change_nothing(team_a, owner_a, fields, field):
    with pytest.raises(AlertRuleError) as refused:
        _rule(team_a, owner_a, **fields)
    assert field in refused.value.errors
    assert (refused.value.status, refused.value.code) == (400, "invalid_alert_rule")
    assert not AlertRule.objects.exists()
    assert not AuditEvent.objects.filter(action="alert_rule.created").exists()


def test_every_bad_field_is_named_at_once(team_a, owner_a):
    with pytest.raises(AlertRuleError) as refused:
        _rule(team_a, owner_a, name="", threshold=-5, window_minutes=0)
    assert set(refused.value.errors) == {"name", "threshold", "window_minutes"}


def test_another_teams_or_a_deleted_endpoint_is_refused(usage, team_a, owner_a, team_b, outsider_b):
    theirs = endpoint_create(team=team_b, name="B", services=["eth-mainnet"], actor=outsider_b)
    with pytest.raises(AlertRuleError) as refused:
        _rule(team_a, owner_a, endpoint=theirs)
    assert "endpoint" in refused.value.errors
    with pytest.raises(AlertRuleError) as refused:
        _rule(team_a, owner_a, endpoint=usage.endpoint, service="solana")  # not one of the endpoint's services
    assert refused.value.errors == {"service": "The endpoint Wallet does not serve solana."}
    assert not AlertRule.objects.exists()


def test_a_bad_change_changes_nothing(team_a, owner_a):
    rule = _rule(team_a, owner_a)
    before = AlertRule.objects.filter(pk=rule.pk).values().get()
    with pytest.raises(AlertRuleError):
        health.alert_rule_update(rule=rule, actor=owner_a, threshold=20, window_minutes=0)
    assert AlertRule.objects.filter(pk=rule.pk).values().get() == before
    with pytest.raises(ValueError, match="not editable"):
        health.alert_rule_update(rule=rule, actor=owner_a, state="firing")
