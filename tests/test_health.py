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
def test_readyz_is_ready_when_database_and_broker_answer(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is True
    assert body["workers"] == {"heartbeat_age_seconds": None}


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - local test server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_with_a_reason_when_the_database_is_down(run_server):
    # A real server process whose database does not answer (nothing listens on port 1).
    base = run_server(DATABASE_URL="postgres://postgres@127.0.0.1:1/gatehouse", DB_CONNECT_TIMEOUT="2")
    status, body = _get(f"{base}/readyz")
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is False
    assert "OperationalError" in body["checks"]["database"]["error"]
    assert body["checks"]["broker"]["ok"] is True


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_when_the_broker_is_down(run_server):
    base = run_server(DATABASE_URL=database_url_for_current_test_db(), CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    status, body = _get(f"{base}/readyz")
    assert status == 503
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["error"]
