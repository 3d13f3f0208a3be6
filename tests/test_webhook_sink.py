"""The demo's webhook receiver (`python -m project.webhook_sink`): started as make run starts it, then served in this
process (so coverage sees it) and fed by hand-signed requests and by the webhooks app's real delivery code."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from project import webhook_sink
from project.devstack import port_open
from tests.fixtures import BASE_DIR, free_port, subprocess_env
from webhooks.delivery import delivery_attempt
from webhooks.models import DeliveryStatus, WebhookDelivery
from webhooks.services import event_emit, webhook_endpoint_create, webhook_endpoint_rotate_secret
from webhooks.signing import SIGNATURE_HEADER, signature_header

pytestmark = pytest.mark.slow

SECRET = "ghw_demo_receiver_test_secret_0123456789"
SUMMARY = "Budget Monthly units (team Acme Web3) crossed 80 %."


@dataclass
class Sink:
    url: str
    secret_file: Path
    lines: queue.Queue[str]

    def next_line(self, timeout: float = 10.0) -> str:
        return self.lines.get(timeout=timeout).rstrip("\n")

    def write_secret(self, secret: str) -> None:
        """As the seed writes it: a new file put in place whole."""
        partial = self.secret_file.with_name("partial")
        partial.write_text(secret + "\n")
        partial.replace(self.secret_file)


def _event(event_id: str = "evt_0123456789abcdef01234567") -> bytes:
    envelope = {"id": event_id, "type": "budget.threshold_crossed", "created": "2026-03-10T12:00:00+00:00",
                "team": "acme-web3", "data": {"threshold": 80, "summary": SUMMARY}}  # fmt: skip
    return json.dumps(envelope, separators=(",", ":")).encode()


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    headers = {"Content-Type": "application/json", **headers}
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 - the local sink
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the local sink
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_make_run_starts_it_as_a_process_that_listens(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "project.webhook_sink", "--port", str(port), "--secret-file", str(tmp_path / "secret")],
        cwd=BASE_DIR,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):  # it answers POSTs only: wait for the port, not for a page
            assert process.poll() is None, f"the sink exited with {process.returncode}"
            assert time.monotonic() < deadline, "the sink did not listen within 30 s"
            time.sleep(0.1)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert output.startswith(f"[webhook-sink] listening on http://127.0.0.1:{port}/")


@pytest.fixture
def sink(tmp_path, monkeypatch) -> Iterator[Sink]:
    secret_file = tmp_path / "webhook-sink-secret"
    lines: queue.Queue[str] = queue.Queue()
    monkeypatch.setattr(webhook_sink, "say", lambda line: lines.put(f"{webhook_sink.PREFIX} {line}\n"))
    server = webhook_sink.Sink(0, webhook_sink.SecretFile(secret_file))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Sink(f"http://127.0.0.1:{server.server_address[1]}/gatehouse", secret_file, lines)
    server.shutdown()
    server.server_close()


def test_a_signed_event_is_answered_204_and_printed_and_a_new_secret_file_is_read(sink):
    body = _event()
    # No secret yet (make run starts the receiver before the seed writes it): Gatehouse will retry.
    assert _post(sink.url, body, {SIGNATURE_HEADER: signature_header([SECRET], body)}) == 503
    assert "no signing secret yet" in sink.next_line()

    sink.write_secret(SECRET)
    assert _post(sink.url, body, {SIGNATURE_HEADER: signature_header([SECRET], body)}) == 204
    assert (
        sink.next_line() == f"[webhook-sink] verified evt_0123456789abcdef01234567 budget.threshold_crossed — {SUMMARY}"
    )

    # A rotation writes a new secret: the next request is checked against it, on any path.
    sink.write_secret("ghw_rotated_secret")
    assert _post(sink.url, body, {SIGNATURE_HEADER: signature_header([SECRET], body)}) == 400
    assert "invalid signature" in sink.next_line()
    assert _post(sink.url + "/other", body, {SIGNATURE_HEADER: signature_header(["ghw_rotated_secret"], body)}) == 204
    assert sink.next_line().startswith("[webhook-sink] verified evt_0123456789abcdef01234567 ")


def _signed(secret: str, body: bytes, *, age: int = 0, sent: bytes | None = None) -> tuple[dict[str, str], bytes]:
    """Headers signing `body` with `secret` `age` seconds ago, and what is sent (`sent`: a body changed on the way)."""
    header = signature_header([secret], body, timestamp=int(time.time()) - age)
    return {SIGNATURE_HEADER: header}, body if sent is None else sent


# Built when the test runs, not when it is collected: a signature's time is part of what it says.
REFUSED = {
    "wrong-secret": (lambda: _signed("ghw_another_endpoints_secret", _event()), "invalid signature"),
    "stale-timestamp": (lambda: _signed(SECRET, _event(), age=600), "stale timestamp"),
    "no-header": (lambda: ({}, _event()), f"no {SIGNATURE_HEADER} header"),
    "no-timestamp": (lambda: ({SIGNATURE_HEADER: "v1=abc"}, _event()), "malformed"),
    "changed-body": (lambda: _signed(SECRET, _event(), sent=_event("evt_forged")), "invalid signature"),
    "bad-json": (lambda: _signed(SECRET, b"{not json"), "bad JSON"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_request_that_does_not_verify_is_refused_with_400_and_why(sink, case):
    build, reason = REFUSED[case]
    headers, body = build()
    sink.write_secret(SECRET)
    assert _post(sink.url, body, headers) == 400
    line = sink.next_line()
    assert line.startswith("[webhook-sink] rejected POST /gatehouse (400): ")
    assert reason in line


@pytest.mark.django_db
def test_the_webhooks_apps_own_deliveries_are_verified_also_across_a_secret_rotation(sink, team_a, owner_a):
    endpoint, secret = webhook_endpoint_create(team=team_a, url=sink.url, event_types=[], actor=owner_a)
    sink.write_secret(secret)
    event = event_emit(team=team_a, type="budget.threshold_crossed", payload={"threshold": 80, "summary": SUMMARY})
    delivery = WebhookDelivery.objects.get(event=event, endpoint=endpoint)
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.DELIVERED
    assert sink.next_line() == f"[webhook-sink] verified {event.event_id} budget.threshold_crossed — {SUMMARY}"
    delivery.refresh_from_db()
    assert delivery.response_status == 204

    # After a rotation Gatehouse signs with both secrets for a day; the receiver knows only the new one.
    endpoint, secret = webhook_endpoint_rotate_secret(endpoint=endpoint, actor=owner_a)
    sink.write_secret(secret)
    event = event_emit(team=team_a, type="traffic.stopped", payload={"summary": "Traffic stopped: a test."})
    delivery = WebhookDelivery.objects.get(event=event, endpoint=endpoint)
    assert delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.DELIVERED
    assert sink.next_line() == f"[webhook-sink] verified {event.event_id} traffic.stopped — Traffic stopped: a test."
