"""An endpoint's rate limit never exceeds what its team's plan allows: refused in the service (form and API alike)
and capped in the config feed, which also follows plan changes."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.services import management_token_create
from billing.models import BillingAccount, Plan
from billing.services import account_ensure, plan_assign, plan_limits_everywhere
from endpoints import feed
from endpoints.models import Endpoint, PlanLimit
from endpoints.services import endpoint_create, endpoint_update
from project.errors import ServiceError

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(team_a, owner_a):
    return endpoint_create(team=team_a, name="Wallet", services=["eth-mainnet"], actor=owner_a)


def published_rps(endpoint: Endpoint) -> int:
    (record,) = [e for e in feed.snapshot()["endpoints"] if e["endpoint_id"] == endpoint.public_id]
    return record["rate_limit_rps"]


def test_the_free_plan_refuses_a_limit_above_its_own(endpoint, owner_a):
    free = Plan.objects.get(slug="free").rate_limit_rps
    with pytest.raises(ServiceError) as refused:
        endpoint_update(endpoint=endpoint, actor=owner_a, rate_limit_rps=100_000)
    assert (refused.value.code, refused.value.field) == ("rate_limit_above_plan", "rate_limit_rps")
    assert f"up to {free:,} requests per second" in refused.value.message
    endpoint.refresh_from_db()
    assert endpoint.rate_limit_rps is None
    endpoint_update(endpoint=endpoint, actor=owner_a, rate_limit_rps=free)
    assert published_rps(endpoint) == free


def test_the_form_says_the_plans_limit_and_shows_the_error_next_to_the_field(endpoint, owner_a, client_for, team_a):
    url = f"/t/{team_a.slug}/endpoints/{endpoint.public_id}/security/"
    page = client_for(owner_a).get(url).content.decode()
    assert "Empty: your plan's limit, 25 per second" in page
    refused = client_for(owner_a).post(url, {"rate_limit_rps": "100000"})
    assert refused.status_code == 400
    assert "up to 25 requests per second" in refused.content.decode()


def test_the_api_refuses_it_too(endpoint, owner_a, team_a):
    _token, secret = management_token_create(team=team_a, name="t", scopes=["read", "write"], actor=owner_a)
    response = Client(HTTP_AUTHORIZATION=f"Bearer {secret}").patch(
        f"/api/v1/teams/{team_a.slug}/endpoints/{endpoint.public_id}/", {"rate_limit_rps": 5000},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json() | {"detail": ""} == {"code": "rate_limit_above_plan", "field": "rate_limit_rps",
                                                 "detail": ""}  # fmt: skip


def test_the_feed_publishes_the_plan_limit_when_none_is_set_and_caps_after_a_downgrade(endpoint, owner_a, team_a):
    assert published_rps(endpoint) == 25  # Free, no limit set: the plan's
    plan_assign(team=team_a, plan=Plan.objects.get(slug="growth"))
    endpoint_update(endpoint=endpoint, actor=owner_a, rate_limit_rps=800)
    assert published_rps(endpoint) == 800
    cursor = feed.snapshot()["cursor"]
    plan_assign(team=team_a, plan=Plan.objects.get(slug="free"))
    assert published_rps(endpoint) == 25  # stored 800, but the plan allows 25
    changes = feed.changes(since=int(cursor))["changes"]
    assert [(c["type"], c["endpoint"]["rate_limit_rps"]) for c in changes] == [("endpoint", 25)]


def test_a_plan_change_from_stripe_republishes_the_teams_endpoints(
    endpoint, team_a, stripe_fake, stripe_prices, deliver
):
    from billing.tests.fixtures import growth_subscription

    customer = stripe_fake.add_customer(metadata={"team_id": str(team_a.pk)})
    subscription = growth_subscription(stripe_fake, customer["id"], team_a)
    account = account_ensure(team=team_a)
    BillingAccount.objects.filter(pk=account.pk).update(stripe_customer_id=customer["id"])
    cursor = feed.snapshot()["cursor"]
    event = stripe_fake.event("customer.subscription.created", subscription)
    deliver(event)
    changes = feed.changes(since=int(cursor))["changes"]
    assert [(c["type"], c["endpoint"]["rate_limit_rps"]) for c in changes] == [("endpoint", 1_000)]


def test_a_new_rate_limit_on_a_plan_reaches_every_team_on_it_and_teams_on_no_plan(endpoint, team_a, team_b, outsider_b):
    """The operator raises Free's limit in the admin: teams with no plan of their own get it through the default."""
    other = endpoint_create(team=team_b, name="B", services=["eth-mainnet"], actor=outsider_b)
    plan_assign(team=team_a, plan=Plan.objects.get(slug="growth"))
    free = Plan.objects.get(slug="free")
    free.rate_limit_rps = 40
    free.save()
    cursor = feed.snapshot()["cursor"]
    plan_limits_everywhere(plan=free)
    assert published_rps(other) == 40  # team B: no billing account, on the default
    assert published_rps(endpoint) == 1_000  # team A is on Growth
    changes = feed.changes(since=int(cursor))["changes"]
    assert [c["endpoint"]["endpoint_id"] for c in changes] == [other.public_id]
    assert PlanLimit.objects.get(team__isnull=True).rate_limit_rps == 40
    assert BillingAccount.objects.get(team=team_a).plan_id == "growth"
    assert account_ensure(team=team_a).plan_id == "growth"
