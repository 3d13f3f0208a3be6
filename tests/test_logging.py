import io
import json
import logging

import pytest

from project.logging import JsonFormatter, RequestIdFilter


def test_request_log_line_is_json_with_the_request_id(client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("gatehouse.request")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        client.get("/healthz", HTTP_X_REQUEST_ID="req-0123456789")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-0123456789"
    assert line["message"] == "GET /healthz 200"
    assert line["status"] == 200
    assert line["path"] == "/healthz"
    assert line["level"] == "INFO"
    assert isinstance(line["duration_ms"], float)


def test_lines_outside_a_request_carry_a_placeholder_id():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    RequestIdFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "-"
    assert json.loads(JsonFormatter().format(record))["message"] == "hello world"


# --- secrets in paths never reach a log line ------------------------------------------------------------


@pytest.fixture
def captured_log():
    """What the configured console handler writes (its own filters and formatter), request lines included."""
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler))
    stream = io.StringIO()
    previous_stream = handler.setStream(stream)
    request_logger = logging.getLogger("gatehouse.request")
    previous_level = request_logger.level
    request_logger.setLevel(logging.INFO)
    yield stream
    request_logger.setLevel(previous_level)
    handler.setStream(previous_stream)


@pytest.mark.django_db
def test_invitation_tokens_are_redacted_from_request_lines(captured_log, client, team_a, owner_a):
    from accounts.models import Membership
    from accounts.services import invitation_create

    owner = Membership.objects.get(team=team_a, user=owner_a)
    _invitation, token = invitation_create(team=team_a, email="new@example.com", role="viewer", invited_by=owner)
    client.get(f"/invitations/{token}/")
    client.get(f"/invitations/{token}/nonexistent")  # a 404 too
    logged = captured_log.getvalue()
    assert "/invitations/[redacted]/" in logged
    assert token not in logged


@pytest.mark.django_db
def test_password_reset_and_confirmation_keys_are_redacted(captured_log, client, owner_a):
    from django.core import mail

    client.post("/accounts/password/reset/", {"email": owner_a.email})
    link = next(w for w in mail.outbox[-1].body.split() if "/password/reset/key/" in w)
    path = link.split("testserver", 1)[1]
    client.get(path)
    client.post("/accounts/email/", {"action_add": "", "email": "alice.other@example.com"})
    logged = captured_log.getvalue()
    secret = path.split("/key/", 1)[1].strip("/")
    assert secret not in logged
    assert "/accounts/password/reset/key/[redacted]" in logged


def test_a_django_error_line_naming_the_request_is_redacted():
    from django.test import RequestFactory

    from project.logging import RedactSecretsFilter

    request = RequestFactory().get("/accounts/confirm-email/Mzk:1vxyz:abcdefSECRET/")
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error: %s",
                               (request.path,), None)  # fmt: skip
    record.request = request
    record.path = request.path
    RedactSecretsFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "SECRET" not in line
    assert "/accounts/confirm-email/[redacted]/" in json.loads(line)["message"]


def test_every_route_with_a_secret_parameter_is_redacted():
    from django.urls import get_resolver

    from project.logging import SECRET_PATH_PREFIXES
    from tests.test_permissions import _walk

    secret_names = {"token", "key", "uidb36", "uidb64", "secret"}
    uncovered = []
    for pattern, entry in _walk(get_resolver()):
        names = set(entry.pattern.regex.groupindex)
        if names & secret_names:
            literal = "/" + pattern.replace("^", "").split("(?P", 1)[0].split("<", 1)[0]
            if not any(literal.startswith(prefix) for prefix in SECRET_PATH_PREFIXES):
                uncovered.append(pattern)
    assert uncovered == [], "add these routes' prefixes to project.logging.SECRET_PATH_PREFIXES"
