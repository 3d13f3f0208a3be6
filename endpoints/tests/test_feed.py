import gzip
import io
import json
import threading
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone

from accounts.services import management_token_create
from billing.services import team_delete
from endpoints import feed as feed_module
from endpoints import keys as key_format
from endpoints.models import ENFORCED_FIELDS, ConfigChange, ConfigFeedHorizon, GatewayCredential
from endpoints.services import (
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    config_change_record,
    endpoint_create,
    endpoint_delete,
    endpoint_set_paused,
    endpoint_suspend,
    endpoint_update,
    gateway_credential_create,
    gateway_credential_revoke,
    team_suspend,
    team_unsuspend,
    traffic_stop,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def gateway():
    _credential, secret = gateway_credential_create(name="eu-west-1")
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


@pytest.fixture
def endpoint(team_a, owner_a):
    return endpoint_create(team=team_a, name="Wallet", services=["eth-mainnet", "base"], actor=owner_a)


def body_of(response) -> bytes:
    """A response's body, whole: the snapshot is streamed."""
    return b"".join(response.streaming_content) if response.streaming else response.content


def feed(client, **params):
    response = client.get("/api/gateway/v1/config", params)
    body = body_of(response)
    assert response.status_code == 200, body
    return json.loads(body)


def test_snapshot_lists_live_endpoints_and_usable_keys(gateway, endpoint, owner_a, team_a):
    key, secret = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    revoked, _ = api_key_create(endpoint=endpoint, name="old", actor=owner_a)
    api_key_revoke(key=revoked, actor=owner_a)
    body = feed(gateway)
    assert body["version"] == "v1"
    assert body["cursor"] == str(ConfigChange.objects.latest("id").id)
    assert body["endpoints"] == [
        {
            "endpoint_id": endpoint.public_id,
            "team": team_a.slug,
            "environment": "production",
            "status": "active",
            "status_reason": None,
            "services": ["base", "eth-mainnet"],
            "rate_limit_rps": 25,  # none set: the Free plan's limit
            "monthly_unit_cap": None,
            "secret_key_required": False,
            "allowlists": {"origins": [], "user_agents": [], "ips": [], "contracts": {}, "methods": {}},
        }
    ]
    assert body["keys"] == [
        {
            "key_id": key.key_id,
            "secret_sha256": key_format.secret_hash(secret),
            "team": team_a.slug,
            "endpoint_id": endpoint.public_id,
            "environment": "production",
            "status": "active",
            "status_reason": None,
            "expires_at": None,
            "valid_until": None,
            "daily_unit_cap": None,
        }
    ]


def test_revocation_appears_in_the_changes_since_the_cursor(gateway, endpoint, owner_a):
    key, _ = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    cursor = feed(gateway)["cursor"]
    assert feed(gateway, since=cursor)["changes"] == []
    api_key_revoke(key=key, actor=owner_a)
    body = feed(gateway, since=cursor)
    assert [(c["type"], c["key"]["key_id"], c["key"]["status"]) for c in body["changes"]] == [
        ("key", key.key_id, "revoked")
    ]
    assert int(body["cursor"]) > int(cursor)
    assert feed(gateway, since=body["cursor"])["changes"] == []


def test_changes_come_in_order_with_the_latest_state_once_per_object(gateway, endpoint, owner_a):
    cursor = feed(gateway)["cursor"]
    first, _ = api_key_create(endpoint=endpoint, name="a", actor=owner_a)
    second, _ = api_key_create(endpoint=endpoint, name="b", actor=owner_a)
    endpoint_update(endpoint=endpoint, actor=owner_a, allowed_origins=["https://app.example.com"])
    api_key_revoke(key=first, actor=owner_a)
    changes = feed(gateway, since=cursor)["changes"]
    order = [(c["type"], (c.get("key") or c.get("endpoint"))["status"]) for c in changes]
    # The allowlist change re-emits the endpoint and its keys; `first` then changes again, so it comes last.
    assert [c["seq"] for c in changes] == sorted(c["seq"] for c in changes)
    assert order[-1] == ("key", "revoked")
    assert [c["key"]["key_id"] for c in changes if c["type"] == "key"] == [second.key_id, first.key_id]
    assert [c["endpoint"]["allowlists"]["origins"] for c in changes if c["type"] == "endpoint"] == [
        ["https://app.example.com"]
    ]


def test_paging_with_limit_and_has_more(gateway, endpoint, owner_a):
    cursor = feed(gateway)["cursor"]
    made = [api_key_create(endpoint=endpoint, name=f"k{i}", actor=owner_a)[0].key_id for i in range(5)]
    seen = []
    for _ in range(10):
        page = feed(gateway, since=cursor, limit=2)
        seen += [c["key"]["key_id"] for c in page["changes"]]
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    assert seen == made


def test_pausing_suspending_and_team_suspension_reach_every_key(gateway, endpoint, owner_a, team_a):
    key, _ = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    cursor = feed(gateway)["cursor"]
    endpoint_set_paused(endpoint=endpoint, paused=True, actor=owner_a)
    state = {c["type"]: (c.get("key") or c.get("endpoint")) for c in feed(gateway, since=cursor)["changes"]}
    assert (state["key"]["status"], state["key"]["status_reason"]) == ("suspended", "endpoint paused by the team")
    assert state["endpoint"]["status"] == "suspended"
    endpoint_set_paused(endpoint=endpoint, paused=False, actor=owner_a)
    cursor = feed(gateway)["cursor"]
    team_suspend(team=team_a, reason="payment overdue")
    keys = [c["key"] for c in feed(gateway, since=cursor)["changes"] if c["type"] == "key"]
    assert [(k["key_id"], k["status"], k["status_reason"]) for k in keys] == [
        (key.key_id, "suspended", "payment overdue")
    ]
    assert feed(gateway)["keys"][0]["status"] == "suspended"
    cursor = feed(gateway)["cursor"]
    team_unsuspend(team=team_a)
    keys = [c["key"] for c in feed(gateway, since=cursor)["changes"] if c["type"] == "key"]
    assert keys[0]["status"] == "active"


def test_rotation_overlap_is_honoured_and_then_ends(gateway, endpoint, owner_a):
    old, _ = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        new, _ = api_key_rotate(key=old, overlap="1h", actor=owner_a)
        keys = {k["key_id"]: k for k in feed(gateway)["keys"]}
        assert keys[old.key_id]["status"] == "active"
        assert keys[old.key_id]["valid_until"] == (start + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        assert keys[new.key_id]["status"] == "active"
    with time_machine.travel(start + timedelta(minutes=59), tick=False):
        old.refresh_from_db()
        assert old.is_usable()
    with time_machine.travel(start + timedelta(hours=1, seconds=1), tick=False):
        old.refresh_from_db()
        assert not old.is_usable()
        keys = {k["key_id"]: k for k in feed(gateway)["keys"]}
        assert old.key_id not in keys  # the overlap is over: not in a new snapshot
        assert keys[new.key_id]["status"] == "active"
        change = feed(gateway, since=0)["changes"]
        assert [c["key"]["status"] for c in change if c["type"] == "key" and c["key"]["key_id"] == old.key_id] == [
            "revoked"
        ]


def test_rotation_without_overlap_stops_the_old_key_now(gateway, endpoint, owner_a):
    old, _ = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    new, secret = api_key_rotate(key=old, overlap="none", actor=owner_a)
    old.refresh_from_db()
    assert old.revoked_at is not None
    assert old.replaced_by == new
    assert [k["key_id"] for k in feed(gateway)["keys"]] == [new.key_id]
    assert key_format.is_well_formed(secret)


def test_deleting_an_endpoint_or_a_team_tells_the_gateway(gateway, endpoint, owner_a, team_a):
    key, _ = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    other = endpoint_create(team=team_a, name="Other", services=["base"], actor=owner_a)
    other_key, _ = api_key_create(endpoint=other, name="k", actor=owner_a)
    cursor = feed(gateway)["cursor"]
    endpoint_delete(endpoint=endpoint, actor=owner_a)
    states = {
        (c["type"], (c.get("key") or c.get("endpoint")).get("key_id") or c["endpoint"]["endpoint_id"]): (
            c.get("key") or c.get("endpoint")
        )["status"]
        for c in feed(gateway, since=cursor)["changes"]
    }
    assert states == {("endpoint", endpoint.public_id): "deleted", ("key", key.key_id): "revoked"}
    cursor = feed(gateway)["cursor"]
    team_delete(team=team_a, actor=owner_a, confirmation=team_a.slug)
    changes = feed(gateway, since=cursor)["changes"]
    assert {(c["type"], (c.get("key") or c.get("endpoint"))["status"]) for c in changes} == {
        ("endpoint", "deleted"),
        ("key", "revoked"),
    }
    assert other_key.key_id in {c["key"]["key_id"] for c in changes if c["type"] == "key"}
    assert feed(gateway)["keys"] == []


def test_etag_gives_304_when_nothing_changed(gateway, endpoint, owner_a):
    first = gateway.get("/api/gateway/v1/config")
    again = gateway.get("/api/gateway/v1/config", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert again.content == b""
    cursor = json.loads(body_of(first))["cursor"]
    poll = gateway.get("/api/gateway/v1/config", {"since": cursor})
    assert gateway.get("/api/gateway/v1/config", {"since": cursor}, HTTP_IF_NONE_MATCH=poll["ETag"]).status_code == 304
    api_key_create(endpoint=endpoint, name="k", actor=owner_a)
    assert gateway.get("/api/gateway/v1/config", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 200
    assert gateway.get("/api/gateway/v1/config", {"since": cursor}, HTTP_IF_NONE_MATCH=poll["ETag"]).status_code == 200


def test_the_snapshot_is_streamed_a_chunk_of_keys_at_a_time(gateway, endpoint, owner_a, monkeypatch):
    monkeypatch.setattr(feed_module, "SNAPSHOT_CHUNK", 2)
    created = {api_key_create(endpoint=endpoint, name=f"k{n}", actor=owner_a)[0].key_id for n in range(5)}
    response = gateway.get("/api/gateway/v1/config")
    assert response.streaming
    pieces = list(response.streaming_content)
    assert [piece.count(b'"secret_sha256"') for piece in pieces if b'"secret_sha256"' in piece] == [2, 2, 1]
    assert sum(b'"allowlists"' in piece for piece in pieces) == 1  # the endpoints: one chunk of one
    body = json.loads(b"".join(pieces))
    assert {key["key_id"] for key in body["keys"]} == created
    assert body["cursor"] == str(ConfigChange.objects.latest("id").id) == response["ETag"].split("-")[1].strip('"')
    assert [e["endpoint_id"] for e in body["endpoints"]] == [endpoint.public_id]
    zipped = gateway.get("/api/gateway/v1/config", HTTP_ACCEPT_ENCODING="gzip")
    assert json.loads(gzip.decompress(b"".join(zipped.streaming_content)))["keys"] == body["keys"]


def test_a_snapshot_holds_no_transaction_and_its_rows_are_at_least_as_new_as_its_cursor(
    gateway, endpoint, owner_a, monkeypatch
):
    monkeypatch.setattr(feed_module, "SNAPSHOT_CHUNK", 1)
    keys = [api_key_create(endpoint=endpoint, name=f"k{n}", actor=owner_a)[0] for n in range(3)]
    depth = len(connection.savepoint_ids)
    snapshot = feed_module.Snapshot()
    assert len(connection.savepoint_ids) == depth  # nothing held while the gateway reads (nor if it hangs up)
    pieces = [next(iter(snapshot))]  # the head: endpoints and services
    api_key_revoke(key=keys[2], actor=owner_a)  # changes after the cursor, while the snapshot is being read
    added, _ = api_key_create(endpoint=endpoint, name="late", actor=owner_a)
    pieces += list(snapshot)
    listed = {key["key_id"] for key in json.loads(b"".join(pieces))["keys"]}
    assert listed == {keys[0].key_id, keys[1].key_id, added.key_id}
    changed = {c["key"]["key_id"]: c["key"]["status"] for c in feed(gateway, since=snapshot.cursor)["changes"]
               if c["type"] == "key"}  # fmt: skip
    assert changed == {keys[2].key_id: "revoked", added.key_id: "active"}  # the gateway ends up right either way
    unread = feed_module.Snapshot()
    next(iter(unread))
    unread.close()  # the gateway hung up
    assert len(connection.savepoint_ids) == depth


def test_snapshot_statuses_equal_the_change_feeds_for_every_reason(gateway, team_a, owner_a, monkeypatch):
    """The snapshot takes a key's status from its endpoint's, memoized per chunk, unless something of the key's own
    decides it; the change feed works each out in full. Both must agree on every kind of key."""
    monkeypatch.setattr(feed_module, "SNAPSHOT_CHUNK", 3)  # chunks split endpoints' keys apart
    endpoints = {name: endpoint_create(team=team_a, name=name, services=["eth-mainnet"], actor=owner_a)
                 for name in ("plain", "suspended", "paused", "stopped")}  # fmt: skip
    keys = [api_key_create(endpoint=e, name=f"{name} {n}", actor=owner_a)[0] for name, e in endpoints.items()
            for n in range(3)]  # fmt: skip
    expired, _ = api_key_create(endpoint=endpoints["plain"], name="expired", actor=owner_a,
                                expires_at=timezone.now() + timedelta(seconds=1))  # fmt: skip
    key_stopped, _ = api_key_create(endpoint=endpoints["plain"], name="capped", actor=owner_a)
    endpoint_suspend(endpoint=endpoints["suspended"], reason="abuse report")
    endpoint_set_paused(endpoint=endpoints["paused"], paused=True, actor=owner_a)
    traffic_stop(team=team_a, reason="budget_exceeded", detail="-", source="t:e", endpoint=endpoints["stopped"])
    traffic_stop(team=team_a, reason="daily_cap_reached", detail="-", source="t:k", key=key_stopped)
    cursor = feed(gateway)["cursor"]
    with time_machine.travel(timezone.now() + timedelta(seconds=2)):
        snapshot = {k["key_id"]: k for k in feed(gateway)["keys"]}
        config_change_record(keys=[*keys, expired, key_stopped])  # every key in the change feed, as it is now
        changes = {c["key"]["key_id"]: c["key"] for c in feed(gateway, since=cursor)["changes"] if c["type"] == "key"}
    assert snapshot.keys() == changes.keys() == {k.key_id for k in [*keys, expired, key_stopped]}
    for key_id, record in snapshot.items():
        assert record == changes[key_id]
    statuses = {(r["status"], r["status_reason"]) for r in snapshot.values()}
    assert statuses == {("active", None), ("expired", None), ("suspended", "abuse report"),
                        ("suspended", "endpoint paused by the team"), ("suspended", "budget_exceeded"),
                        ("suspended", "daily_cap_reached")}  # fmt: skip


def test_gzip_when_accepted(gateway, endpoint, owner_a):
    for n in range(20):
        api_key_create(endpoint=endpoint, name=f"k{n}", actor=owner_a)
    response = gateway.get("/api/gateway/v1/config", HTTP_ACCEPT_ENCODING="gzip, br")
    assert response["Content-Encoding"] == "gzip"
    assert response["Vary"] == "Accept-Encoding"
    body = json.loads(gzip.decompress(body_of(response)))
    assert len(body["keys"]) == 20
    plain = gateway.get("/api/gateway/v1/config")
    assert not plain.has_header("Content-Encoding")
    plain_body = json.loads(body_of(plain))
    assert plain_body == body | {"generated_at": plain_body["generated_at"]}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"since": "abc"}, "invalid_cursor"),
        ({"since": "1", "limit": "0"}, "invalid_cursor"),
        ({"since": "-1"}, "invalid_cursor"),
    ],
)
def test_bad_cursors_are_400(gateway, params, code):
    response = gateway.get("/api/gateway/v1/config", params)
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_a_cursor_older_than_the_pruned_log_is_410(gateway, endpoint):
    ConfigFeedHorizon.objects.create(pruned_through_id=ConfigChange.objects.latest("id").id)
    response = gateway.get("/api/gateway/v1/config", {"since": "0"})
    assert response.status_code == 410
    assert response.json()["code"] == "cursor_expired"


