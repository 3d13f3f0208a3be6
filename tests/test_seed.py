import pytest
from django.core.management import call_command

from accounts.models import Membership, Team, User
from project.demo import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TEAM_NAME, DEMO_TEAMMATES


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_its_login_works(client):
    call_command("seed_demo", stdout=None)
    call_command("seed_demo", stdout=None)
    assert User.objects.filter(email=DEMO_EMAIL).count() == 1
    team = Team.objects.get(name=DEMO_TEAM_NAME)
    roles = dict(Membership.objects.filter(team=team).values_list("user__email", "role"))
    assert roles == {DEMO_EMAIL: "owner", **{email: role for email, _name, role in DEMO_TEAMMATES}}
    response = client.post("/accounts/login/", {"login": DEMO_EMAIL, "password": DEMO_PASSWORD})
    assert response.status_code == 302
    assert client.get("/").url == f"/t/{team.slug}/"
