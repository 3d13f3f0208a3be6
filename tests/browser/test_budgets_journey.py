"""Set a budget that stops a key → traffic crosses it → the alert is in the log, the signed webhook arrives, the key is
suspended in the config feed → raise the budget → the key works again. Screenshots of each step."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from alerts.models import Budget, BudgetFiring
from analytics import aggregation
from endpoints import feed
from tests.fixtures import PASSWORD
from webhooks.delivery import delivery_attempt
from webhooks.models import WebhookDelivery

CALL = 26  # billable units of one successful eth_call


class Receiver(ThreadingHTTPServer):
    """A team's webhook receiver on loopback: keeps each request's headers and body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def verified(secret: str, header: str, body: bytes) -> bool:
    """The receiver's check, written from the documented recipe (no Gatehouse code)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if item.startswith("t="))
    signatures = [item[3:] for item in header.split(",") if item.startswith("v1=")]
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def key_in_feed(key) -> tuple[str, str | None]:
    (record,) = [k for k in feed.snapshot()["keys"] if k["key_id"] == key.key_id]
    return record["status"], record["status_reason"]


def deliver_pending() -> None:
    """What the worker does with each queued delivery: the real attempt, over HTTP."""
    for delivery_id in WebhookDelivery.objects.filter(status="pending").values_list("pk", flat=True):
        delivery_attempt(delivery_id=delivery_id)


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_budget_stops_a_key_and_raising_it_resumes_the_key(browser_page, owner_a, team_a, usage, receiver):
    page = browser_page.page
    slug = team_a.slug
    browser_page.visit("/accounts/login/", "login")
    page.get_by_label("Email").fill(owner_a.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.locator("main").get_by_role("button", name="Sign In").click()

    # A webhook receiver for budget and traffic events; its secret is shown once.
    browser_page.visit(f"/t/{slug}/webhooks/", "webhooks-empty")
    page.get_by_label("Endpoint URL").fill(receiver.url)
    for event in ("A budget passed one of its thresholds", "A budget was used up", "Keys were suspended",
                  "Suspended keys work again"):  # fmt: skip
        page.get_by_label(re.compile(event)).check()
    page.get_by_role("button", name="Add webhook").click()
    secret = page.get_by_label("Signing secret").input_value()
    browser_page.snap("webhook-added")

    # The budget: the server key may use 3 eth_calls a day, then it stops.
    browser_page.visit(f"/t/{slug}/budgets/", "budgets-empty")
    expect(page.get_by_text("No budgets yet.")).to_be_visible()
    page.get_by_label("Name").fill("Server daily")
    page.get_by_label("Scope").select_option("key")
    page.get_by_label("Key", exact=True).select_option(label=f"server ({usage.key.key_id}) · Wallet")
    page.get_by_label("Period").select_option("day")
    page.get_by_label("Amount").fill(str(3 * CALL))
    page.get_by_label("Thresholds").fill("50, 100")
    page.get_by_label("At 100 %").select_option("stop")
    browser_page.snap("budget-form")
    page.get_by_role("button", name="Set budget").click()
    expect(page.get_by_text("Budget Server daily set.")).to_be_visible()
    budget = Budget.objects.get(name="Server daily")

    # Traffic crosses it: the gateway pushes 4 calls, aggregation runs, the budget fires and stops the key.
    response = usage.post([usage.record(n) for n in range(4)])
    assert response.status_code == 202
    aggregation.aggregate_pending(time_budget_seconds=10)
    assert key_in_feed(usage.key) == ("suspended", "budget_exceeded")
    assert list(
        BudgetFiring.objects.filter(budget=budget).values_list("threshold", flat=True).order_by("threshold")
    ) == [50, 100]

    page.reload()
    expect(page.get_by_role("row", name=re.compile("Server daily")).get_by_text("traffic stopped")).to_be_visible()
    expect(page.get_by_text("Traffic stopped.")).to_be_visible()  # the banner, on every team page
    expect(page.get_by_role("row", name=re.compile("100 % crossed"))).to_be_visible()
    browser_page.snap("budget-crossed")

    # The webhooks arrive signed; the delivery log shows them delivered.
    deliver_pending()
    events = [json.loads(body) for _headers, body in receiver.received]
    assert [event["type"] for event in events] == ["budget.threshold_crossed", "budget.threshold_crossed",
                                                   "budget.exceeded", "traffic.stopped"]  # fmt: skip
    assert all(verified(secret, headers["Gatehouse-Signature"], body) for headers, body in receiver.received)
    assert events[-1]["data"]["reason"] == "budget_exceeded"
    page.get_by_role("navigation", name="Team").get_by_role("link", name="Webhooks").click()
    page.get_by_role("link", name=receiver.url).click()
    expect(page.get_by_text("traffic.stopped").first).to_be_visible()
    browser_page.snap("deliveries")

    # The key page says why it is stopped, and how far over it is.
    browser_page.visit(f"/t/{slug}/endpoints/{usage.endpoint.public_id}/keys/", "key-suspended")
    expect(page.get_by_role("row", name=re.compile(usage.key.key_id)).get_by_text("budget exceeded")).to_be_visible()

    # Raise the budget: the key is back in the feed at once.
    browser_page.visit(f"/t/{slug}/budgets/", "budgets-stopped")
    page.get_by_role("button", name="Edit Server daily").click()
    dialog = page.get_by_role("dialog", name="Edit Server daily")
    dialog.get_by_label("Amount").fill(str(10 * CALL))
    browser_page.snap("raise")
    dialog.get_by_role("button", name="Save Server daily").click()
    expect(page.get_by_text("Budget Server daily saved.")).to_be_visible()
    assert key_in_feed(usage.key) == ("active", None)
    expect(page.get_by_text("Traffic stopped.")).not_to_be_visible()
    expect(page.get_by_role("row", name=re.compile("Server daily")).get_by_text("traffic stopped")).not_to_be_visible()
    browser_page.snap("resumed")
    deliver_pending()
    resumed = json.loads(receiver.received[-1][1])
    assert (resumed["type"], resumed["data"]["budget"]["name"]) == ("traffic.resumed", "Server daily")
