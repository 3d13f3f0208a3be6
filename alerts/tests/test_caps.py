"""A key's daily cap and an endpoint's monthly cap are budgets that stop traffic at 100 %: the ledger enforces them,
however many gateways served the usage, through the same machinery (one mechanism, not two)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import AuditEvent
from alerts import services
from alerts.models import Budget
from alerts.tests.test_budgets import CALL, _aggregate, _key_in_feed, _push
from endpoints import feed
from endpoints.services import api_key_create, api_key_revoke, api_key_rotate, api_key_update, endpoint_update
from project.errors import ServiceError
from webhooks.models import WebhookEvent


def _cap_budgets(team) -> list[tuple[str, str, str, Decimal, str, list[int], str]]:
    rows = Budget.objects.filter(team=team).exclude(origin="budget").order_by("pk")
    return list(rows.values_list("origin", "scope", "name", "amount", "period", "thresholds", "action"))


def test_a_keys_daily_cap_is_a_budget_kept_in_step_with_the_cap(usage, team_a, owner_a):
    key, _secret = api_key_create(endpoint=usage.endpoint, name="capped", actor=owner_a, daily_unit_cap=500)
    assert _cap_budgets(team_a) == [("key_cap", "key", "Daily cap · capped", Decimal(500), "day", [100], "stop")]
    assert Budget.objects.get(origin="key_cap").key == key

    api_key_update(key=key, actor=owner_a, daily_unit_cap=800, name="renamed")
    assert _cap_budgets(team_a) == [("key_cap", "key", "Daily cap · renamed", Decimal(800), "day", [100], "stop")]
    api_key_update(key=key, actor=owner_a, daily_unit_cap=None)
    assert _cap_budgets(team_a) == []

    api_key_update(key=key, actor=owner_a, daily_unit_cap=100)
    new, _secret = api_key_rotate(key=key, overlap="24h", actor=owner_a)  # the new key keeps the cap
    assert set(Budget.objects.filter(origin="key_cap").values_list("key_id", flat=True)) == {key.pk, new.pk}
    api_key_revoke(key=key, actor=owner_a)
    assert list(Budget.objects.filter(origin="key_cap").values_list("key_id", flat=True)) == [new.pk]
    actions = AuditEvent.objects.filter(team=team_a, action__startswith="budget.").values_list("action", flat=True)
    assert list(actions.order_by("pk")) == ["budget.created", "budget.updated", "budget.deleted", "budget.created",
                                            "budget.created", "budget.deleted"]  # fmt: skip


def test_a_key_over_its_daily_cap_is_stopped_in_the_feed_by_the_ledger_and_raising_the_cap_resumes_it(
    usage, team_a, owner_a, django_capture_on_commit_callbacks
):
    api_key_update(key=usage.key, actor=owner_a, daily_unit_cap=2 * CALL)
    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    assert _key_in_feed(usage.key) == ("active", None)
    _push(usage, 1)  # one gateway or ten: the ledger has both relays
    _aggregate(django_capture_on_commit_callbacks)
    assert _key_in_feed(usage.key) == ("suspended", "daily_cap_reached")
    (record,) = [k for k in feed.snapshot()["keys"] if k["key_id"] == usage.key.key_id]
    assert record["daily_unit_cap"] == 2 * CALL  # still published: the gateway counts locally between updates
    stopped = WebhookEvent.objects.get(team=team_a, type="traffic.stopped")
    assert stopped.payload["reason"] == "daily_cap_reached"
    assert stopped.payload["budget"]["origin"] == "key_cap"

    api_key_update(key=usage.key, actor=owner_a, daily_unit_cap=3 * CALL)
    assert _key_in_feed(usage.key) == ("active", None)
    api_key_update(key=usage.key, actor=owner_a, daily_unit_cap=CALL)
    assert _key_in_feed(usage.key) == ("suspended", "daily_cap_reached")
    api_key_update(key=usage.key, actor=owner_a, daily_unit_cap=None)  # no cap: no stop
    assert _key_in_feed(usage.key) == ("active", None)


def test_an_endpoint_over_its_monthly_cap_is_stopped_with_its_keys(
    usage, team_a, owner_a, django_capture_on_commit_callbacks
):
    endpoint_update(endpoint=usage.endpoint, actor=owner_a, monthly_unit_cap=CALL)
    assert _cap_budgets(team_a) == [("endpoint_cap", "endpoint", "Monthly cap · Wallet", Decimal(CALL), "month",
                                     [100], "stop")]  # fmt: skip
    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    snapshot = feed.snapshot()
    (endpoint,) = snapshot["endpoints"]
    assert (endpoint["status"], endpoint["status_reason"]) == ("suspended", "monthly_cap_reached")
    assert {(k["status"], k["status_reason"]) for k in snapshot["keys"]} == {("suspended", "monthly_cap_reached")}
    endpoint_update(endpoint=usage.endpoint, actor=owner_a, monthly_unit_cap=None)
    (endpoint,) = feed.snapshot()["endpoints"]
    assert (endpoint["status"], endpoint["status_reason"]) == ("active", None)
    assert _cap_budgets(team_a) == []


def test_a_caps_budget_is_changed_only_through_its_cap(usage, team_a, owner_a):
    api_key_update(key=usage.key, actor=owner_a, daily_unit_cap=500)
    budget = Budget.objects.get(origin="key_cap")
    with pytest.raises(ServiceError) as raised:
        services.budget_update(budget=budget, actor=owner_a, amount=1)
    assert (raised.value.code, raised.value.status) == ("budget_is_a_cap", 409)
    with pytest.raises(ServiceError):
        services.budget_delete(budget=budget, actor=owner_a)
    assert Budget.objects.get(origin="key_cap").amount == 500
