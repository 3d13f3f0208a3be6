"""Used vs amount where people look: the endpoint page, the key page and the overview's card; a key's cap set from
its row; a key stopped by its cap says so; a cap's budget is listed on the Budgets page but changed on its own page."""

from __future__ import annotations

import re

from django.test import Client

from accounts.services import management_token_create
from alerts.models import Budget
from alerts.services import budget_create
from alerts.tests.test_budgets import CALL, _aggregate, _push
from endpoints.services import api_key_update, endpoint_create, endpoint_update


def _meters(client, team, **params):
    return client.get(f"/t/{team.slug}/budgets/meters", params)


def test_the_endpoint_and_key_pages_show_their_caps_and_budgets_used(
    client_for, owner_a, team_a, usage, django_capture_on_commit_callbacks
):
    api_key_update(key=usage.key, actor=owner_a, daily_unit_cap=4 * CALL)
    endpoint_update(endpoint=usage.endpoint, actor=owner_a, monthly_unit_cap=100 * CALL)
    budget_create(team=team_a, actor=owner_a, scope="team", name="Team spend", amount=10 * CALL)
    _push(usage, 3)
    _aggregate(django_capture_on_commit_callbacks)
    client = client_for(owner_a)

    html = _meters(client, team_a, endpoint=usage.endpoint.public_id).content.decode()
    assert "Daily cap · server" in html
    assert "Monthly cap · Wallet" in html
    assert "Team spend" not in html  # the team's budget is not the endpoint's
    assert re.findall(r'data-testid="meter-used">([^<]*)<', html) == ["78 of 104 units", "78 of 2,600 units"]
    html = _meters(client, team_a, key=usage.key.key_id).content.decode()
    assert re.findall(r'data-testid="meter-used">([^<]*)<', html) == ["78 of 104 units"]
    html = _meters(client, team_a, key=usage.llm_key.key_id).content.decode()
    assert "No daily cap or budget on this key." in html

    card = _meters(client, team_a).content.decode()  # the overview: nearest their amount first
    names = [name.strip() for name in re.findall(r'<span class="meter-name">([^<]*)', card)]
    assert names == ["Daily cap · server", "Team spend", "Monthly cap · Wallet"]  # 75 %, 30 %, 3 %
    assert f'hx-get="/t/{team_a.slug}/budgets/meters"' in client.get(f"/t/{team_a.slug}/").content.decode()
    page = client.get(f"/t/{team_a.slug}/endpoints/{usage.endpoint.public_id}/").content.decode()
    assert f"/budgets/meters?endpoint={usage.endpoint.public_id}" in page
    assert (
        f"/budgets/meters?key={usage.key.key_id}"
        in client.get(f"/t/{team_a.slug}/keys/{usage.key.key_id}/usage/").content.decode()
    )


def test_meters_of_another_teams_endpoint_are_not_found(client_for, owner_a, team_a, outsider_b, team_b):
    theirs = endpoint_create(team=team_b, name="Theirs", services=["eth-mainnet"], actor=outsider_b)
    assert _meters(client_for(owner_a), team_a, endpoint=theirs.public_id).status_code == 404
    assert _meters(client_for(outsider_b), team_a).status_code == 404


def test_a_keys_cap_is_set_from_its_row_and_a_stopped_key_says_why(
    client_for, owner_a, team_a, usage, django_capture_on_commit_callbacks
):
    client = client_for(owner_a)
    keys_page = f"/t/{team_a.slug}/endpoints/{usage.endpoint.public_id}/keys/"
    response = client.post(f"/t/{team_a.slug}/keys/{usage.key.key_id}/cap", {"daily_unit_cap": "-5"})
    assert response.status_code == 400
    assert "server: Ensure this value is greater than or equal to 1." in response.content.decode()
    assert not Budget.objects.exists()

    response = client.post(f"/t/{team_a.slug}/keys/{usage.key.key_id}/cap", {"daily_unit_cap": str(CALL)})
    assert response.status_code == 302
    budget = Budget.objects.get(origin="key_cap")
    assert (budget.key, budget.amount) == (usage.key, CALL)
    _push(usage, 1)
    _aggregate(django_capture_on_commit_callbacks)
    row = client.get(keys_page).content.decode().split(f'id="key-{usage.key.key_id}"')[1].split("</tr>")[0]
    assert "suspended" in row
    assert "daily cap reached" in row
    _token, secret = management_token_create(team=team_a, name="ci", scopes=["read"], actor=owner_a)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get(f"/api/v1/teams/{team_a.slug}/keys/{usage.key.key_id}/")
    assert api.json()["status"] == "suspended"

    budgets_page = client.get(f"/t/{team_a.slug}/budgets/").content.decode()
    assert "Change the cap on the key" in budgets_page
    assert f'action="/t/{team_a.slug}/budgets/{budget.pk}/update"' not in budgets_page
    response = client.post(f"/t/{team_a.slug}/budgets/{budget.pk}/delete")
    assert response.status_code == 409
    assert "change or remove it on the key&#x27;s page" in response.content.decode()
    assert Budget.objects.filter(pk=budget.pk).exists()

    response = client.post(f"/t/{team_a.slug}/keys/{usage.key.key_id}/cap", {"daily_unit_cap": ""})
    assert response.status_code == 302
    assert not Budget.objects.exists()
    assert "daily cap reached" not in client.get(keys_page).content.decode()


def test_a_viewer_cannot_set_a_cap(client_for, member_of, team_a, usage):
    response = client_for(member_of("viewer")).post(
        f"/t/{team_a.slug}/keys/{usage.key.key_id}/cap", {"daily_unit_cap": "5"}
    )
    assert response.status_code == 403
    assert not Budget.objects.exists()
