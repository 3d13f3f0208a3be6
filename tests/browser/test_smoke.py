import pytest
from playwright.sync_api import expect


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_home_and_login_pages_render_and_a_user_can_sign_in(browser_page, make_user):
    make_user("smoke@example.com", name="Sam Smoke")
    page = browser_page.page

    browser_page.visit("/", "home")
    expect(page.get_by_role("heading", level=1)).to_have_text("The control room for your API gateway")
    # The vendored stylesheet and scripts loaded (the CSP allowed them): Pico styles the primary button.
    assert page.evaluate("typeof window.htmx") == "object"

    browser_page.visit("/accounts/login/", "login")
    page.get_by_label("Email").fill("smoke@example.com")
    page.get_by_label("Password").fill("correct-horse-battery-staple")
    page.get_by_role("button", name="Sign In").click()
    # Without a team, the landing page offers to create one.
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, Sam")
    browser_page.snap("signed-in")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_dark_scheme_follows_the_system_and_the_toggle_overrides_it(browser_page):
    page = browser_page.page
    page.emulate_media(color_scheme="dark")
    browser_page.visit("/", "home-dark")
    dark_background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    page.get_by_role("button", name="Switch colour scheme").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    light_background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert dark_background != light_background
    page.reload()  # the choice is remembered
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    browser_page.snap("home-light-after-toggle")
