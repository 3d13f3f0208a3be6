"""The owner deletes a team (typing its slug); finance still reads its invoices under "Deleted teams"; the
operator sees what the gateway kept sending for its keys in the usage quarantine. Screenshots of each page."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime

import pytest
from django.test import Client
from playwright.sync_api import expect

from accounts.models import Membership, Role, User
from accounts.services import team_create, user_create
from endpoints.services import api_key_create, endpoint_create, gateway_credential_create
from tests.fixtures import PASSWORD, make_invoice


def _sign_in(checked, email: str) -> None:
    checked.visit("/accounts/login/", f"sign-in-{email}")
    checked.page.get_by_label("Email").fill(email)
    checked.page.get_by_label("Password").fill(PASSWORD)
    checked.page.locator("main").get_by_role("button", name="Sign In").click()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_deleted_team_keeps_its_invoices_for_finance_and_the_operator_sees_the_quarantine(browser_pages):
    owner = user_create(email="olga@example.com", password=PASSWORD, name="Olga Owner", email_verified=True)
    finance = user_create(email="fred@example.com", password=PASSWORD, name="Fred Finance", email_verified=True)
    staff = user_create(email="ops@example.com", password=PASSWORD, name="Ops", email_verified=True)
    User.objects.filter(pk=staff.pk).update(is_staff=True, is_superuser=True)
    team = team_create(name="Closing Co", owner=owner)
    Membership.objects.create(team=team, user=finance, role=Role.FINANCE)
    endpoint = endpoint_create(team=team, name="Wallet", services=["eth-mainnet"], actor=owner)
    key, _ = api_key_create(endpoint=endpoint, name="server", actor=owner)
    invoice = make_invoice(team, status="paid")

    # The owner deletes the team from its settings, typing its slug.
    owner_tab = browser_pages("owner")
    _sign_in(owner_tab, owner.email)
    owner_tab.visit(f"/t/{team.slug}/settings/", "settings-delete-section")
    page = owner_tab.page
    expect(page.get_by_text("Invoices are kept")).to_be_visible()
    page.get_by_role("button", name="Delete this team…").click()  # a page that says what happens, then confirm
    expect(page.get_by_role("heading", name=f"Delete {team.name}")).to_be_visible()
    owner_tab.snap("delete-confirmation")
    page.get_by_label(f"Type {team.slug} to confirm").fill(team.slug)
    page.get_by_role("button", name="Delete this team").click()
    expect(page.get_by_text("Deleted Closing Co.")).to_be_visible()
    owner_tab.snap("after-delete")

    # Finance finds it under "Deleted teams" and reads its invoice.
    finance_tab = browser_pages("finance")
    _sign_in(finance_tab, finance.email)
    fpage = finance_tab.page
    fpage.locator(".team-switcher summary").click()
    expect(fpage.get_by_text("Deleted teams (invoices only)")).to_be_visible()
    finance_tab.snap("switcher-deleted-teams")
    fpage.get_by_role("link", name="Closing Co").click()
    expect(fpage.get_by_role("note")).to_contain_text("Closing Co was deleted on")
    expect(fpage.get_by_role("link", name=invoice.number)).to_be_visible()
    finance_tab.snap("closed-team-invoices")
    fpage.get_by_role("link", name=invoice.number).click()
    expect(fpage.get_by_role("heading", level=1)).to_contain_text(invoice.number)
    finance_tab.snap("closed-team-invoice")

    # The gateway still sends a relay for the deleted team's key: it lands in the quarantine.
    _credential, secret = gateway_credential_create(name="eu-west-1")
    record = {"id": f"r-{uuid.uuid4().hex[:8]}", "ts": datetime.now(UTC).isoformat(), "key_id": key.key_id,
              "endpoint_id": endpoint.public_id, "service": "eth-mainnet", "method": "eth_call", "status": 200,
              "latency_ms": 12.5, "req_bytes": 100, "resp_bytes": 200, "units": 26, "region": "eu-west-1"}  # fmt: skip
    gateway = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    answer = gateway.post("/api/gateway/v1/usage", json.dumps(record), content_type="application/x-ndjson",
                          HTTP_IDEMPOTENCY_KEY="late-batch")  # fmt: skip
    assert answer.json()["quarantine_reasons"] == {"team_deleted": 1}
    staff_tab = browser_pages("operator")
    _sign_in(staff_tab, staff.email)
    staff_tab.visit("/operator/", "operator")
    staff_tab.page.get_by_role("link", name="Usage quarantine (1 in 7 days)").click()
    expect(staff_tab.page.get_by_role("cell", name=key.key_id, exact=True)).to_be_visible()
    expect(staff_tab.page.get_by_text("The key's team was deleted")).to_be_visible()
    staff_tab.snap("quarantine")
    staff_tab.visit("/operator/billing/", "operator-billing-deleted-teams")
    expect(staff_tab.page.get_by_role("cell", name=re.compile("Closing Co"))).to_be_visible()
