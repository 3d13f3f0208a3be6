"""Delivery end to end: a real receiver on 127.0.0.1, the real task code called as the worker would (the broker
replaced by a list), time moved with time-machine. Signatures are checked by a verifier written here, from the
documented scheme, with nothing of ours."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

from webhooks import selectors, services, tasks
from webhooks.delivery import BACKOFF, RETRY_WINDOW, retry_delay
from webhooks.models import (
    ALERT_FIRING,
    BUDGET_EXCEEDED,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookFormat,
)
from webhooks.tests.receiver import Answer, receiving

pytestmark = pytest.mark.django_db


def independent_verify(secret: str, header: str, body: bytes, *, now: float, tolerance: int = 300) -> bool:
    """The receiver's side, from the docs: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>[,v1=…]."""
    pairs = [part.split("=", 1) for part in header.split(",")]
    timestamp = int(next(value for key, value in pairs if key == "t"))
    if abs(now - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in pairs if key == "v1")


def emit(team, django_capture_on_commit_callbacks, event_type=BUDGET_EXCEEDED, payload=None) -> WebhookEvent:
    with django_capture_on_commit_callbacks(execute=True):
        return services.event_emit(team=team, type=event_type, payload=payload or {"budget": "Monthly"})


def test_failures_are_retried_with_backoff_until_delivered(
    queue, make_endpoint, team_a, owner_a, client_for, django_capture_on_commit_callbacks
):
    with receiving(Answer(500, b"boom"), Answer(500, b"still down"), Answer(200, b"thanks")) as receiver:
        endpoint, secret = make_endpoint(receiver.url())
        start = timezone.now()
        event = emit(
            team_a, django_capture_on_commit_callbacks, payload={"budget": "Monthly", "spent": Decimal("120.50")}
        )
        [delivery_id] = queue.delayed

        assert tasks.deliver(delivery_id) == DeliveryStatus.RETRYING
        assert queue.scheduled == [(delivery_id, 30)]
        # The same message delivered again at once (a broker redelivery) sends nothing: the retry is not due.
        assert tasks.deliver(delivery_id) is None
        assert len(receiver.requests) == 1

        with time_machine.travel(start + timedelta(seconds=31)):
            assert tasks.deliver(delivery_id) == DeliveryStatus.RETRYING
        assert queue.countdowns() == [30, 120]
        with time_machine.travel(start + timedelta(seconds=31 + 121)):
            assert tasks.deliver(delivery_id) == DeliveryStatus.DELIVERED
            sent_at = time.time()
        assert queue.countdowns() == [30, 120]  # nothing scheduled after a success
        # Redelivered again, and swept: a delivered row is never sent again.
        assert tasks.deliver(delivery_id) is None
        assert len(receiver.requests) == 3

    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.response_status) == (DeliveryStatus.DELIVERED, 3, 200)
    assert (delivery.response_excerpt, delivery.last_error, delivery.next_attempt_at) == ("thanks", "", None)
    assert [(a.number, a.response_status, a.error) for a in delivery.attempt_log.order_by("number")] == [
        (1, 500, "HTTP 500"),
        (2, 500, "HTTP 500"),
        (3, 200, ""),
    ]

    # Every attempt carries the same event: the same id, type and body; only the signature's time differs.
    first = receiver.requests[0]
    assert {r.headers["gatehouse-event-id"] for r in receiver.requests} == {event.event_id}
    assert {r.headers["gatehouse-event-type"] for r in receiver.requests} == {BUDGET_EXCEEDED}
    assert {r.body for r in receiver.requests} == {first.body}
    assert {r.headers["user-agent"] for r in receiver.requests} == {"Gatehouse-Webhooks/1"}
    assert first.headers["content-type"] == "application/json"
    assert first.path == "/hook"
    assert json.loads(first.body) == {
        "id": event.event_id,
        "type": "budget.exceeded",
        "created": event.created_at.isoformat(),
        "team": team_a.slug,
        "data": {"budget": "Monthly", "spent": "120.50"},  # money as a string, never a float
    }
    last = receiver.requests[-1]
    assert independent_verify(secret, last.headers["gatehouse-signature"], last.body, now=sent_at)

    # The delivery log shows the three attempts and the outcome.
    page = client_for(owner_a).get(f"/t/{team_a.slug}/webhooks/{endpoint.pk}/").content.decode()
    assert "3 attempts" in page
    assert page.count("<code>500</code>") == 2
    assert "<code>200</code>" in page
    assert ">delivered<" in page


