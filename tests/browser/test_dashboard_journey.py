"""Overview → filter by endpoint → switch range → explorer → open a relay → export CSV, with screenshots."""

import re

import pytest
from playwright.sync_api import expect

from accounts.models import Team
from endpoints.models import Endpoint
from project.demo import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TEAM_NAME
from tests.fixtures import seed_demo, seed_usage


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_dashboard_journey(browser_pages, tmp_path):
    seed_demo()
    team = Team.objects.get(name=DEMO_TEAM_NAME)
    sent = seed_usage(team, days=2, rate_per_minute=8)
    assert sent > 10_000
    light = browser_pages("light")
    page = light.page
    light.visit("/accounts/login/", "login")
    page.get_by_label("Email").fill(DEMO_EMAIL)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.locator("main").get_by_role("button", name="Sign In").click()

    # The overview: every panel loads on its own.
    expect(page.locator(".card-value").first).to_be_visible()
    expect(page.locator("figure.chart[data-chart-rendered] .uplot")).to_have_count(3)  # drawn, not an error message
    expect(page.locator("table.breakdown")).to_have_count(5)
    light.snap("overview-24h")

    # Filter by an endpoint: the URL holds the filter, the panels reload.
    wallet = Endpoint.objects.get(team=team, name="Wallet backend")
    page.locator("select[name=endpoint]").select_option(wallet.public_id)
    page.wait_for_url(re.compile(f"endpoint={wallet.public_id}"))
    expect(page.get_by_text("filtered by endpoint")).to_be_visible()
    expect(page.locator("figure.chart[data-chart-rendered]")).to_have_count(3)
    light.snap("filtered-by-endpoint")

    # Switch the range to 7 days.
    page.get_by_text("7d", exact=True).click()
    page.wait_for_url(re.compile("range=7d"))
    expect(page.get_by_text("one bar per hour")).to_be_visible()
    expect(page.locator("figure.chart[data-chart-rendered]")).to_have_count(3)
    light.snap("filtered-7d")

    # The explorer, and one relay's details.
    page.get_by_role("navigation", name="Team").get_by_role("link", name="Relay explorer").click()
    expect(page.locator("table.relays tbody tr").first).to_be_visible()
    light.snap("explorer")
    page.locator("table.relays tbody tr td a").first.click()
    expect(page.locator("#relay-drawer")).to_be_visible()
    expect(page.locator(".relay-detail")).to_contain_text("Relay id")
    light.snap("relay-drawer")
    page.get_by_role("button", name="Close").click()

    # Export the explorer's current filter as CSV.
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    path = tmp_path / "relays.csv"
    download.value.save_as(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("ts (UTC),relay_id,endpoint")
    assert len(lines) > 1

    # Dark mode renders the same charts.
    dark = browser_pages("dark")
    dark.page.emulate_media(color_scheme="dark")
    dark.page.context.add_cookies(page.context.cookies())
    dark.visit("/", "overview-dark")
    expect(dark.page.locator("figure.chart[data-chart-rendered]")).to_have_count(3)
    dark.snap("overview-dark-rendered")
