import pytest
from django.core.management import call_command

from accounts.models import User
from project.demo import DEMO_EMAIL, DEMO_PASSWORD


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_its_login_works(client):
    call_command("seed_demo", stdout=None)
    call_command("seed_demo", stdout=None)
    assert User.objects.filter(email=DEMO_EMAIL).count() == 1
    response = client.post("/accounts/login/", {"login": DEMO_EMAIL, "password": DEMO_PASSWORD})
    assert response.status_code == 302
    assert client.get("/").context["user"].email == DEMO_EMAIL
