"""Deleting a team: its Stripe subscription is canceled first, its financial records stay (the team is closed, not
erased), and a team with an invoice that is not final or not paid cannot be deleted."""

from __future__ import annotations

import pytest

from accounts.models import AuditEvent, ManagementToken, Membership, Role, Team
from accounts.services import invitation_create, management_token_create
from billing.models import BillingAccount, Invoice, MeterReport, Plan
from billing.services import account_ensure, team_delete
from endpoints.models import ApiKey, Endpoint
from endpoints.services import api_key_create, endpoint_create
from project.errors import ServiceError
from tests.fixtures import make_invoice

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscribed(team_a, stripe_fake, stripe_prices):
    """Team A on Growth with a live Stripe subscription (customer, card, two-item subscription)."""
    from billing.tests.fixtures import growth_subscription

    customer = stripe_fake.add_customer(metadata={"team_id": str(team_a.pk)})
    subscription = growth_subscription(stripe_fake, customer["id"], team_a)
    account = account_ensure(team=team_a)
    BillingAccount.objects.filter(pk=account.pk).update(
        plan=Plan.objects.get(slug="growth"), stripe_customer_id=customer["id"],
        stripe_subscription_id=subscription["id"], subscription_status="active",
    )  # fmt: skip
    return subscription


def test_deleting_a_subscribed_team_cancels_its_subscription_at_stripe_first(team_a, owner_a, subscribed, stripe_fake):
    make_invoice(team_a, status="paid")
    team_delete(team=team_a, actor=owner_a, confirmation=team_a.slug)
    (cancel,) = stripe_fake.calls_to("DELETE", "/v1/subscriptions/")
    assert cancel.path == f"/v1/subscriptions/{subscribed['id']}"
    assert cancel.params == {
        "invoice_now": "true",
        "prorate": "true",
        "cancellation_details[comment]": f"Gatehouse team {team_a.slug} (id {team_a.pk}) deleted",
    }
    assert stripe_fake.get(subscribed["id"])["status"] == "canceled"
    account = BillingAccount.objects.get(team=team_a)
    assert account.subscription_status == "canceled"
    assert AuditEvent.objects.filter(action="billing.subscription_canceled", team=team_a, actor=owner_a).exists()


def test_a_stripe_failure_deletes_nothing(team_a, owner_a, subscribed, stripe_fake):
    stripe_fake.fail_next("DELETE", "/v1/subscriptions/", status=500, times=5)
    with pytest.raises(ServiceError) as refused:
        team_delete(team=team_a, actor=owner_a, confirmation=team_a.slug)
    assert (refused.value.code, refused.value.status) == ("stripe_unavailable", 502)
    assert "Nothing was deleted" in refused.value.message
    assert Team.objects.get(pk=team_a.pk).deleted_at is None
    assert stripe_fake.get(subscribed["id"])["status"] == "active"


def test_a_subscription_already_canceled_at_stripe_is_not_canceled_twice(team_a, owner_a, subscribed, stripe_fake):
    stripe_fake.update(subscribed["id"], status="canceled")
    team_delete(team=team_a, actor=owner_a, confirmation=team_a.slug)
    assert stripe_fake.calls_to("DELETE", "/v1/subscriptions/") == []
    assert Team.objects.get(pk=team_a.pk).deleted_at is not None