def test_signatures_verify_independently_and_tampering_or_replay_is_refused(
    queue, make_endpoint, team_a, django_capture_on_commit_callbacks
):
    with receiving(Answer(204, b"")) as receiver:
        _endpoint, secret = make_endpoint(receiver.url())
        emit(team_a, django_capture_on_commit_callbacks)
        assert tasks.deliver(queue.delayed[0]) == DeliveryStatus.DELIVERED
    [request] = receiver.requests
    header, body, now = request.headers["gatehouse-signature"], request.body, time.time()
    assert header.startswith("t=")
    assert independent_verify(secret, header, body, now=now)
    assert not independent_verify(secret, header, body.replace(b"Monthly", b"Weekly"), now=now)  # tampered
    assert not independent_verify(secret, header, body, now=now + 301)  # replayed six minutes later
    assert not independent_verify("ghw_00000000_" + "x" * 43, header, body, now=now)  # another secret


def test_a_failure_past_the_retry_window_fails_for_good(
    queue, make_endpoint, team_a, django_capture_on_commit_callbacks
):
    with receiving(Answer(503, b"maintenance")) as receiver:
        make_endpoint(receiver.url())
        event = emit(team_a, django_capture_on_commit_callbacks)
        [delivery_id] = queue.delayed
        # The last attempt that still fits: 24 h after the event, less than the next backoff.
        with time_machine.travel(event.created_at + RETRY_WINDOW - timedelta(seconds=10)):
            assert tasks.deliver(delivery_id) == DeliveryStatus.FAILED
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.next_attempt_at, delivery.last_error) == (DeliveryStatus.FAILED, None, "HTTP 503")
    assert queue.scheduled == []
    assert selectors.deliveries_due(now=timezone.now() + timedelta(days=2)) == []


def test_backoff_grows_then_repeats_its_longest_step():
    assert [retry_delay(n) for n in range(1, 11)] == [30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800, 28800]
    assert sum(BACKOFF) < RETRY_WINDOW.total_seconds()  # every step is tried at least once


def test_network_errors_are_failures_that_retry(queue, make_endpoint, team_a, django_capture_on_commit_callbacks):
    with receiving() as receiver:
        url = receiver.url()
    # The receiver is gone: its port refuses connections.
    make_endpoint(url)
    emit(team_a, django_capture_on_commit_callbacks)
    assert tasks.deliver(queue.delayed[0]) == DeliveryStatus.RETRYING
    delivery = WebhookDelivery.objects.get()
    assert delivery.response_status is None
    assert delivery.last_error.startswith("could not connect")
    assert queue.countdowns() == [30]


def test_a_lost_task_is_swept_up_once_overdue(queue, make_endpoint, team_a, django_capture_on_commit_callbacks):
    with receiving() as receiver:
        make_endpoint(receiver.url())
        emit(team_a, django_capture_on_commit_callbacks)
        [delivery_id] = queue.delayed
        queue.delayed.clear()  # the message is lost
        assert tasks.deliver_due() == 0  # not overdue yet: its own task normally runs first
        with time_machine.travel(timezone.now() + timedelta(seconds=90)):
            assert tasks.deliver_due() == 1
            assert queue.delayed == [delivery_id]
            assert tasks.deliver(delivery_id) == DeliveryStatus.DELIVERED
            assert tasks.deliver_due() == 0  # delivered: nothing is due any more
        assert len(receiver.requests) == 1


