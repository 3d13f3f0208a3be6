"""Budget housekeeping: a per-team limit, no audit entry for a change that changes nothing, recipients checked."""

from __future__ import annotations

import pytest

from accounts.models import AuditEvent
from alerts import services
from alerts.models import Budget
from alerts.notify import recipients_clean
from endpoints.services import api_key_update
from project.errors import ServiceError


def test_a_team_has_at_most_team_max_budgets_and_caps_do_not_count(settings, usage, team_a, owner_a):
    settings.TEAM_MAX_BUDGETS = 2
    for n in range(2):
        services.budget_create(team=team_a, actor=owner_a, scope="team", name=f"B{n}", amount=10)
    with pytest.raises(ServiceError) as raised:
        services.budget_create(team=team_a, actor=owner_a, scope="team", name="One too many", amount=10)
    assert raised.value.code == "quota_exceeded"
    api_key_update(key=usage.key, actor=owner_a, daily_unit_cap=100)  # a cap is not a budget the team set
    assert Budget.objects.filter(team=team_a).count() == 3


def test_saving_a_budget_unchanged_writes_no_audit_entry(team_a, owner_a):
    budget = services.budget_create(team=team_a, actor=owner_a, scope="team", name="Same", amount=10)
    services.budget_update(budget=budget, actor=owner_a, amount=10, name="Same")
    assert not AuditEvent.objects.filter(action="budget.updated").exists()
    services.budget_update(budget=budget, actor=owner_a, amount=11)
    assert AuditEvent.objects.filter(action="budget.updated").count() == 1


@pytest.mark.parametrize("member", ["²", "x", 3.5, "nobody@b.example"])
def test_recipients_must_be_members_given_by_id_or_email(team_a, member):
    with pytest.raises(ServiceError) as raised:
        recipients_clean(team=team_a, roles=[], members=[member])
    assert raised.value.field == "notify_members"


def test_recipients_by_id_or_email_and_roles_in_order(team_a, owner_a, member_of):
    finance = member_of("finance", "fran@a.example")
    roles, users = recipients_clean(
        team=team_a, roles=["finance", "owner"], members=[str(finance.pk), "ALICE@a.example"]
    )
    assert roles == ["owner", "finance"]
    assert users == sorted([owner_a, finance], key=lambda u: u.pk)
    with pytest.raises(ServiceError) as raised:
        recipients_clean(team=team_a, roles=["boss"], members=[])
    assert raised.value.field == "notify_roles"
