"""Create an endpoint → restrict it → create, rotate and revoke a key; screenshots of each page checked."""

import re

import pytest
from playwright.sync_api import expect

from endpoints import keys as key_format
from endpoints.models import ApiKey, Endpoint
from tests.fixtures import PASSWORD


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_endpoint_and_key_journey(browser_page, owner_a, team_a):
    page = browser_page.page
    browser_page.visit("/accounts/login/", "login")
    page.get_by_label("Email").fill(owner_a.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.locator("main").get_by_role("button", name="Sign In").click()

    # The empty endpoints list explains what an endpoint is.
    page.get_by_role("navigation", name="Team").get_by_role("link", name="Endpoints").click()
    expect(page.get_by_text("No endpoints yet.")).to_be_visible()
    browser_page.snap("endpoints-empty")

    # Create one.
    page.get_by_role("button", name="Create your first endpoint").click()
    page.get_by_label("Name").fill("Wallet backend")
    page.get_by_label("Ethereum Mainnet").check()
    page.get_by_label("Base", exact=True).check()
    browser_page.snap("endpoint-new")
    page.get_by_role("button", name="Create endpoint").click()
    expect(page.get_by_text("Created Wallet backend.")).to_be_visible()
    endpoint = Endpoint.objects.get(name="Wallet backend")

    # Create a key: the secret is shown once.
    page.get_by_role("textbox", name="Name").fill("api-server")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_text("Key created — copy the secret now")).to_be_visible()
    secret = page.get_by_label("New secret").input_value()
    assert key_format.is_well_formed(secret)
    browser_page.snap("key-created")
    key = ApiKey.objects.get(name="api-server")

    # The overview shows the URL with the key id and a curl example.
    page.get_by_role("navigation", name="Endpoint sections").get_by_role("link", name="Overview").click()
    expect(page.get_by_label("Ethereum Mainnet URL")).to_have_value(
        f"https://eth-mainnet.gw.gatehouse.dev/v1/{key.key_id}"
    )
    page.get_by_text("curl example").first.click()
    browser_page.snap("overview")

    # Restrict it: a bad origin is refused next to the field, then a good set is saved.
    page.get_by_role("navigation", name="Endpoint sections").get_by_role("link", name="Security").click()
    page.get_by_label("Allowed origins").fill("https://app.example.com\nnot an origin")
    page.get_by_label("Ethereum Mainnet: allowed methods").fill("eth_call\neth_getBalance")
    browser_page.allow_console_error("status of 400")  # an invalid form comes back as 400, with its errors
    page.get_by_role("button", name="Save security settings").click()
    expect(page.get_by_text(re.compile(r'"not an origin" is not an origin'))).to_be_visible()
    browser_page.snap("security-error")
    endpoint.refresh_from_db()
    assert endpoint.allowed_origins == []
    page.get_by_label("Allowed origins").fill("https://app.example.com\n*.example.com")
    page.get_by_label("Require the secret key").check()
    page.get_by_role("button", name="Save security settings").click()
    expect(page.get_by_text("Security settings saved.")).to_be_visible()
    browser_page.snap("security-saved")
    endpoint.refresh_from_db()
    assert endpoint.allowed_origins == ["https://app.example.com", "*.example.com"]
    assert endpoint.allowed_methods == {"eth-mainnet": ["eth_call", "eth_getBalance"]}
    assert endpoint.secret_key_required

    # Rotate with a 24-hour overlap.
    page.get_by_role("navigation", name="Endpoint sections").get_by_role("link", name="Keys").click()
    row = page.get_by_role("row", name=re.compile(key.key_id))
    row.locator("summary", has_text="Rotate").click()
    row.get_by_label("Keep the old key working for").select_option("24h")
    browser_page.snap("rotate-menu")
    row.get_by_role("button", name="Rotate api-server").click()
    expect(page.get_by_text("Key rotated — copy the secret now")).to_be_visible()
    expect(page.get_by_text(re.compile(f"The old key {key.key_id} keeps working until"))).to_be_visible()
    browser_page.snap("rotated")
    new_key = ApiKey.objects.exclude(pk=key.pk).get()

    # Revoke the new key, confirming the dialog.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("row", name=re.compile(new_key.key_id)).get_by_role("button", name="Revoke").click()
    expect(page.get_by_text(f"Revoked api-server ({new_key.key_id})")).to_be_visible()
    browser_page.snap("revoked")
    new_key.refresh_from_db()
    assert new_key.revoked_at is not None
