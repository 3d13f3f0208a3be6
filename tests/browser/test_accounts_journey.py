"""Sign up → verify → second team → invite finance → teammate signs up through the link → finance view →
removed → loses access. Two people, two browser contexts, screenshots of every page checked."""

import re

import pytest
from django.core import mail
from playwright.sync_api import expect

PASSWORD = "journey-pass-phrase-42"


def _link(pattern: str) -> str:
    for message in reversed(mail.outbox):
        found = re.search(pattern, message.body)
        if found:
            return found.group(0)
    raise AssertionError(f"no email with {pattern} in {[m.body for m in mail.outbox]}")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_accounts_journey(browser_pages, live_server, settings):
    settings.SITE_URL = live_server.url  # links in emails point at this test server
    owner = browser_pages("owner")
    page = owner.page

    # Sign up.
    owner.visit("/accounts/signup/", "signup")
    page.get_by_label("Your name").fill("Olivia Owner")
    page.get_by_label("Email").fill("olivia@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    page.locator("main").get_by_role("button", name="Sign Up").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Olivia's team")
    expect(page.get_by_text("Verify your email address")).to_be_visible()
    owner.snap("first-team")

    # Read the verification email and verify.
    confirm = _link(r"http://[^\s]+/accounts/confirm-email/[^\s]+")
    page.goto(confirm)
    owner.snap("confirm-email")
    page.get_by_role("button", name="Confirm").click()
    owner.visit("/", "verified-home")
    expect(page.get_by_text("Your email address is verified.")).to_be_visible()

    # Create a second team through the team switcher.
    page.locator(".team-switcher summary").click()
    page.get_by_role("link", name="+ New team").click()
    page.get_by_label("Team name").fill("Acme Analytics")
    page.get_by_role("button", name="Create team").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Acme Analytics")
    owner.snap("second-team")

    # Invite a teammate as finance.
    page.get_by_role("link", name="Members").click()
    page.get_by_label("Email address").fill("fin@example.com")
    page.get_by_label("Role").select_option("finance")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_text("Invitation sent to fin@example.com.")).to_be_visible()
    expect(page.locator("table").nth(1)).to_contain_text("fin@example.com")
    owner.snap("invited")

    # The teammate follows the link and signs up through it.
    teammate = browser_pages("teammate")
    tpage = teammate.page
    tpage.goto(_link(r"http://[^\s]+/invitations/[A-Za-z0-9_-]+/"))
    expect(tpage.get_by_role("heading", level=1)).to_have_text("Join Acme Analytics")
    teammate.snap("invitation")
    tpage.get_by_role("button", name="Sign up to accept").click()
    expect(tpage.get_by_label("Email")).to_have_value("fin@example.com")
    tpage.get_by_label("Your name").fill("Finn Finance")
    tpage.get_by_label("Password", exact=True).fill(PASSWORD)
    tpage.get_by_label("Password (again)").fill(PASSWORD)
    tpage.locator("main").get_by_role("button", name="Sign Up").click()

    # The finance view: the team, without members, tokens or the audit log.
    expect(tpage.get_by_role("heading", level=1)).to_have_text("Acme Analytics")
    expect(tpage.get_by_text("You are finance in this team.")).to_be_visible()
    sidebar = tpage.get_by_role("navigation", name="Team")
    expect(sidebar.get_by_role("link", name="Members")).to_have_count(0)
    expect(sidebar.get_by_role("link", name="API tokens")).to_have_count(0)
    expect(sidebar.get_by_role("link", name="Audit log")).to_have_count(0)
    teammate.snap("finance-view")
    team_url = tpage.url

    # The owner removes them (confirming the dialog).
    owner.visit(page.url.replace(live_server.url, ""), "members-with-teammate")
    expect(page.get_by_role("cell", name=re.compile("Finn Finance"))).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("row", name=re.compile("Finn Finance")).get_by_role("button", name="Remove").click()
    expect(page.get_by_text("Removed fin@example.com from the team.")).to_be_visible()
    owner.snap("removed")

    # ... and on their next click, the teammate has lost access.
    teammate.allow_console_error("status of 404")
    response = tpage.goto(team_url)
    assert response.status == 404
    expect(tpage.get_by_role("heading", level=1)).to_have_text("Page not found")
    teammate.snap("lost-access")
