"""Budgets fire each threshold once per period, from the usage ledger, right after the aggregation run that crossed it.

Usage goes through the real gateway API, ingestion and aggregation; an eth_call success is 26 billable units (the
catalog's rule, which billing rates too)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.db import connection

from accounts.models import AuditEvent
from alerts import services, tasks
from alerts.models import Budget, BudgetFiring
from analytics import aggregation
from billing import rating
from endpoints import feed
from endpoints.services import api_key_create, endpoint_create
from webhooks.models import WebhookEvent

CALL = 26  # billable units of one successful eth_call


def _push(usage, count: int, *, key=None, **overrides) -> None:
    response = usage.post([usage.record(n, key=key, **overrides) for n in range(count)])
    assert response.status_code == 202, response.content


def _aggregate(capture) -> None:
    """One aggregation run, its after-commit work (the budget evaluation, the emails) included."""
    with capture(execute=True):
        aggregation.aggregate_pending(time_budget_seconds=10)


def _firings(budget: Budget) -> list[tuple[int, Decimal]]:
    return list(BudgetFiring.objects.filter(budget=budget).order_by("threshold").values_list("threshold", "used"))


@pytest.fixture
def finance(member_of):
    return member_of("finance", "fran@a.example")


@pytest.fixture
def developer(member_of):
    return member_of("developer", "dev@a.example")


def test_thresholds_fire_once_each_right_after_the_run_that_crossed_them(
    usage, team_a, owner_a, finance, developer, django_capture_on_commit_callbacks
):
    budget = services.budget_create(
        team=team_a, actor=owner_a, scope="team", name="Team month", amount=10 * CALL, thresholds=[50, 100]
    )
    assert _firings(budget) == []

    _push(usage, 4)
    _aggregate(django_capture_on_commit_callbacks)
    assert _firings(budget) == []  # 40 %

    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    assert _firings(budget) == [(50, Decimal(5 * CALL))]  # no compaction ran: the minute rollups are read
    assert sorted(m.to[0] for m in mail.outbox) == sorted(["fran@a.example", owner_a.email])  # who manages budgets
    assert "Team month: 50% of the budget used" in mail.outbox[0].subject
    assert "130 of 260 units" in mail.outbox[0].body

    _push(usage, 3)
    _aggregate(django_capture_on_commit_callbacks)
    assert [t for t, _used in _firings(budget)] == [50]  # 80 %: no threshold

    _push(usage, 4)
    _aggregate(django_capture_on_commit_callbacks)
    _push(usage, 4)
    _aggregate(django_capture_on_commit_callbacks)
    assert [t for t, _used in _firings(budget)] == [50, 100]  # 100 % fired once, not again at 160 %
    assert len(mail.outbox) == 4
    assert AuditEvent.objects.filter(action="budget.threshold_crossed", team=team_a).count() == 2

    # A redelivered task, a second run over the same ledger: nothing new.
    services.budgets_evaluate(budgets=[budget])
    services.evaluate_after_aggregation(key_pks=[usage.key.pk])
    assert len(_firings(budget)) == 2


def test_errors_and_other_keys_do_not_count_toward_a_key_budget(
    usage, team_a, owner_a, django_capture_on_commit_callbacks
):
    budget = services.budget_create(
        team=team_a, actor=owner_a, scope="key", key=usage.key, name="Server key", amount=2 * CALL, thresholds=[100]
    )
    other, _secret = api_key_create(endpoint=usage.endpoint, name="other", actor=owner_a)
    _push(usage, 5, key=other)
    _push(usage, 5, status=500, error_class="upstream")  # not billable
    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    assert _firings(budget) == []
    assert services.standings([budget])[0].used == CALL

    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    assert _firings(budget) == [(100, Decimal(2 * CALL))]


def test_an_endpoint_budget_counts_its_endpoint_only(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    other_endpoint = endpoint_create(team=team_a, name="Other", services=["eth-mainnet"], actor=owner_a)
    other_key, _secret = api_key_create(endpoint=other_endpoint, name="k", actor=owner_a)
    budget = services.budget_create(
        team=team_a, actor=owner_a, scope="endpoint", endpoint=usage.endpoint, name="Wallet", amount=3 * CALL,
        thresholds=[100],
    )  # fmt: skip
    _push(usage, 3, key=other_key)
    _aggregate(django_capture_on_commit_callbacks)
    assert _firings(budget) == []
    _push(usage, 3)
    _aggregate(django_capture_on_commit_callbacks)
    assert _firings(budget) == [(100, Decimal(3 * CALL))]


def test_lowering_a_budget_below_its_usage_fires_the_crossed_thresholds_once(
    usage, team_a, owner_a, django_capture_on_commit_callbacks
):
    _push(usage, 10)
    _aggregate(django_capture_on_commit_callbacks)
    budget = services.budget_create(team=team_a, actor=owner_a, scope="team", name="Big", amount=1000 * CALL)
    assert _firings(budget) == []
    with django_capture_on_commit_callbacks(execute=True):
        services.budget_update(budget=budget, actor=owner_a, amount=5 * CALL)
    assert [t for t, _used in _firings(budget)] == [50, 80, 100]  # the defaults, each once: not a storm
    assert len(mail.outbox) == 3  # one recipient (the owner), one email per threshold
    with django_capture_on_commit_callbacks(execute=True):
        services.budget_update(budget=budget, actor=owner_a, amount=4 * CALL)
    assert len(_firings(budget)) == 3
    assert len(mail.outbox) == 3
    assert AuditEvent.objects.filter(action="budget.updated", target_id=str(budget.pk)).count() == 2


def test_a_new_period_starts_from_zero(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    budget = services.budget_create(
        team=team_a, actor=owner_a, scope="team", name="Month", amount=2 * CALL, thresholds=[100]
    )
    _push(usage, 2)
    _aggregate(django_capture_on_commit_callbacks)
    (firing,) = BudgetFiring.objects.filter(budget=budget)
    start, end = rating.period_of(datetime.now(UTC))
    assert firing.period_start == start

    with time_machine.travel(end + timedelta(minutes=5), tick=False):
        assert services.standings([budget])[0].used == 0  # last month's usage is last month's
        services.budgets_evaluate(budgets=[budget])
        assert BudgetFiring.objects.filter(budget=budget).count() == 1


def test_a_daily_key_budget_counts_the_utc_day(usage, team_a, owner_a):
    budget = services.budget_create(
        team=team_a, actor=owner_a, scope="key", key=usage.key, name="Daily", amount=100, period="day"
    )
    standing = services.standings([budget])[0]
    assert standing.period_end - standing.period_start == timedelta(days=1)
    assert standing.period_start.hour == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluations_fire_each_threshold_once(usage, team_a, owner_a):
    _push(usage, 4)
    aggregation.aggregate_pending(time_budget_seconds=10)
    budget = Budget.objects.create(team=team_a, scope="team", name="Race", amount=2 * CALL, thresholds=[50, 100])
    barrier = threading.Barrier(4)
    fired: list[int] = []
    errors: list[BaseException] = []

    def evaluate() -> None:
        try:
            barrier.wait(10)
            fired.extend(f.threshold for f in services.budgets_evaluate(budgets=[budget]))
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
    assert sorted(fired) == [50, 100]  # four evaluations at once, each threshold fired by exactly one
    assert BudgetFiring.objects.filter(budget=budget).count() == 2
    assert len(mail.outbox) == 2


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "", "amount": 10}, "name"),
        ({"name": "x", "amount": 0}, "amount"),
        ({"name": "x", "amount": "lots"}, "amount"),
        ({"name": "x", "amount": 10, "thresholds": []}, "thresholds"),
        ({"name": "x", "amount": 10, "thresholds": [0, 50]}, "thresholds"),
        ({"name": "x", "amount": 10, "thresholds": ["half"]}, "thresholds"),
        ({"name": "x", "amount": 10, "thresholds": list(range(1, 13))}, "thresholds"),
        ({"name": "x", "amount": 10, "period": "day"}, "period"),  # a team budget runs over the billing month
        ({"name": "x", "amount": 10, "period": "week"}, "period"),
    ],
)
def test_bad_settings_are_refused_per_field_and_change_nothing(team_a, owner_a, fields, field):
    with pytest.raises(services.BudgetError) as refused:
        services.budget_create(team=team_a, actor=owner_a, scope="team", **fields)
    assert field in refused.value.errors
    assert refused.value.status == 400
    assert not Budget.objects.exists()


def test_another_teams_endpoint_or_key_is_refused(usage, team_a, owner_a, team_b, outsider_b):
    theirs = endpoint_create(team=team_b, name="B", services=["eth-mainnet"], actor=outsider_b)
    their_key, _secret = api_key_create(endpoint=theirs, name="b", actor=outsider_b)
    with pytest.raises(services.BudgetError) as refused:
        services.budget_create(team=team_a, actor=owner_a, scope="endpoint", endpoint=theirs, name="x", amount=1)
    assert "endpoint" in refused.value.errors
    with pytest.raises(services.BudgetError) as refused:
        services.budget_create(team=team_a, actor=owner_a, scope="key", key=their_key, name="x", amount=1)
    assert "key" in refused.value.errors
    assert not Budget.objects.exists()


def test_deleting_a_budget_is_audited_and_takes_its_firings(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    budget = services.budget_create(
        team=team_a, actor=owner_a, scope="team", name="Gone", amount=CALL, thresholds=[100]
    )
    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    assert BudgetFiring.objects.count() == 1
    services.budget_delete(budget=budget, actor=owner_a)
    assert not Budget.objects.exists()
    assert not BudgetFiring.objects.exists()
    assert AuditEvent.objects.filter(action="budget.deleted", team=team_a).exists()


# --- stopping traffic through the config feed ------------------------------------------------------


def _key_in_feed(key) -> tuple[str, str | None]:
    (record,) = [k for k in feed.snapshot()["keys"] if k["key_id"] == key.key_id]
    return record["status"], record["status_reason"]


def _changed_keys(since: int) -> dict[str, tuple[str, str | None]]:
    return {e["key"]["key_id"]: (e["key"]["status"], e["key"]["status_reason"])
            for e in feed.changes(since=since)["changes"] if e["type"] == "key"}  # fmt: skip


def test_a_stop_budget_stops_its_key_in_the_feed_and_raising_or_deleting_it_resumes(
    usage, team_a, owner_a, django_capture_on_commit_callbacks
):
    budget = services.budget_create(
        team=team_a, actor=owner_a, scope="key", key=usage.key, name="Cap", amount=2 * CALL, thresholds=[100],
        action="stop",
    )  # fmt: skip
    cursor = int(feed.snapshot()["cursor"])
    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    assert _key_in_feed(usage.key) == ("active", None)

    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)  # the run that crosses it stops the key, in the same breath
    assert _key_in_feed(usage.key) == ("suspended", "budget_exceeded")
    assert _changed_keys(cursor)[usage.key.key_id] == ("suspended", "budget_exceeded")
    assert _key_in_feed(usage.llm_key) == ("active", None)  # the endpoint's other key goes on
    assert AuditEvent.objects.filter(action="traffic.stopped", team=team_a).count() == 1

    cursor = int(feed.snapshot()["cursor"])
    services.budget_update(budget=budget, actor=owner_a, amount=10 * CALL)
    assert _changed_keys(cursor)[usage.key.key_id] == ("active", None)

    services.budget_update(budget=budget, actor=owner_a, amount=CALL)
    assert _key_in_feed(usage.key) == ("suspended", "budget_exceeded")
    services.budget_update(budget=budget, actor=owner_a, action="alert")  # alert only: never stops
    assert _key_in_feed(usage.key) == ("active", None)
    services.budget_update(budget=budget, actor=owner_a, action="stop")
    assert _key_in_feed(usage.key) == ("suspended", "budget_exceeded")

    cursor = int(feed.snapshot()["cursor"])
    services.budget_delete(budget=budget, actor=owner_a)
    assert _changed_keys(cursor)[usage.key.key_id] == ("active", None)
    assert AuditEvent.objects.filter(action="traffic.resumed", team=team_a).count() == 3

    # Every change went out as a webhook event too (delivered by the webhooks app to the team's endpoints).
    events = list(WebhookEvent.objects.filter(team=team_a).order_by("pk").values_list("type", flat=True))
    assert events == ["budget.threshold_crossed", "budget.exceeded", "traffic.stopped",  # the crossing run
                      "traffic.resumed", "traffic.stopped",  # raised, lowered (100 % already fired this period)
                      "traffic.resumed", "traffic.stopped",  # alert only, stop again
                      "traffic.resumed"]  # deleted  # fmt: skip
    stopped = WebhookEvent.objects.filter(type="traffic.stopped").first()
    assert stopped.payload["budget"]["key_id"] == usage.key.key_id
    assert stopped.payload["reason"] == "budget_exceeded"


def test_a_team_stop_budget_stops_every_endpoint_and_key(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    services.budget_create(
        team=team_a, actor=owner_a, scope="team", name="All", amount=CALL, thresholds=[100], action="stop"
    )
    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    snapshot = feed.snapshot()
    assert {(k["status"], k["status_reason"]) for k in snapshot["keys"]} == {("suspended", "budget_exceeded")}
    (endpoint,) = snapshot["endpoints"]
    assert (endpoint["status"], endpoint["status_reason"]) == ("suspended", "budget_exceeded")


def test_the_next_period_lifts_a_stop_within_the_sweep(usage, team_a, owner_a, django_capture_on_commit_callbacks):
    services.budget_create(
        team=team_a, actor=owner_a, scope="key", key=usage.key, name="Daily", amount=CALL, thresholds=[100],
        period="day", action="stop",
    )  # fmt: skip
    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    assert _key_in_feed(usage.key) == ("suspended", "budget_exceeded")
    _start, end = services.period_of("day", datetime.now(UTC))

    assert tasks.budgets_sweep() == {"budgets": 1}  # same day: still over, still stopped
    assert _key_in_feed(usage.key) == ("suspended", "budget_exceeded")
    with time_machine.travel(end + timedelta(seconds=1), tick=False):
        tasks.budgets_sweep()  # beat runs it every 5 s
        assert _key_in_feed(usage.key) == ("active", None)
        assert tasks.budgets_sweep() == {"budgets": 0}