def test_the_financial_records_stay_and_finance_still_finds_them(
    team_a, owner_a, member_of, client_for, usage, subscribed, stripe_fake, client, admin_user
):
    finance = member_of(Role.FINANCE, email="fin@a.example")
    developer = member_of(Role.DEVELOPER, email="dev@a.example")
    invoice = make_invoice(team_a, status="paid")
    MeterReport.objects.create(team=team_a, hour=invoice.period_start, timestamp=invoice.period_start,
                               segment_start=invoice.period_start,
                               cumulative=10, units=10, identifier="meter-x", stripe_customer_id="cus_x")  # fmt: skip
    _token, secret = management_token_create(team=team_a, name="ci", scopes=["read"], actor=owner_a)
    owner = Membership.objects.get(team=team_a, user=owner_a)
    invitation, _ = invitation_create(team=team_a, email="later@example.com", role="viewer", invited_by=owner)
    team_delete(team=team_a, actor=owner_a, confirmation=team_a.slug)

    assert Invoice.objects.filter(team=team_a).count() == 1
    assert MeterReport.objects.filter(team=team_a).count() == 1
    assert BillingAccount.objects.filter(team=team_a).exists()
    assert Endpoint.objects.filter(team=team_a, deleted_at__isnull=False).count() == 1  # names kept for invoices
    assert not ApiKey.objects.filter(team=team_a, revoked_at__isnull=True).exists()
    assert ManagementToken.objects.get().revoked_reason == "The team was deleted."
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    roles = set(Membership.objects.filter(team=team_a).values_list("role", flat=True))
    assert roles == {Role.OWNER, Role.FINANCE}  # those who may see billing stay, read-only; the rest leave
    assert not Membership.objects.filter(user=developer).exists()

    fin = client_for(finance)
    assert fin.get(f"/t/{team_a.slug}/billing/invoices/").status_code == 200
    assert fin.get(f"/t/{team_a.slug}/billing/invoices/{invoice.pk}/").status_code == 200
    assert fin.get(f"/t/{team_a.slug}/billing/invoices/?format=csv").status_code == 200
    menu = fin.get(f"/t/{team_a.slug}/billing/").content.decode()
    assert "was deleted on" in menu
    assert "Deleted teams (invoices only)" in menu
    for path in ("", "explorer/", "settings/", "endpoints/", "members/"):
        assert client_for(owner_a).get(f"/t/{team_a.slug}/{path}").status_code == 404, path
    assert client_for(owner_a).post(f"/t/{team_a.slug}/billing/portal").status_code == 404
    from django.test import Client

    assert Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get(f"/api/v1/teams/{team_a.slug}/").status_code == 401
    assert fin.get("/api/v1/teams/").json() == []  # the API lists live teams only
    client.force_login(admin_user)
    assert str(invoice.number) in client.get(f"/admin/billing/invoice/?team__id__exact={team_a.pk}").content.decode()
    operator = client.get("/operator/billing/").content.decode()
    assert "Deleted teams" in operator
    assert f"?team__id__exact={team_a.pk}" in operator


@pytest.mark.parametrize(
    ("status", "remaining", "code"),
    [("draft", 4900, "invoice_not_final"), ("open", 4900, "unpaid_invoice"), ("uncollectible", 100, "unpaid_invoice")],
)
def test_an_invoice_that_is_not_final_or_not_paid_keeps_the_team(team_a, owner_a, client_for, status, remaining, code):
    invoice = make_invoice(team_a, status=status)
    Invoice.objects.filter(pk=invoice.pk).update(amount_remaining=remaining)
    with pytest.raises(ServiceError) as refused:
        team_delete(team=team_a, actor=owner_a, confirmation=team_a.slug)
    assert (refused.value.code, refused.value.status) == (code, 409)
    assert Team.objects.get(pk=team_a.pk).deleted_at is None
    page = client_for(owner_a).get(f"/t/{team_a.slug}/settings/delete").content.decode()
    assert "Delete this team</button>" not in page
    assert ("is still a draft" if code == "invoice_not_final" else "unpaid invoice") in page


def test_the_gateway_is_told_and_late_usage_for_the_team_is_quarantined(team_a, owner_a, usage):
    key_id = usage.key.key_id
    team_delete(team=team_a, actor=owner_a, confirmation=team_a.slug)
    from endpoints import feed

    snapshot = feed.snapshot()
    assert key_id not in {k["key_id"] for k in snapshot["keys"]}
    response = usage.post([usage.record(1)])
    assert response.status_code == 202
    assert response.json()["quarantine_reasons"] == {"team_deleted": 1}


def test_a_team_name_and_its_endpoints_can_be_created_again_after_deletion(team_a, owner_a):
    endpoint_create(team=team_a, name="Wallet", services=["eth-mainnet"], actor=owner_a)
    team_delete(team=team_a, actor=owner_a, confirmation=team_a.slug)
    from accounts.services import team_create

    again = team_create(name="Team A", owner=owner_a)
    assert again.slug != team_a.slug
    endpoint = endpoint_create(team=again, name="Wallet", services=["eth-mainnet"], actor=owner_a)
    api_key_create(endpoint=endpoint, name="k", actor=owner_a)
