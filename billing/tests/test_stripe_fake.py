"""Self-test of the Stripe fake, driven through the real stripe-python client.

Why: the fake is only worth trusting if stripe-python itself accepts its answers (shapes,
error bodies, retry and idempotency behaviour), so every test goes over ``requests``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import stripe
from stripe import _http_client

from billing.tests.stripe_fake import API_VERSION, DAY, HOUR, Call, FakeStripe, fake_stripe, sign

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z, a UTC day boundary
SECRET = "whsec_test_secret"


@pytest.fixture(autouse=True)
def _no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """stripe-python backs off 0.5 s+ between retries; tests only care that it retries."""
    monkeypatch.setattr(_http_client.HTTPClient, "_sleep_time_seconds", lambda self, num_retries: 0.0)


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    """A fake with its clock pinned, so meter-event windows and timestamps are exact."""
    with fake_stripe(now=NOW) as fake:
        yield fake


@pytest.fixture
def client() -> stripe.StripeClient:
    """Configured like the app's client: requests transport and retries on."""
    return stripe.StripeClient("sk_test_x", http_client=stripe.RequestsClient(timeout=5), max_network_retries=2)


def test_customer_create_records_the_exact_request(fake: FakeStripe, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={"name": "Ada", "email": "ada@example.com", "metadata": {"team_id": "7"}},
        options={"idempotency_key": "customer-team-7"},
    )

    assert customer.id == "cus_test0001"
    assert (customer.name, customer.email, customer.created) == ("Ada", "ada@example.com", NOW)
    assert customer.metadata.to_dict() == {"team_id": "7"}
    assert fake.calls == [
        Call(
            "POST",
            "/v1/customers",
            {"name": "Ada", "email": "ada@example.com", "metadata[team_id]": "7"},
            "customer-team-7",
        )
    ]
    assert client.v1.customers.retrieve("cus_test0001").email == "ada@example.com"
    assert fake.calls_to("get", "/v1/customers/") == [Call("GET", "/v1/customers/cus_test0001", {}, None)]


def test_same_idempotency_key_replays_without_creating_twice(fake: FakeStripe, client: stripe.StripeClient) -> None:
    first = client.v1.customers.create(params={"name": "Ada"}, options={"idempotency_key": "k1"})
    second = client.v1.customers.create(params={"name": "Ada"}, options={"idempotency_key": "k1"})

    assert second.id == first.id
    assert second.last_response is not None
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert list(fake.customers) == ["cus_test0001"]
    assert len(fake.calls) == 2


def test_reused_key_with_other_params_is_an_idempotency_error(fake: FakeStripe, client: stripe.StripeClient) -> None:
    client.v1.customers.create(params={"name": "Ada"}, options={"idempotency_key": "k1"})

    with pytest.raises(stripe.IdempotencyError, match="same parameters") as excinfo:
        client.v1.customers.create(params={"name": "Grace"}, options={"idempotency_key": "k1"})

    assert excinfo.value.http_status == 400
    assert len(fake.customers) == 1


def test_checkout_session_params_are_flat_form_keys(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.add_customer(id="cus_team7")
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": "cus_team7",
            "client_reference_id": "team-7",
            "success_url": "https://app.example/billing/done",
            "cancel_url": "https://app.example/billing",
            "line_items": [{"price": "price_fee", "quantity": 1}, {"price": "price_usage"}],
            "metadata": {"team_id": "7"},
            "subscription_data": {"metadata": {"team_id": "7"}},
        },
        options={"idempotency_key": "checkout-team-7"},
    )

    assert session.id == "cs_test_0001"
    assert session.url == "https://checkout.stripe.com/c/pay/cs_test_0001"
    assert (session.mode, session.status, session.customer, session.subscription) == (
        "subscription",
        "open",
        "cus_team7",
        None,
    )
    assert fake.calls[-1] == Call(
        "POST",
        "/v1/checkout/sessions",
        {
            "mode": "subscription",
            "customer": "cus_team7",
            "client_reference_id": "team-7",
            "success_url": "https://app.example/billing/done",
            "cancel_url": "https://app.example/billing",
            "line_items[0][price]": "price_fee",
            "line_items[0][quantity]": "1",
            "line_items[1][price]": "price_usage",
            "metadata[team_id]": "7",
            "subscription_data[metadata][team_id]": "7",
        },
        "checkout-team-7",
    )
    assert client.v1.checkout.sessions.retrieve("cs_test_0001").client_reference_id == "team-7"


