"""The operator's billing page: every reconciliation difference is found (in SQL, whatever its age), each list
pages on its own parameter, and the SQL rule for a difference is the per-row `matches` rule."""

from datetime import UTC, date, datetime, timedelta

import pytest

from billing.models import EventStatus, Reconciliation, StripeEvent
from billing.views import OPERATOR_PAGE_SIZE

pytestmark = pytest.mark.django_db

TODAY = date(2026, 6, 30)


def days_back(n):
    return TODAY - timedelta(days=n)


def reconciliations(team, days, **fields):
    figures = {"ours": 10, "reported": 10, "stripe": 10, "error": ""} | fields
    Reconciliation.objects.bulk_create(Reconciliation(team=team, day=day, **figures) for day in days)


def failed_events(count):
    now = datetime.now(UTC)
    StripeEvent.objects.bulk_create(
        StripeEvent(stripe_id=f"evt_failed_{n:03d}", type="invoice.paid", created=now, payload={},
                    status=EventStatus.FAILED, error="boom")
        for n in range(count)
    )  # fmt: skip


def test_a_difference_older_than_hundreds_of_matching_days_is_listed(
    client_for, admin_user, team_a, django_assert_max_num_queries
):
    reconciliations(team_a, [days_back(n) for n in range(1, 601)])  # 600 matching days, newest first
    old = days_back(601)
    reconciliations(team_a, [old], stripe=7)  # Stripe's meter has less than we sent, long ago
    client = client_for(admin_user)
    with django_assert_max_num_queries(10):  # session, user, each list once: no query per row
        page = client.get("/operator/billing/").content.decode()
    assert f"<td>{old:%Y-%m-%d}</td><td>{team_a.name}</td>" in page
    assert "Stripe's meter differs from what we sent" in page
    assert "Page 1 of 1 · 1 differences" in page
    assert page.count(f"<td>{team_a.name}</td>") == 1  # no matching day is listed


def test_differences_and_failed_events_page_apart(client_for, admin_user, team_a, team_b):
    count = OPERATOR_PAGE_SIZE + 1
    reconciliations(team_a, [days_back(n) for n in range(1, count + 1)], reported=9)
    reconciliations(team_b, [days_back(1)])  # matches: never listed
    failed_events(count)
    client = client_for(admin_user)
    first = client.get("/operator/billing/").content.decode()
    assert "Page 1 of 2 · 51 differences" in first
    assert "Page 1 of 2 · 51 failed" in first
    assert f"<td>{days_back(count):%Y-%m-%d}</td>" not in first

    second = client.get("/operator/billing/", {"differences_page": 2}).content.decode()
    assert "Page 2 of 2 · 51 differences" in second
    assert f"<td>{days_back(count):%Y-%m-%d}</td>" in second  # the oldest difference
    assert "Page 1 of 2 · 51 failed" in second  # the events stay on their first page…
    assert 'href="?differences_page=2&page=2"' in second  # …and paging them keeps the differences' page
    assert 'href="?page=1&differences_page=1"' in second

    both = client.get("/operator/billing/", {"differences_page": 2, "page": 2}).content.decode()
    assert "Page 2 of 2 · 51 differences" in both
    assert "Page 2 of 2 · 51 failed" in both


@pytest.mark.parametrize(
    ("ours", "reported", "stripe", "error", "matches"),
    [
        (10, 10, 10, "", True),
        (0, 0, 0, "", True),
        (10, 10, None, "", False),  # Stripe gave no figure
        (10, 10, 10, "Stripe did not answer", False),
        (11, 10, 10, "", False),  # usage arrived after the hour was reported
        (10, 10, 7, "", False),  # Stripe's meter differs from what we sent
        (10, 9, 10, "", False),
    ],
)
def test_the_sql_rule_for_a_difference_is_the_matches_rule(team_a, ours, reported, stripe, error, matches):
    row = Reconciliation.objects.create(
        team=team_a, day=TODAY, ours=ours, reported=reported, stripe=stripe, error=error
    )
    assert row.matches is matches
    assert Reconciliation.objects.differences().filter(pk=row.pk).exists() is not matches
