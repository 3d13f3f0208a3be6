"""The config feed's long-poll (?since=…&wait=…): held until a change commits, woken by PostgreSQL NOTIFY.

Real commits are what NOTIFY needs, hence transaction=True; requests that wait run in threads of their own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from django.db import connection, connections, transaction
from django.test import Client

from endpoints import listen
from endpoints.models import ConfigChange
from endpoints.services import api_key_create, api_key_revoke, endpoint_create, gateway_credential_create

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/gateway/v1/config"


@pytest.fixture
def gateway() -> Client:
    _credential, secret = gateway_credential_create(name="eu-west-1")
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


@pytest.fixture
def endpoint(team_a, owner_a):  # type: ignore[no-untyped-def]
    return endpoint_create(team=team_a, name="Wallet", services=["eth-mainnet"], actor=owner_a)


@pytest.fixture
def woke(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """What each wait ended with: True woken by a change, False timed out."""
    results: list[bool] = []
    real = listen.wait_for_change

    def spy(**kwargs: Any) -> bool:
        results.append(real(**kwargs))
        return results[-1]

    monkeypatch.setattr(listen, "wait_for_change", spy)
    yield results
    assert listen._waiting == 0  # every slot was given back


def _cursor() -> int:
    return ConfigChange.objects.latest("id").id


def in_thread(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` run from another thread, whose database connection is closed after it."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return run


@in_thread
def poll(client: Client, **params: Any) -> Any:
    return client.get(URL, params)


def until_waiting(count: int = 1) -> None:
    """Until `count` requests have LISTENed and looked at the log again: from then on only a NOTIFY wakes them."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s AND state = 'idle' AND query LIKE 'SELECT EXISTS%%'",
                [listen.APPLICATION_NAME],
            )
            if cursor.fetchone()[0] >= count:
                return
        time.sleep(0.01)
    raise AssertionError("no request is waiting")


def test_a_revocation_committing_in_another_thread_answers_a_waiting_request(gateway, endpoint, owner_a, woke):
    key, _secret = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    since = _cursor()
    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(poll, gateway, since=since, wait=20)
        until_waiting()
        pool.submit(in_thread(api_key_revoke), key=key, actor=owner_a).result(10)
        response = waiting.result(10)  # well before its 20 s ran out
    assert response.status_code == 200
    body = response.json()
    assert woke == [True]
    assert [(change["type"], change["key"]["key_id"], change["key"]["status"]) for change in body["changes"]] == [
        ("key", key.key_id, "revoked")
    ]
    assert body["since"] == str(since)
    assert body["cursor"] == str(_cursor())
    assert "Retry-After" not in response


def test_a_change_already_in_the_log_is_answered_without_waiting(gateway, endpoint, owner_a, woke):
    since = _cursor()
    key, _secret = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    body = gateway.get(URL, {"since": since, "wait": 30}).json()
    assert [change["key"]["key_id"] for change in body["changes"]] == [key.key_id]
    assert woke == []  # never listened


def test_a_change_committing_before_the_listen_is_not_missed(gateway, endpoint, owner_a, monkeypatch):
    """Between the first look at the log and the LISTEN, a change commits: the second look finds it."""
    key, _secret = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    since = _cursor()
    woke: list[bool] = []
    real = listen.wait_for_change

    def revoke_first(**kwargs: Any) -> bool:
        with ThreadPoolExecutor(1) as pool:  # commits, and notifies nobody: nobody listens yet
            pool.submit(in_thread(api_key_revoke), key=key, actor=owner_a).result(10)
        woke.append(real(**kwargs))
        return woke[-1]

    monkeypatch.setattr(listen, "wait_for_change", revoke_first)
    body = gateway.get(URL, {"since": since, "wait": 20}).json()
    assert woke == [True]
    assert [(change["key"]["key_id"], change["key"]["status"]) for change in body["changes"]] == [
        (key.key_id, "revoked")
    ]


def test_no_change_answers_empty_when_the_wait_runs_out_and_304_to_its_etag(gateway, endpoint, woke):
    since = _cursor()
    started = time.monotonic()
    response = gateway.get(URL, {"since": since, "wait": 1})
    assert time.monotonic() - started >= 1
    assert response.status_code == 200
    body = response.json()
    assert (body["changes"], body["cursor"], body["has_more"]) == ([], str(since), False)
    assert woke == [False]
    again = gateway.get(URL, {"since": since, "wait": 1}, HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304
    assert woke == [False, False]


def test_a_rolled_back_change_wakes_nobody(gateway, endpoint, owner_a, woke):
    key, _secret = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    since = _cursor()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(poll, gateway, since=since, wait=1)
        until_waiting()
        with transaction.atomic():
            api_key_revoke(key=key, actor=owner_a)  # its NOTIFY is queued, then dropped with the rest
            transaction.set_rollback(True)
        response = waiting.result(10)
    assert woke == [False]
    assert response.json()["changes"] == []
    assert _cursor() == since


def test_waiters_beyond_the_limit_are_answered_at_once(gateway, endpoint, owner_a, settings, woke):
    settings.CONFIG_FEED_MAX_WAITERS = 1
    key, _secret = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    since = _cursor()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(poll, gateway, since=since, wait=20)
        until_waiting()
        second = gateway.get(URL, {"since": since, "wait": 20})
        assert second.status_code == 200
        assert second["Retry-After"] == "1"
        assert second.json()["changes"] == []
        api_key_revoke(key=key, actor=owner_a)  # lets the first one go
        response = first.result(10)
    assert woke == [True]  # only the first one waited
    assert [change["key"]["key_id"] for change in response.json()["changes"]] == [key.key_id]
    assert "Retry-After" not in response


def test_waiting_turned_off_answers_at_once(gateway, endpoint, settings, woke):
    settings.CONFIG_FEED_MAX_WAITERS = 0
    response = gateway.get(URL, {"since": _cursor(), "wait": 20})
    assert (response.status_code, response["Retry-After"], response.json()["changes"]) == (200, "1", [])
    assert woke == []


def test_without_a_listener_connection_the_request_is_answered_at_once(gateway, endpoint, monkeypatch):
    def unreachable(**_kwargs: Any) -> bool:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(listen, "wait_for_change", unreachable)
    response = gateway.get(URL, {"since": _cursor(), "wait": 20})
    assert (response.status_code, response["Retry-After"], response.json()["changes"]) == (200, "1", [])
    assert listen._waiting == 0


@pytest.mark.parametrize(
    "params",
    [
        {"since": "0", "wait": "31"},
        {"since": "0", "wait": "-1"},
        {"since": "0", "wait": "1.5"},
        {"since": "0", "wait": "soon"},
        {"since": "0", "wait": ""},
        {"since": "0", "wait": "²"},
        {"wait": "60"},  # a snapshot ignores wait, but not a malformed one
    ],
)
def test_a_bad_wait_is_refused(gateway, params, woke):
    response = gateway.get(URL, params)
    assert response.status_code == 400
    assert response.json() == {"code": "invalid_wait", "detail": "wait must be whole seconds, 0–30."}
    assert woke == []
