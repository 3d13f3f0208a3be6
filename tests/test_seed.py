import pytest
from django.core.management import call_command

from accounts.models import Membership, Team, User
from project.demo import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TEAM_NAME, DEMO_TEAMMATES
from tests.fixtures import seed_demo


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_its_login_works(client):
    seed_demo()
    seed_demo()
    assert User.objects.filter(email=DEMO_EMAIL).count() == 1
    team = Team.objects.get(name=DEMO_TEAM_NAME)
    roles = dict(Membership.objects.filter(team=team).values_list("user__email", "role"))
    assert roles == {DEMO_EMAIL: "owner", **{email: role for email, _name, role in DEMO_TEAMMATES}}
    response = client.post("/accounts/login/", {"login": DEMO_EMAIL, "password": DEMO_PASSWORD})
    assert response.status_code == 302
    assert client.get("/").url == f"/t/{team.slug}/"


@pytest.mark.django_db
def test_the_demo_team_is_on_growth_with_paid_open_and_failed_invoices(client):
    from billing import selectors
    from billing.models import Invoice

    seed_demo()
    seed_demo()
    team = Team.objects.get(name=DEMO_TEAM_NAME)
    assert selectors.plan_of(team=team).slug == "growth"
    invoices = Invoice.objects.filter(team=team)
    assert sorted(invoices.values_list("status", flat=True)) == ["open", "open", "paid", "paid"]
    overdue = selectors.overdue_of(team=team)
    assert overdue is not None
    assert overdue.invoice.number.startswith("ACME-")
    # The monthly invoices add up to what the ledger rates their months at.
    for invoice in invoices.exclude(number="ACME-SETUP"):
        assert selectors.invoice_breakdown(team=team, invoice=invoice).difference == 0
    client.post("/accounts/login/", {"login": DEMO_EMAIL, "password": DEMO_PASSWORD})
    page = client.get(f"/t/{team.slug}/billing/invoices/").content.decode()
    assert "Payment failed" in page
    assert page.count("Paid</span>") == 2


@pytest.mark.django_db
def test_seed_demo_refuses_to_create_public_logins_with_debug_off(settings):
    from django.core.management.base import CommandError

    settings.DEBUG = False
    with pytest.raises(CommandError, match="runs only with DEBUG on"):
        call_command("seed_demo", stdout=None)
    assert not User.objects.exists()