def test_billing_portal_session(fake: FakeStripe, client: stripe.StripeClient) -> None:
    customer = fake.add_customer()

    portal = client.v1.billing_portal.sessions.create(
        params={"customer": customer["id"], "return_url": "https://app.example/billing"}
    )

    assert portal.id == "bps_test0001"
    assert portal.url == "https://billing.stripe.com/p/session/bps_test0001"
    assert (portal.customer, portal.return_url, portal.flow) == (customer["id"], "https://app.example/billing", None)
    assert fake.calls[-1].idempotency_key  # stripe-python generates one for every POST
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.billing_portal.sessions.create(params={"customer": "cus_missing"})
    assert (excinfo.value.code, excinfo.value.param) == ("resource_missing", "customer")


def test_subscription_expands_default_payment_method(fake: FakeStripe, client: stripe.StripeClient) -> None:
    customer = fake.add_customer()
    card = fake.add_payment_method(customer["id"], brand="mastercard", last4="4444")
    sub = fake.add_subscription(
        customer["id"],
        current_period_start=NOW,
        current_period_end=NOW + 31 * DAY,
        metadata={"team_id": "7"},
        default_payment_method=card["id"],
    )

    got = client.v1.subscriptions.retrieve(sub["id"], params={"expand": ["default_payment_method"]})

    assert got.id == "sub_test0001"
    assert got.default_payment_method.card.last4 == "4444"
    assert [item.price.id for item in got["items"].data] == ["price_fee", "price_usage"]
    assert [item.id for item in got["items"].data] == ["si_test0001", "si_test0002"]
    assert {(item.current_period_start, item.current_period_end) for item in got["items"].data} == {
        (NOW, NOW + 31 * DAY)
    }
    assert (got.status, got.cancel_at_period_end, got.canceled_at, got.ended_at) == ("active", False, None, None)
    assert fake.calls == [Call("GET", "/v1/subscriptions/sub_test0001", {"expand[0]": "default_payment_method"}, None)]
    assert client.v1.subscriptions.retrieve(sub["id"]).default_payment_method == card["id"]
    assert client.v1.payment_methods.retrieve(card["id"]).card.brand == "mastercard"


def test_unknown_id_is_resource_missing(fake: FakeStripe, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError, match="No such subscription: 'sub_nope'") as excinfo:
        client.v1.subscriptions.retrieve("sub_nope")

    assert (excinfo.value.http_status, excinfo.value.code) == (404, "resource_missing")


def test_invoice_embeds_ten_lines_and_lists_the_rest(fake: FakeStripe, client: stripe.StripeClient) -> None:
    customer = fake.add_customer()
    sub = fake.add_subscription(customer["id"])
    lines = [{"amount": 100, "description": f"line {n}", "quantity": 1, "price": "price_usage"} for n in range(1, 26)]
    inv = fake.add_invoice(
        customer["id"], lines=lines, subscription=sub["id"], period_start=NOW - 30 * DAY, period_end=NOW
    )

    got = client.v1.invoices.retrieve(inv["id"])
    assert (got.id, got.number, got.status, got.total, got.amount_due, got.amount_paid) == (
        "in_test0001",
        "GH-0001",
        "open",
        2500,
        2500,
        0,
    )
    assert got.hosted_invoice_url == "https://invoice.stripe.com/i/in_test0001"
    assert got.parent.subscription_details.subscription == sub["id"]
    assert len(got.lines.data) == 10
    assert got.lines.has_more is True
    assert got.lines.data[0].pricing.price_details.price == "price_usage"
    assert got.lines.data[0].period.end == NOW

    fake.reset_calls()
    listed = list(client.v1.invoices.line_items.list(inv["id"], params={"limit": 10}).auto_paging_iter())
    assert [line.id for line in listed] == [f"il_test{n:04d}" for n in range(1, 26)]
    assert [call.params for call in fake.calls] == [
        {"limit": "10"},
        {"limit": "10", "starting_after": "il_test0010"},
        {"limit": "10", "starting_after": "il_test0020"},
    ]


def test_update_marks_an_invoice_paid(fake: FakeStripe, client: stripe.StripeClient) -> None:
    customer = fake.add_customer()
    inv = fake.add_invoice(customer["id"], lines=[{"amount": 4900, "price": "price_fee"}])
    fake.now = NOW + HOUR

    fake.update(inv["id"], status="paid")

    got = client.v1.invoices.retrieve(inv["id"])
    assert (got.status, got.amount_paid, got.amount_remaining) == ("paid", 4900, 0)
    assert got.status_transitions.paid_at == NOW + HOUR
    assert got.status_transitions.finalized_at == NOW