# --- who may read it -------------------------------------------------------------------------


def test_team_tokens_and_sessions_cannot_read_the_feed(team_a, owner_a, client_for):
    _token, secret = management_token_create(team=team_a, name="t", scopes=["read", "write"], actor=owner_a)
    assert Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/api/gateway/v1/config").status_code == 401
    assert client_for(owner_a).get("/api/gateway/v1/config").status_code == 401
    assert Client().get("/api/gateway/v1/config").status_code == 401


def test_gateway_credentials_cannot_use_the_team_api(gateway, team_a):
    for path in ["/api/v1/teams/", f"/api/v1/teams/{team_a.slug}/", f"/api/v1/teams/{team_a.slug}/endpoints/"]:
        response = gateway.get(path)
        assert response.status_code == 401, path
        assert response.json()["detail"] == "This API takes management tokens (gmt_…)."


def test_revoked_gateway_credential_is_refused_and_last_seen_is_recorded():
    credential, secret = gateway_credential_create(name="us-east-1")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/gateway/v1/config").status_code == 200
    credential.refresh_from_db()
    assert credential.last_seen_at is not None
    gateway_credential_revoke(credential=credential)
    assert client.get("/api/gateway/v1/config").status_code == 401


def test_create_gateway_credential_command_prints_it_once():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_gateway_credential", "ap-south-1", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert secret.startswith("ggw_")
    credential = GatewayCredential.objects.get(name="ap-south-1")
    assert credential.secret_hash != secret
    assert secret not in err.getvalue()
    assert Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/api/gateway/v1/config").status_code == 200


