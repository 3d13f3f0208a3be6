"""The Budgets page: who may see and set budgets, field errors next to their fields, stopped traffic shown."""

from __future__ import annotations

import pytest

from alerts.models import Budget
from alerts.services import budget_create, budgets_evaluate
from analytics import aggregation


@pytest.fixture
def page(team_a):
    return f"/t/{team_a.slug}/budgets/"


def test_finance_sets_a_budget_and_sees_it_with_its_use(client_for, member_of, team_a, usage, page):
    finance = member_of("finance")
    client = client_for(finance)
    response = client.post(page, {"name": "Monthly cap", "scope": "endpoint", "endpoint": usage.endpoint.pk,
                                  "key": "", "period": "month", "amount": "5000", "thresholds": "50, 90%, 100",
                                  "action": "stop"})  # fmt: skip
    assert response.status_code == 302
    budget = Budget.objects.get(team=team_a)
    assert (budget.scope, budget.endpoint, budget.thresholds, budget.action) == ("endpoint", usage.endpoint,
                                                                                 [50, 90, 100], "stop")  # fmt: skip
    html = client.get(page).content.decode()
    assert "Monthly cap" in html
    assert "0 of 5,000 units" in html
    assert 'aria-label="Monthly cap: 0.0 % used"' in html


def test_bad_input_is_shown_next_to_its_field_and_changes_nothing(client_for, owner_a, team_a, page):
    response = client_for(owner_a).post(page, {"name": "x", "scope": "team", "period": "day", "amount": "10",
                                               "thresholds": "half", "action": "alert"})  # fmt: skip
    assert response.status_code == 400
    html = response.content.decode()
    assert "Thresholds are whole percentages" in html
    assert "Daily budgets are for keys" in html
    assert not Budget.objects.exists()


@pytest.mark.parametrize("role", ["developer", "viewer"])
def test_developers_and_viewers_see_budgets_but_cannot_set_them(client_for, member_of, owner_a, team_a, page, role):
    budget_create(team=team_a, actor=owner_a, scope="team", name="Team cap", amount=100)
    client = client_for(member_of(role))
    html = client.get(page).content.decode()
    assert "Team cap" in html
    assert "New budget" not in html
    assert client.post(page, {"name": "y", "scope": "team", "period": "month", "amount": "1", "thresholds": "100",
                              "action": "alert"}).status_code == 403  # fmt: skip
    budget = Budget.objects.get()
    assert client.post(f"{page}{budget.pk}/delete").status_code == 403
    assert Budget.objects.count() == 1


def test_a_stop_shows_a_banner_on_team_pages_naming_the_budget(client_for, owner_a, member_of, team_a, usage, page):
    budget_create(team=team_a, actor=owner_a, scope="key", key=usage.key, name="Key cap", amount=1, action="stop")
    html = client_for(owner_a).get(f"/t/{team_a.slug}/").content.decode()
    assert "Traffic stopped." not in html  # nothing used yet
    usage.post([usage.record(0)])
    aggregation.aggregate_pending(time_budget_seconds=10)
    budgets_evaluate(budgets=list(Budget.objects.all()))
    for user in (owner_a, member_of("viewer")):
        html = client_for(user).get(f"/t/{team_a.slug}/").content.decode()
        assert "Traffic stopped." in html
        assert f"key {usage.key.name}" in html
        assert "Budget &quot;Key cap&quot; is used up until " in html
    assert "traffic stopped</span>" in client_for(owner_a).get(page).content.decode()


def test_another_teams_budget_is_404(client_for, outsider_b, owner_a, team_a, page):
    budget = budget_create(team=team_a, actor=owner_a, scope="team", name="A's", amount=100)
    client = client_for(outsider_b)
    assert client.get(page).status_code == 404
    assert client.post(f"{page}{budget.pk}/delete").status_code == 404
    assert Budget.objects.filter(pk=budget.pk).exists()


def test_update_and_delete(client_for, owner_a, team_a, page):
    budget = budget_create(team=team_a, actor=owner_a, scope="team", name="Cap", amount=100)
    client = client_for(owner_a)
    prefix = f"b{budget.pk}"

    def fields(amount: str, thresholds: str, action: str) -> dict[str, str]:
        values = {"name": "Cap", "amount": amount, "thresholds": thresholds, "action": action}
        return {f"{prefix}-{name}": value for name, value in values.items()}

    bad = client.post(f"{page}{budget.pk}/update", fields("0", "100", "alert"))
    assert bad.status_code == 400
    assert "Enter an amount above zero" in bad.content.decode()
    ok = client.post(f"{page}{budget.pk}/update", fields("250", "80, 100", "stop"))
    assert ok.status_code == 302
    budget.refresh_from_db()
    assert (budget.amount, budget.thresholds, budget.action) == (250, [80, 100], "stop")
    assert client.post(f"{page}{budget.pk}/delete").status_code == 302
    assert not Budget.objects.exists()


def test_a_bad_edit_reopens_its_dialog_with_the_error_next_to_the_field(client_for, owner_a, team_a, page):
    budget = budget_create(team=team_a, actor=owner_a, scope="team", name="Team cap", amount=100)
    prefix = f"b{budget.pk}"
    response = client_for(owner_a).post(f"{page}{budget.pk}/update", {
        f"{prefix}-name": "Team cap", f"{prefix}-amount": "100", f"{prefix}-thresholds": "150%, 2000",
        f"{prefix}-action": "alert", f"{prefix}-notify_roles": ["owner"],
    })  # fmt: skip
    assert response.status_code == 400
    html = response.content.decode()
    assert (
        f'id="edit-budget-{budget.pk}" class="drawer" aria-labelledby="edit-budget-{budget.pk}-title" data-open>'
        in html
    )
    assert f'id="id_{prefix}-thresholds_error" role="alert">Each threshold is a percentage from 1 to 1000.' in html
    budget.refresh_from_db()
    assert budget.thresholds == [50, 80, 100]


def test_the_page_reads_the_same_number_of_queries_however_many_budgets(client_for, owner_a, team_a, page):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(owner_a)
    client.get(page)  # the first page of a session also warms caches (the catalog) and the session
    counts = []
    for n in range(4):
        budget_create(team=team_a, actor=owner_a, scope="team", name=f"B{n}", amount=100, notify_members=[owner_a])
        with CaptureQueriesContext(connection) as queries:
            assert client.get(page).status_code == 200
        counts.append(len(queries))
    assert len(set(counts)) == 1, counts  # the members each edit form offers are read once for the page
