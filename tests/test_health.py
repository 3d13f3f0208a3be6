import json
import urllib.error
import urllib.request

import pytest

from tests.fixtures import database_url_for_current_test_db


def test_healthz_answers_without_touching_the_database(client):
    # No django_db mark: any database access in the view would raise here.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_tells_the_public_only_its_status(client, make_user):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}  # no checks, errors, traffic or worker figures
    client.force_login(make_user("someone@example.com"))  # signed in is not enough: staff only
    assert client.get("/readyz").json() == {"status": "ready"}


@pytest.mark.django_db
def test_readyz_details_are_for_staff(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is True
    assert body["workers"] == {"heartbeat_age_seconds": None}
    assert set(body["ingestion"]) >= {"pending_batches", "records_per_second_1m"}


def _get(url: str, **headers: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - local test server
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local test server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_when_the_database_is_down_and_says_why_only_to_the_metrics_token(run_server):
    # A real server process whose database does not answer (nothing listens on port 1).
    base = run_server(
        DATABASE_URL="postgres://postgres@127.0.0.1:1/gatehouse", DB_CONNECT_TIMEOUT="2", METRICS_TOKEN="m" * 32
    )
    status, body = _get(f"{base}/readyz")
    assert (status, body) == (503, {"status": "unavailable"})  # the driver's message names hosts: not public
    status, body = _get(f"{base}/readyz", Authorization="Bearer " + "m" * 32)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is False
    assert "OperationalError" in body["checks"]["database"]["error"]
    assert body["checks"]["broker"]["ok"] is True
    assert _get(f"{base}/readyz", Authorization="Bearer wrong")[1] == {"status": "unavailable"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_when_the_broker_is_down(run_server):
    base = run_server(
        DATABASE_URL=database_url_for_current_test_db(),
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        METRICS_TOKEN="t" * 32,
    )
    assert _get(f"{base}/readyz") == (503, {"status": "unavailable"})
    status, body = _get(f"{base}/readyz", Authorization="Bearer " + "t" * 32)
    assert status == 503
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["error"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_is_a_503_with_retry_after_not_a_500(run_server):
    # What a gateway sees while PostgreSQL restarts: "try again", so it keeps its batch and its Idempotency-Key.
    base = run_server(DATABASE_URL="postgres://postgres@127.0.0.1:1/gatehouse", DB_CONNECT_TIMEOUT="2")
    request = urllib.request.Request(  # noqa: S310 - local test server
        f"{base}/api/gateway/v1/usage", data=b"{}", method="POST",
        headers={"Authorization": "Bearer ggw_x_y", "Idempotency-Key": "k", "Content-Type": "application/x-ndjson"},
    )  # fmt: skip
    try:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310
    except urllib.error.HTTPError as error:
        status, retry_after, body = error.code, error.headers["Retry-After"], json.loads(error.read())
    assert (status, retry_after, body["code"]) == (503, "5", "unavailable")


def test_errors_the_database_reports_stay_errors():
    from django.db import OperationalError
    from psycopg import errors as pg

    from project.middleware import _database_unreachable

    def wrapped(cause: Exception) -> OperationalError:
        error = OperationalError(str(cause))
        error.__cause__ = cause
        return error

    assert _database_unreachable(wrapped(pg.AdminShutdown("terminating connection due to administrator command")))
    assert _database_unreachable(wrapped(pg.ConnectionFailure("connection failure")))
    assert not _database_unreachable(wrapped(pg.DeadlockDetected("deadlock detected")))
    assert not _database_unreachable(wrapped(pg.LockNotAvailable("lock timeout")))
    assert not _database_unreachable(ValueError("x"))
