"""The Health alerts page: who may see and set rules, field errors next to their fields, state and history shown."""

from __future__ import annotations

import pytest

from alerts.health import alert_rule_create
from alerts.models import AlertRule
from alerts.tests.test_budgets import _aggregate, _push


@pytest.fixture
def page(team_a):
    return f"/t/{team_a.slug}/alerts/"


def _fields(prefix: str = "", **values: object) -> dict[str, object]:
    fields = {"name": "Wallet errors", "metric": "error_rate", "threshold": "5", "window_minutes": "5",
              "endpoint": "", "service": "", "min_relays": "20", "enabled": "on",
              "notify_roles": ["owner", "developer"], "notify_members": []} | values  # fmt: skip
    return {f"{prefix}-{name}" if prefix else name: value for name, value in fields.items()}


def test_a_developer_sets_a_rule_and_sees_it(client_for, member_of, team_a, usage, page):
    developer = member_of("developer", "dev@a.example")
    viewer = member_of("viewer", "vic@a.example")
    client = client_for(developer)
    response = client.post(page, _fields(endpoint=usage.endpoint.pk, service="eth-mainnet", threshold="2.5",
                                         notify_members=[viewer.pk]))  # fmt: skip
    assert response.status_code == 302
    rule = AlertRule.objects.get(team=team_a)
    assert (rule.name, rule.metric, rule.threshold, rule.window_minutes, rule.endpoint, rule.service,
            rule.min_relays, rule.enabled, rule.notify_roles, list(rule.notify_members.all())) == (
        "Wallet errors", "error_rate", 2.5, 5, usage.endpoint, "eth-mainnet", 20, True, ["owner", "developer"],
        [viewer],
    )  # fmt: skip
    assert rule.created_by == developer
    html = client.get(page).content.decode()
    assert "Wallet errors" in html
    assert '<span class="badge badge-ok">ok</span>' in html
    assert "endpoint Wallet, service eth-mainnet" in html
    assert "error rate above 2.5 % over 5&nbsp;min" in html
    assert "owner, developer, vic@a.example" in html
    assert "No rule has fired yet." in html
    assert f'href="/t/{team_a.slug}/alerts/" aria-current="page">Health alerts</a>' in html


def test_a_firing_rule_shows_since_when_and_its_history(
    client_for, owner_a, team_a, usage, page, django_capture_on_commit_callbacks
):
    alert_rule_create(team=team_a, actor=owner_a, name="Errors", metric="error_rate", threshold=5, min_relays=10)
    _push(usage, 10, status=502, error_class="upstream")
    _aggregate(django_capture_on_commit_callbacks)
    html = client_for(owner_a).get(page).content.decode()
    assert '<span class="badge badge-bad">firing since' in html
    assert '100 % <span class="muted small">of 5 %</span>' in html
    assert "over 10 relays" in html
    assert '<td>100 % <span class="muted small">(threshold 5 %)</span></td>' in html  # the history


def test_bad_input_is_shown_next_to_its_field_and_changes_nothing(client_for, owner_a, page):
    response = client_for(owner_a).post(page, _fields(name="", threshold="100", window_minutes="0"))
    assert response.status_code == 400
    html = response.content.decode()
    assert "This field is required." in html  # the form's own check comes first
    response = client_for(owner_a).post(page, _fields(threshold="100", window_minutes="0", min_relays="0"))
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="id_threshold_error" role="alert">An error rate threshold is a percentage below 100.</small>' in html
    assert 'id="id_window_minutes_error" role="alert">A window is 1 to 1440 minutes.</small>' in html
    assert 'id="id_min_relays_error" role="alert">At least 1 relay.</small>' in html
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize("role", ["finance", "viewer"])
def test_finance_and_viewers_see_rules_but_cannot_set_them(client_for, member_of, owner_a, team_a, page, role):
    alert_rule_create(team=team_a, actor=owner_a, name="Slow", metric="p95_latency", threshold=800)
    client = client_for(member_of(role))
    html = client.get(page).content.decode()
    assert "Slow" in html
    assert "p95 latency above 800 ms" in html
    assert "New health alert" not in html
    assert "data-open-dialog=" not in html
    assert client.post(page, _fields()).status_code == 403
    rule = AlertRule.objects.get()
    assert client.post(f"{page}{rule.pk}/update", _fields(f"r{rule.pk}", name="Changed")).status_code == 403
    assert client.post(f"{page}{rule.pk}/delete").status_code == 403
    assert AlertRule.objects.get().name == "Slow"


def test_another_teams_rules_are_404(client_for, outsider_b, owner_a, team_a, team_b, page):
    rule = alert_rule_create(team=team_a, actor=owner_a, name="A's", metric="error_rate", threshold=5)
    client = client_for(outsider_b)
    assert client.get(page).status_code == 404
    assert client.post(f"{page}{rule.pk}/update", _fields(f"r{rule.pk}", name="Mine")).status_code == 404
    assert client.post(f"{page}{rule.pk}/delete").status_code == 404
    own = f"/t/{team_b.slug}/alerts/"  # team A's rule under the outsider's own team
    assert client.post(f"{own}{rule.pk}/update", _fields(f"r{rule.pk}", name="Mine")).status_code == 404
    assert client.post(f"{own}{rule.pk}/delete").status_code == 404
    assert "A&#x27;s" not in client.get(own).content.decode()
    assert AlertRule.objects.get(pk=rule.pk).name == "A's"


def test_update_and_delete(client_for, owner_a, team_a, page):
    rule = alert_rule_create(team=team_a, actor=owner_a, name="Errors", metric="error_rate", threshold=5)
    client = client_for(owner_a)
    prefix = f"r{rule.pk}"
    bad = client.post(f"{page}{rule.pk}/update", _fields(prefix, metric="p95_latency", threshold="-1"))
    assert bad.status_code == 400
    html = bad.content.decode()
    assert f'id="id_{prefix}-threshold_error" role="alert">' in html  # next to the edited rule's field
    assert (
        f'id="edit-rule-{rule.pk}" class="drawer" aria-labelledby="edit-rule-{rule.pk}-title" data-open>' in html
    )  # reopened
    ok = client.post(f"{page}{rule.pk}/update", _fields(prefix, name="Latency", metric="p95_latency",
                                                        threshold="750", window_minutes="15", enabled=""))  # fmt: skip
    assert ok.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.metric, rule.window_minutes, rule.enabled) == ("Latency", "p95_latency", 15, False)
    assert rule.threshold == 750
    assert '<span class="badge">disabled</span>' in client.get(page).content.decode()
    assert client.post(f"{page}{rule.pk}/delete").status_code == 302
    assert not AlertRule.objects.exists()


def test_the_page_reads_a_fixed_number_of_queries(
    client_for, owner_a, team_a, usage, page, django_assert_max_num_queries
):
    for n in range(6):
        alert_rule_create(team=team_a, actor=owner_a, name=f"Rule {n}", metric="error_rate", threshold=n,
                          endpoint=usage.endpoint if n % 2 else None, notify_members=[owner_a.email])  # fmt: skip
    client = client_for(owner_a)
    with django_assert_max_num_queries(20):
        html = client.get(page).content.decode()
    assert html.count("data-open-dialog=") == 6


def test_empty_states_and_the_link_from_budgets(client_for, owner_a, team_a, page):
    client = client_for(owner_a)
    html = client.get(page).content.decode()
    assert "No health alert rules yet." in html
    assert "No rule has fired yet." in html
    budgets = client.get(f"/t/{team_a.slug}/budgets/").content.decode()
    assert f'<a href="/t/{team_a.slug}/alerts/">Health alerts</a>' in budgets