# --- the change log's ordering barrier -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_a_programming_error(endpoint):
    with pytest.raises(RuntimeError):
        config_change_record(endpoints=[endpoint])


@pytest.mark.django_db(transaction=True)
def test_a_change_committing_late_is_never_skipped_by_a_reader(team_a, owner_a):
    """Writer A records (and holds the lock), writer B must wait: ids become visible in commit order."""
    endpoint = endpoint_create(team=team_a, name="e", services=["base"], actor=owner_a)
    a_recorded, release_a, b_done = threading.Event(), threading.Event(), threading.Event()
    ids = {}

    def writer_a():
        with transaction.atomic():
            config_change_record(endpoints=[endpoint])
            ids["a"] = ConfigChange.objects.latest("id").id
            a_recorded.set()
            release_a.wait(10)
        connections.close_all()

    def writer_b():
        a_recorded.wait(10)
        with transaction.atomic():
            config_change_record(endpoints=[endpoint])
            ids["b"] = ConfigChange.objects.latest("id").id
        b_done.set()
        connections.close_all()

    threads = [threading.Thread(target=writer_a), threading.Thread(target=writer_b)]
    for thread in threads:
        thread.start()
    a_recorded.wait(10)
    assert not b_done.wait(0.5), "B committed while A still held the change-log lock"
    reader_cursor = ConfigChange.objects.latest("id").id  # what a gateway polling now would see
    release_a.set()
    for thread in threads:
        thread.join(10)
    assert ids["a"] < ids["b"]
    assert reader_cursor < ids["a"]  # A's row was invisible, and so was every row after it
    assert ConfigChange.objects.filter(id__gt=reader_cursor).count() == 2
    connection.close()


def test_the_feed_publishes_every_field_the_gateway_enforces():
    """ENFORCED_FIELDS is the one list: a field added to it must reach the endpoint's record."""
    read: set[str] = set()

    class Row(dict):
        def __getitem__(self, field):
            read.add(field)
            return super().__getitem__(field)

    record = feed_module._endpoint_record(
        Row.fromkeys(feed_module._ENDPOINT_FIELDS), ["base"], 25, feed_module.Stops({}, {}, {})
    )
    assert set(ENFORCED_FIELDS) <= read
    assert list(record["allowlists"]) == ["origins", "user_agents", "ips", "contracts", "methods"]
