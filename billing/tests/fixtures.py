"""Billing fixtures: Stripe replaced at the HTTP boundary (billing.tests.stripe_fake), signed webhooks, plans
with Stripe prices, and helpers to push usage through the real ingestion and aggregation."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from billing import stripe_client, tasks
from billing.models import EventStatus, PlanVersion, StripeEvent
from billing.tests.stripe_fake import FakeStripe, fake_stripe, sign

WEBHOOK_SECRET = "whsec_test_gatehouse"
PRICES = {"growth": ("price_growth_fee", "price_growth_usage"), "payg": ("", "price_payg_usage")}


@pytest.fixture
def stripe_settings(settings: Settings) -> Iterator[Settings]:
    settings.STRIPE_SECRET_KEY = "sk_test_gatehouse"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_METER_ID = "mtr_test_gatehouse"
    settings.STRIPE_MAX_RETRIES = 2
    stripe_client._client.cache_clear()
    yield settings
    stripe_client._client.cache_clear()


@pytest.fixture
def stripe_fake(stripe_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    """Stripe's API, faked at the HTTP boundary; stripe-python's retry backoff made instant."""
    import stripe

    monkeypatch.setattr(stripe._http_client.HTTPClient, "_sleep_time_seconds", lambda self, *a, **k: 0)
    with fake_stripe() as fake:
        yield fake


@pytest.fixture
def stripe_prices(db: None) -> dict[str, PlanVersion]:
    """The operator has created the Stripe prices of the paid plans and entered them on their versions."""
    versions = {}
    for slug, (fee, usage) in PRICES.items():
        version = PlanVersion.objects.get(plan_id=slug, team__isnull=True)
        version.stripe_fee_price_id, version.stripe_usage_price_id = fee, usage
        version.save()
        versions[slug] = version
    return versions


def post_event(client: Client, event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, at: int | None = None) -> Any:
    """Deliver one event to the webhook, signed as Stripe signs it."""
    payload = json.dumps(event).encode()
    return client.post(
        "/billing/stripe/webhook",
        payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(payload, secret, at or int(time.time())),
    )


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def relays(usage: Any, count: int, *, key: Any = None, at: datetime | None = None, **fields: Any) -> None:
    """`count` relays pushed through the real ingestion API (aggregate() rolls them up)."""
    records = []
    for n in range(count):
        record = usage.record(n, key=key, **fields)
        record["id"] = f"r-{uuid.uuid4().hex}"
        if at is not None:
            record["ts"] = at.isoformat()
        records.append(record)
    for start in range(0, len(records), 5000):
        response = usage.post(records[start : start + 5000])
        assert response.status_code == 202, response.content


def aggregate() -> None:
    from analytics import aggregation

    aggregation.aggregate_pending()
    aggregation.compact_rollups()


@pytest.fixture
def deliver(client, django_capture_on_commit_callbacks):
    """deliver(event): POST it signed, then run the task it queued (and what the task queues on commit)."""

    def run(event):
        with django_capture_on_commit_callbacks() as queued:
            response = post_event(client, event)
        assert response.status_code == 200, response.content
        stored = StripeEvent.objects.get(stripe_id=event["id"])
        if response.json()["duplicate"] or stored.status == EventStatus.IGNORED:
            assert queued == []
            return stored
        assert len(queued) == 1  # process_event.delay, on commit
        with django_capture_on_commit_callbacks(execute=True):
            tasks.process_event(stored.pk)
        stored.refresh_from_db()
        return stored

    return run


def growth_subscription(fake, customer, team, **overrides):
    card = fake.add_payment_method(customer, brand="visa", last4="4242", exp_month=8, exp_year=2031)
    start = datetime.now(UTC).replace(microsecond=0)
    return fake.add_subscription(
        customer,
        price_ids=("price_growth_fee", "price_growth_usage"),
        metadata={"team_id": str(team.pk), "plan": "growth"},
        default_payment_method=card["id"],
        current_period_start=epoch(start),
        current_period_end=epoch(start + timedelta(days=30)),
        **overrides,
    )