def test_a_claimed_delivery_is_not_sent_by_a_duplicate_task(
    queue, make_endpoint, team_a, django_capture_on_commit_callbacks
):
    from webhooks.delivery import _claim

    with receiving() as receiver:
        make_endpoint(receiver.url())
        emit(team_a, django_capture_on_commit_callbacks)
        [delivery_id] = queue.delayed
        assert _claim(delivery_id, timezone.now()) is not None  # a worker took it and is sending right now
        assert tasks.deliver(delivery_id) is None  # the duplicate finds it claimed
        assert receiver.requests == []
        # That worker died mid-request: once its lease ends the delivery is due again, and goes out once.
        with time_machine.travel(timezone.now() + timedelta(minutes=6)):
            assert tasks.deliver(delivery_id) == DeliveryStatus.DELIVERED
        assert len(receiver.requests) == 1
        assert WebhookDelivery.objects.get().attempts == 2


@pytest.mark.django_db(transaction=True)
def test_a_delivery_locked_by_another_worker_is_skipped(queue, make_endpoint, team_a):
    with receiving() as receiver:
        make_endpoint(receiver.url())
        services.event_emit(team=team_a, type=BUDGET_EXCEEDED, payload={})  # committed: on_commit ran
        [delivery_id] = queue.delayed
        locked, release = threading.Event(), threading.Event()

        def other_worker() -> None:
            with transaction.atomic():
                WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
                locked.set()
                release.wait(10)
            connection.close()

        thread = threading.Thread(target=other_worker)
        thread.start()
        assert locked.wait(10)
        try:
            assert tasks.deliver(delivery_id) is None  # skip_locked: no wait, no send
        finally:
            release.set()
            thread.join()
        assert receiver.requests == []
        assert tasks.deliver(delivery_id) == DeliveryStatus.DELIVERED
        assert len(receiver.requests) == 1


def test_emit_delivers_to_enabled_endpoints_subscribed_to_the_type_in_the_team_only(
    queue, make_endpoint, team_a, team_b, outsider_b, django_capture_on_commit_callbacks
):
    url = "http://127.0.0.1:9/hook"
    budget_only, _ = make_endpoint(url, event_types=[BUDGET_EXCEEDED])
    everything, _ = make_endpoint(url)
    make_endpoint(url, event_types=[ALERT_FIRING])
    disabled, _ = make_endpoint(url)
    services.webhook_endpoint_update(endpoint=disabled, actor=disabled.created_by, enabled=False)
    services.webhook_endpoint_create(team=team_b, url=url, event_types=[], actor=outsider_b)

    event = emit(team_a, django_capture_on_commit_callbacks)
    deliveries = WebhookDelivery.objects.filter(event=event)
    assert {d.endpoint_id for d in deliveries} == {budget_only.pk, everything.pk}
    assert sorted(queue.delayed) == sorted(d.pk for d in deliveries)
    assert {d.status for d in deliveries} == {DeliveryStatus.PENDING}


def test_emit_inside_a_transaction_that_rolls_back_leaves_nothing_and_sends_nothing(
    queue, make_endpoint, team_a, django_capture_on_commit_callbacks
):
    make_endpoint("http://127.0.0.1:9/hook")

    def callers_change() -> None:
        with transaction.atomic():
            services.event_emit(team=team_a, type=BUDGET_EXCEEDED, payload={})
            raise RuntimeError("the caller's change failed")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        callers_change()
    assert WebhookEvent.objects.count() == 0
    assert queue.delayed == []


def test_unknown_event_types_are_a_programming_error(team_a):
    with pytest.raises(ValueError, match="unknown webhook event type"):
        services.event_emit(team=team_a, type="budget.exploded", payload={})
    with pytest.raises(TypeError):
        services.event_emit(team=team_a, type=BUDGET_EXCEEDED, payload=["not", "a", "dict"])