def test_meter_event_duplicate_identifier(fake: FakeStripe, client: stripe.StripeClient) -> None:
    params = {
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_a", "value": "12"},
        "timestamp": NOW - HOUR,
        "identifier": "usage-7-2025-12-31T23",
    }
    event = client.v1.billing.meter_events.create(params=params, options={"idempotency_key": "usage-key-1"})
    assert (event.identifier, event.timestamp, event.payload.value) == ("usage-7-2025-12-31T23", NOW - HOUR, "12")
    assert fake.calls[-1].params == {
        "event_name": "api_requests",
        "payload[stripe_customer_id]": "cus_a",
        "payload[value]": "12",
        "timestamp": str(NOW - HOUR),
        "identifier": "usage-7-2025-12-31T23",
    }

    client.v1.billing.meter_events.create(params=params, options={"idempotency_key": "usage-key-1"})  # replay
    fake.reset_calls()
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.billing.meter_events.create(params=params, options={"idempotency_key": "usage-key-2"})

    # As Stripe answers it: a 400 in its own words, no error code, and not worth retrying.
    assert excinfo.value.user_message == "An event already exists with identifier usage-7-2025-12-31T23."
    assert (excinfo.value.http_status, excinfo.value.code) == (400, None)
    assert excinfo.value.headers["Stripe-Should-Retry"] == "false"
    assert len(fake.calls) == 1  # stripe-python did not retry
    assert len(fake.meter_events) == 1


def test_summary_windows_must_be_aligned_with_their_grouping(fake: FakeStripe, client: stripe.StripeClient) -> None:
    summaries = client.v1.billing.meters.event_summaries
    for grouping, start, end in [("day", NOW - DAY, NOW - HOUR), ("day", NOW - DAY + HOUR, NOW),
                                 ("hour", NOW - HOUR, NOW - 60)]:  # fmt: skip
        with pytest.raises(stripe.InvalidRequestError, match="must be aligned"):
            summaries.list("mtr_test", params={"customer": "cus_a", "start_time": start, "end_time": end,
                                               "value_grouping_window": grouping})  # fmt: skip
    summaries.list("mtr_test", params={"customer": "cus_a", "start_time": NOW - DAY, "end_time": NOW,
                                       "value_grouping_window": "day"})  # fmt: skip


