"""Every account and team page renders for its owner without a console error (CSP violations included)."""

import pytest

from accounts.models import Team
from endpoints.models import Endpoint
from project.demo import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TEAM_NAME
from tests.fixtures import seed_demo


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_every_page_renders_cleanly_for_the_demo_owner(browser_page):
    seed_demo()
    slug = Team.objects.get(name=DEMO_TEAM_NAME).slug
    endpoint = Endpoint.objects.get(name="NFT dapp (browser)").public_id
    page = browser_page.page
    browser_page.visit("/accounts/login/", "login")
    page.get_by_label("Email").fill(DEMO_EMAIL)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.locator("main").get_by_role("button", name="Sign In").click()
    page.wait_for_url(f"**/t/{slug}/")

    for path in [
        f"/t/{slug}/",
        f"/t/{slug}/endpoints/",
        f"/t/{slug}/endpoints/{endpoint}/",
        f"/t/{slug}/endpoints/{endpoint}/keys/",
        f"/t/{slug}/endpoints/{endpoint}/security/",
        f"/t/{slug}/endpoints/{endpoint}/settings/",
        f"/t/{slug}/members/",
        f"/t/{slug}/tokens/",
        f"/t/{slug}/audit/",
        f"/t/{slug}/settings/",
        "/teams/new/",
        "/account/security/",
        "/accounts/email/",
        "/accounts/password/change/",
        "/accounts/2fa/",
        "/accounts/2fa/totp/activate/",
        "/api/docs/",
    ]:
        response = browser_page.visit(path)
        assert response.status == 200, path
    page.wait_for_selector(".api-operation h3")  # the API reference's first operation heading
    browser_page.snap("api-docs-rendered")
