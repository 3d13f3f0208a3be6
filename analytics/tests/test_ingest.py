import gzip
import json
import tracemalloc
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client

from accounts.services import management_token_create
from analytics import ingest
from analytics.models import IngestBatch
from endpoints.services import api_key_revoke, endpoint_delete

pytestmark = pytest.mark.django_db


def raw_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM analytics_relay")
        return cursor.fetchone()[0]


def test_a_valid_batch_is_committed_before_202(usage):
    records = [usage.record(n) for n in range(25)]
    response = usage.post(records, key="batch-1")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body == {"batch_id": body["batch_id"], "records": 25, "status": "accepted", "replayed": False}
    batch = IngestBatch.objects.get(pk=body["batch_id"])
    assert (batch.record_count, batch.idempotency_key, batch.aggregated_at) == (25, "batch-1", None)
    assert raw_count() == 25


def test_gzip_and_epoch_millisecond_timestamps_are_accepted(usage):
    ts_ms = int((usage.now - timedelta(minutes=3)).timestamp() * 1000)
    records = [usage.record(n, ts=ts_ms) for n in range(3)]
    body = gzip.compress("\n".join(json.dumps(r) for r in records).encode())
    response = usage.post(body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 202, response.content
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(ts), max(ts) FROM analytics_relay")
        low, high = cursor.fetchone()
    assert low == high == datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def test_llm_records_keep_their_tokens(usage):
    record = usage.record(key=usage.llm_key, service="llama-3.1-8b-instruct", method="chat.completions",
                          input_tokens=612, output_tokens=240, units=852, latency_ms=912.5)  # fmt: skip
    assert usage.post([record]).status_code == 202
    with connection.cursor() as cursor:
        cursor.execute("SELECT input_tokens, output_tokens, units, latency_ms FROM analytics_relay")
        assert cursor.fetchone() == (612, 240, 852, 912.5)


def test_revoked_keys_and_deleted_endpoints_still_resolve(usage, owner_a):
    api_key_revoke(key=usage.key, actor=owner_a)
    endpoint_delete(endpoint=usage.endpoint, actor=owner_a)
    assert usage.post([usage.record()]).status_code == 202


# --- idempotency ---------------------------------------------------------------------------------


def test_same_key_same_body_returns_the_original_answer_and_counts_nothing_twice(usage):
    records = [usage.record(n) for n in range(10)]
    first = usage.post(records, key="retry-me")
    again = usage.post(records, key="retry-me")
    assert again.status_code == 202
    assert again.json() == first.json() | {"replayed": True}
    assert again["Idempotent-Replayed"] == "true"
    assert IngestBatch.objects.count() == 1
    assert raw_count() == 10


def test_same_key_different_body_is_refused(usage):
    usage.post([usage.record(1)], key="k")
    response = usage.post([usage.record(2)], key="k")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"
    assert raw_count() == 1


def test_the_idempotency_key_is_required(usage):
    response = usage.gateway.post("/api/gateway/v1/usage", b"{}", content_type="application/x-ndjson")
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_required"


# --- bad input: a clear error and nothing stored -------------------------------------------------


def _bad(usage, **changes):
    record = usage.record(5)
    for field, value in changes.items():
        if value is ...:
            record.pop(field)
        else:
            record[field] = value
    return record


BAD_RECORDS = [
    ("not json", lambda u: b'{"id": "x", "ts": ', "not a JSON object"),
    ("wrong type", lambda u: _bad(u, status="200"), "Expected `int`, got `str` - at `$.status`"),
    ("missing field", lambda u: _bad(u, latency_ms=...), "missing required field `latency_ms`"),
    ("negative latency", lambda u: _bad(u, latency_ms=-1), "Expected `float` >= 0"),
    ("status out of range", lambda u: _bad(u, status=700), "<= 599"),
    ("unknown error class", lambda u: _bad(u, error_class="client"), "Invalid enum value 'client'"),
    ("naive timestamp", lambda u: _bad(u, ts="2026-11-26T10:00:00"), "Expected `datetime` with a timezone"),
    ("future", lambda u: _bad(u, ts=(u.now + timedelta(minutes=10)).isoformat()), "more than 5 minutes in the future"),
    ("too old", lambda u: _bad(u, ts=(u.now - timedelta(days=36)).isoformat()), "older than 35 days"),
    ("unknown key", lambda u: _bad(u, key_id="key_doesnotexist0000"), "unknown key_id 'key_doesnotexist0000'"),
    ("wrong endpoint", lambda u: _bad(u, endpoint_id="ep_someoneelse1"), "belongs to endpoint"),
    ("unknown service", lambda u: _bad(u, service="dogecoin"), "unknown service 'dogecoin'"),
    ("id too long", lambda u: _bad(u, id="x" * 65), "length <= 64"),
]


@pytest.mark.parametrize(("case", "make", "reason"), BAD_RECORDS, ids=[case[0] for case in BAD_RECORDS])
def test_one_bad_record_refuses_the_whole_batch_with_its_line_and_reason(usage, case, make, reason):
    bad = make(usage)
    lines = [json.dumps(usage.record(1)).encode(), bad if isinstance(bad, bytes) else json.dumps(bad).encode(),
             json.dumps(usage.record(3)).encode()]  # fmt: skip
    response = usage.post(b"\n".join(lines))
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "invalid_records"
    assert [e["line"] for e in body["errors"]] == [2]
    assert reason in body["errors"][0]["reason"]
    assert raw_count() == 0
    assert not IngestBatch.objects.exists()


def test_duplicate_relay_ids_in_a_batch_are_refused(usage):
    record = usage.record(1)
    response = usage.post([record, usage.record(2), record])
    assert response.status_code == 422
    assert response.json()["errors"] == [{"line": 3, "reason": f"id {record['id']!r} appears twice in this batch"}]


def test_every_bad_line_is_listed_up_to_a_hundred(usage):
    records = [usage.record(n, status="oops") for n in range(150)]
    body = usage.post(records).json()
    assert len(body["errors"]) == 100
    assert body["errors_truncated"] is True
    assert body["errors"][0]["line"] == 1


def test_an_empty_body_is_refused(usage):
    assert usage.post(b"\n\n").json()["code"] == "empty_batch"


def test_more_than_50k_records_is_413(usage):
    line = json.dumps(usage.record(1)).encode()
    response = usage.post(b"\n".join([line] * 50_001))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert raw_count() == 0


def test_more_than_10mb_is_413(usage):
    response = usage.post(b"x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["max_bytes"] == 10 * 1024 * 1024


def test_a_gzip_bomb_is_refused_without_inflating_it(usage):
    bomb = gzip.compress(b"\n" * (1024 * 1024 * 1024), compresslevel=9)  # 1 GiB of newlines in ~1 MB
    assert len(bomb) < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        response = usage.post(bomb, HTTP_CONTENT_ENCODING="gzip")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert peak < 64 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB while refusing a gzip bomb"


def test_broken_gzip_is_400(usage):
    good = gzip.compress(b'{"a": 1}\n' * 1000)
    assert usage.post(good[: len(good) // 2], HTTP_CONTENT_ENCODING="gzip").json()["code"] == "invalid_gzip"
    assert usage.post(b"not gzip at all", HTTP_CONTENT_ENCODING="gzip").json()["code"] == "invalid_gzip"


def test_zlib_framing_without_the_gzip_header_is_refused():
    chunks = iter([zlib.compress(b"")])  # not gzip framing
    with pytest.raises(ingest.IngestError):
        ingest.read_body(chunks, gzipped=True)


# --- who may push ----------------------------------------------------------------------------------


def test_team_tokens_and_sessions_cannot_push_usage(usage, team_a, owner_a, client_for):
    _token, secret = management_token_create(team=team_a, name="t", scopes=["read", "write"], actor=owner_a)
    body = json.dumps(usage.record()).encode()
    for client in (Client(HTTP_AUTHORIZATION=f"Bearer {secret}"), client_for(owner_a), Client()):
        response = client.post(
            "/api/gateway/v1/usage", body, content_type="application/x-ndjson", HTTP_IDEMPOTENCY_KEY="x"
        )
        assert response.status_code in (401, 403)
    assert raw_count() == 0


def test_a_gateway_credential_sees_nothing_of_teams(usage, team_a):
    from tests.test_permissions import TEAM_ROUTES, _url

    ids = {
        "membership_id": 1,
        "invitation_id": 1,
        "token_id": 1,
        "endpoint_id": usage.endpoint.public_id,
        "key_id": usage.key.key_id,
        "batch_id": 1,
        "relay_id": "r",
        "invoice_id": 1,
    }
    for route in TEAM_ROUTES:
        for method in route.actions:
            response = getattr(usage.gateway, method.lower())(_url(route, team_a.slug, ids))
            assert response.status_code in (302, 401), f"{route} {method}: {response.status_code}"
    response = usage.post([usage.record()])
    assert set(response.json()) == {"batch_id", "records", "status", "replayed"}  # nothing about the team


def test_two_objects_on_one_line_are_not_ndjson(usage):
    two = json.dumps(usage.record(1)) + "," + json.dumps(usage.record(2))
    response = usage.post(two.encode() + b"\n" + json.dumps(usage.record(3)).encode())
    assert response.status_code == 422
    assert [e["line"] for e in response.json()["errors"]] == [1]
    assert raw_count() == 0