def test_a_misspelled_or_unknown_parameter_is_refused_as_stripe_refuses_it(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    # Wrong on purpose (the ignores below): the fake must refuse what stripe-python's types and Stripe refuse.
    with pytest.raises(stripe.InvalidRequestError, match="Received unknown parameter: metdata") as excinfo:
        client.v1.customers.create(params={"name": "Ada", "metdata": {"team_id": "7"}})  # type: ignore[typeddict-unknown-key]
    assert (excinfo.value.http_status, excinfo.value.code) == (400, "parameter_unknown")
    with pytest.raises(stripe.InvalidRequestError, match="subscription_data\\[billing_cycle_anchor_config\\]\\[day\\]"):
        client.v1.checkout.sessions.create(params={"mode": "subscription", "subscription_data": {
            "billing_cycle_anchor_config": {"day": 1}}})  # type: ignore[typeddict-unknown-key]  # fmt: skip
    with pytest.raises(stripe.InvalidRequestError, match="Invalid integer"):
        client.v1.billing.meter_events.create(params={"event_name": "e", "payload": {"value": "1"},
                                                      "timestamp": "soon"})  # type: ignore[typeddict-item]  # fmt: skip
    assert len(fake.contract_errors) == 3
    assert fake.customers == {}
    assert fake.subscriptions == {}


@pytest.mark.parametrize(
    ("value", "timestamp"),
    [("-1", NOW), ("1.5", NOW), ("3", NOW - 36 * DAY), ("3", NOW + 10 * 60)],
)
def test_meter_event_validation(fake: FakeStripe, client: stripe.StripeClient, value: str, timestamp: int) -> None:
    params = {
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_a", "value": value},
        "timestamp": timestamp,
    }
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_events.create(params=params)
    assert fake.meter_events == []


def test_event_summaries_group_by_utc_day(fake: FakeStripe, client: stripe.StripeClient) -> None:
    day1, day2 = NOW - 2 * DAY, NOW - DAY
    for customer, ts, value in [
        ("cus_a", day1 + 30 * 60, "5"),
        ("cus_a", day2 - 60, "7"),
        ("cus_a", day2 + 10 * HOUR, "3"),
        ("cus_b", day1 + HOUR, "100"),
    ]:
        client.v1.billing.meter_events.create(
            params={
                "event_name": "api_requests",
                "payload": {"stripe_customer_id": customer, "value": value},
                "timestamp": ts,
            }
        )
    window = {"customer": "cus_a", "start_time": day1, "end_time": NOW}

    summaries = client.v1.billing.meters.event_summaries
    by_day = summaries.list("mtr_test", params={**window, "value_grouping_window": "day"})
    whole = summaries.list("mtr_test", params=window)
    by_hour = summaries.list("mtr_test", params={**window, "value_grouping_window": "hour"})

    assert [(s.start_time, s.end_time, s.aggregated_value) for s in by_day.data] == [(day2, NOW, 3), (day1, day2, 12)]
    assert [(s.start_time, s.end_time, s.aggregated_value, s.meter) for s in whole.data] == [
        (day1, NOW, 15, "mtr_test")
    ]
    assert len(by_hour.data) == 3
    assert fake.calls[-1] == Call(
        "GET",
        "/v1/billing/meters/mtr_test/event_summaries",
        {"customer": "cus_a", "start_time": str(day1), "end_time": str(NOW), "value_grouping_window": "hour"},
        None,
    )

    fake.reset_calls()
    paged = summaries.list("mtr_test", params={**window, "value_grouping_window": "day", "limit": 1})
    assert [s.aggregated_value for s in paged.auto_paging_iter()] == [3, 12]
    assert len(fake.calls) == 2
    assert fake.calls[1].params["starting_after"] == by_day.data[0].id


def test_500_is_retried_with_the_same_idempotency_key(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.fail_next("POST", "/v1/customers", status=500)

    customer = client.v1.customers.create(params={"name": "Ada"})

    calls = fake.calls_to("POST", "/v1/customers")
    assert len(calls) == 2
    assert calls[0].idempotency_key
    assert calls[0] == calls[1]
    assert list(fake.customers) == [customer.id]


def test_persistent_500_surfaces_as_api_error(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.fail_next("POST", "/v1/customers", status=503, times=3)

    with pytest.raises(stripe.APIError) as excinfo:
        client.v1.customers.create(params={"name": "Ada"})

    assert excinfo.value.http_status == 503
    assert len(fake.calls) == 3  # one try plus max_network_retries=2
    assert fake.customers == {}


def test_stripe_should_retry_false_stops_retries(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.fail_next("POST", "/v1/customers", status=500, should_retry=False)

    with pytest.raises(stripe.APIError):
        client.v1.customers.create(params={"name": "Ada"})

    assert len(fake.calls) == 1


def test_connection_error_is_retried(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.timeout_next("GET", "/v1/invoices/")
    inv = fake.add_invoice("cus_a", lines=[{"amount": 100}])

    assert client.v1.invoices.retrieve(inv["id"]).id == inv["id"]
    assert len(fake.calls) == 2


def test_lost_response_is_replayed_on_retry(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.timeout_next("POST", "/v1/billing/meter_events", after_processing=True)

    event = client.v1.billing.meter_events.create(
        params={"event_name": "api_requests", "payload": {"stripe_customer_id": "cus_a", "value": "1"}}
    )

    assert len(fake.meter_events) == 1
    assert event.identifier == fake.meter_events[0]["identifier"]
    assert event.last_response is not None
    assert event.last_response.headers["Idempotent-Replayed"] == "true"
    assert fake.calls[0] == fake.calls[1]


def test_connection_errors_beyond_retries_raise(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.timeout_next("GET", "/v1/customers/", times=3)

    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.retrieve("cus_test0001")

    assert len(fake.calls) == 3


def test_unknown_url_fails_loudly(fake: FakeStripe, client: stripe.StripeClient) -> None:
    unrecognized = r"Unrecognized request URL \(POST: /v1/customers/cus_x\)"
    with pytest.raises(stripe.InvalidRequestError, match=unrecognized) as excinfo:
        client.v1.customers.update("cus_x", params={"name": "Ada"})

    assert excinfo.value.http_status == 404
    assert fake.calls == [Call("POST", "/v1/customers/cus_x", {"name": "Ada"}, fake.calls[0].idempotency_key)]


def test_signed_event_is_accepted_by_stripe(fake: FakeStripe) -> None:
    inv = fake.add_invoice("cus_a", status="paid", lines=[{"amount": 4900, "price": "price_fee"}])
    evt = fake.event("invoice.paid", inv)
    payload = json.dumps(evt).encode()

    parsed = stripe.Webhook.construct_event(payload, sign(payload, SECRET), SECRET, tolerance=300)

    assert (parsed.id, parsed.type, parsed.api_version, parsed.created) == (
        "evt_test0001",
        "invoice.paid",
        API_VERSION,
        NOW,
    )
    assert parsed.data.object.id == inv["id"]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sign(payload, "whsec_other"), SECRET, tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sign(payload, SECRET, timestamp=NOW - DAY), SECRET, tolerance=300)