def test_a_disabled_endpoint_gets_nothing_more(queue, make_endpoint, team_a, django_capture_on_commit_callbacks):
    with receiving() as receiver:
        endpoint, _ = make_endpoint(receiver.url())
        emit(team_a, django_capture_on_commit_callbacks)
        services.webhook_endpoint_update(endpoint=endpoint, actor=endpoint.created_by, enabled=False)
        assert tasks.deliver(queue.delayed[0]) is None
    assert receiver.requests == []
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.last_error) == (DeliveryStatus.FAILED, "the endpoint is disabled")


def test_a_deleted_endpoint_stops_its_deliveries(queue, make_endpoint, team_a, django_capture_on_commit_callbacks):
    endpoint, _ = make_endpoint("http://127.0.0.1:9/hook")
    emit(team_a, django_capture_on_commit_callbacks)
    services.webhook_endpoint_delete(endpoint=endpoint, actor=endpoint.created_by)
    assert tasks.deliver(queue.delayed[0]) is None
    assert WebhookEndpoint.objects.count() == 0


def test_slack_format_sends_signed_text(queue, make_endpoint, team_a, django_capture_on_commit_callbacks):
    with receiving() as receiver:
        _endpoint, secret = make_endpoint(receiver.url(), format=WebhookFormat.SLACK)
        emit(
            team_a,
            django_capture_on_commit_callbacks,
            payload={"summary": "Monthly budget used up: $120.50 of $100.00", "spent": Decimal("120.50")},
        )
        assert tasks.deliver(queue.delayed[0]) == DeliveryStatus.DELIVERED
    [request] = receiver.requests
    assert json.loads(request.body) == {
        "text": "*A budget was used up* · Team A (`budget.exceeded`)\nMonthly budget used up: $120.50 of $100.00"
    }
    assert independent_verify(secret, request.headers["gatehouse-signature"], request.body, now=time.time())


def test_slack_text_without_a_summary_lists_the_simple_fields(
    queue, make_endpoint, team_a, django_capture_on_commit_callbacks
):
    with receiving() as receiver:
        make_endpoint(receiver.url(), format=WebhookFormat.SLACK)
        emit(team_a, django_capture_on_commit_callbacks, ALERT_FIRING, {"alert": "Error rate", "value": 7.5, "x": []})
        tasks.deliver(queue.delayed[0])
    assert json.loads(receiver.requests[0].body)["text"] == (
        "*An alert started firing* · Team A (`alert.firing`)\n• alert: Error rate\n• value: 7.5"
    )


def test_a_rotated_secret_signs_alongside_the_old_one_for_a_day(
    queue, make_endpoint, team_a, django_capture_on_commit_callbacks
):
    with receiving() as receiver:
        endpoint, old_secret = make_endpoint(receiver.url())
        endpoint, new_secret = services.webhook_endpoint_rotate_secret(endpoint=endpoint, actor=endpoint.created_by)
        assert new_secret != old_secret
        assert new_secret.startswith("ghw_")
        emit(team_a, django_capture_on_commit_callbacks)
        tasks.deliver(queue.delayed[-1])
        with time_machine.travel(timezone.now() + timedelta(hours=25)):
            emit(team_a, django_capture_on_commit_callbacks)
            tasks.deliver(queue.delayed[-1])
            later = time.time()
    during, after = receiver.requests
    assert during.headers["gatehouse-signature"].count("v1=") == 2
    for secret in (old_secret, new_secret):
        assert independent_verify(secret, during.headers["gatehouse-signature"], during.body, now=time.time())
    assert after.headers["gatehouse-signature"].count("v1=") == 1
    assert independent_verify(new_secret, after.headers["gatehouse-signature"], after.body, now=later)
    assert not independent_verify(old_secret, after.headers["gatehouse-signature"], after.body, now=later)
