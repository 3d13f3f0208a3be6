import gzip
import json
import tracemalloc
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from redis.exceptions import RedisError

from accounts.services import management_token_create
from analytics import ingest
from analytics.models import RELAY_COLUMNS, IngestBatch, Relay
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
    assert body == {"batch_id": body["batch_id"], "records": 25, "quarantined": 0, "quarantine_reasons": {},
                    "status": "accepted", "replayed": False}  # fmt: skip
    batch = IngestBatch.objects.get(pk=body["batch_id"])
    assert (batch.record_count, batch.idempotency_key, batch.aggregated_at) == (25, "batch-1", None)
    assert raw_count() == 25


def test_relay_columns_are_the_relay_logs_in_table_order():
    """COPY writes rows by position: RELAY_COLUMNS, the table (made by SQL migrations) and the model must agree."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, udt_name FROM information_schema.columns "
            "WHERE table_name = 'analytics_relay' ORDER BY ordinal_position"
        )
        table = cursor.fetchall()
    sql_types = {"timestamptz": "timestamptz", "int8": "int8", "int4": "int4", "int2": "int2", "text": "varchar",
                 "float4": "float4"}  # fmt: skip
    assert table == [(column, sql_types[kind]) for column, kind in RELAY_COLUMNS.items()]
    assert [field.column for field in Relay._meta.concrete_fields] == list(RELAY_COLUMNS)


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
    ("id too long", lambda u: _bad(u, id="x" * 65), "length <= 64"),
    ("newline in id", lambda u: _bad(u, id="relay\n2"), "id: only printable ASCII"),
    ("tab in id", lambda u: _bad(u, id="relay\t2"), "id: only printable ASCII"),
    ("NUL in method", lambda u: _bad(u, method="eth_call\u0000"), "method: only printable ASCII"),
    ("escape in region", lambda u: _bad(u, region="eu\u001b[31m"), "region: only printable ASCII"),
    ("DEL in id", lambda u: _bad(u, id="relay\u007f"), "id: only printable ASCII"),
    ("non-ASCII in method", lambda u: _bad(u, method="eth_caII\u200b"), "method: only printable ASCII"),
    ("line separator in region", lambda u: _bad(u, region="eu\u2028"), "region: only printable ASCII"),
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
        "budget_id": 1,
        "alert_rule_id": 1,
        "webhook_id": 1,
        "delivery_id": 1,
    }
    for route in TEAM_ROUTES:
        for method in route.actions:
            response = getattr(usage.gateway, method.lower())(_url(route, team_a.slug, ids))
            assert response.status_code in (302, 401), f"{route} {method}: {response.status_code}"
    response = usage.post([usage.record()])
    assert set(response.json()) == {"batch_id", "records", "quarantined", "quarantine_reasons", "status", "replayed"}


def test_two_objects_on_one_line_are_not_ndjson(usage):
    two = json.dumps(usage.record(1)) + "," + json.dumps(usage.record(2))
    response = usage.post(two.encode() + b"\n" + json.dumps(usage.record(3)).encode())
    assert response.status_code == 422
    assert [e["line"] for e in response.json()["errors"]] == [1]
    assert raw_count() == 0


def test_printable_ids_with_url_and_csv_characters_are_accepted_and_open_in_the_explorer(usage, client_for, owner_a):
    # Everything from space to ~ is allowed, including what URLs and spreadsheets treat specially.
    odd = ["a/b?c#d", "100%", "=cmd|' /C calc'!A0", "<script>", "with space", "-1+2"]
    response = usage.post([usage.record(n, id=relay_id, method="m" + relay_id) for n, relay_id in enumerate(odd)])
    assert response.status_code == 202, response.content
    batch_id = response.json()["batch_id"]
    client = client_for(owner_a)
    team = usage.endpoint.team.slug
    page = client.get(f"/t/{team}/explorer/", {"window": "24h"})
    assert page.status_code == 200
    from urllib.parse import quote

    for relay_id in odd:
        drawer = client.get(f"/t/{team}/explorer/relays/{batch_id}/{quote(relay_id, safe='')}")
        assert drawer.status_code == 200, relay_id


# --- gzip framing ------------------------------------------------------------------------------------


def _ndjson(usage, numbers) -> bytes:
    return b"".join(json.dumps(usage.record(n)).encode() + b"\n" for n in numbers)


def test_every_member_of_a_multi_member_gzip_body_is_read(usage):
    # `cat a.gz b.gz c.gz` is one valid gzip file: all three members are the body.
    body = gzip.compress(_ndjson(usage, range(3))) + gzip.compress(_ndjson(usage, range(3, 5)))
    body += gzip.compress(_ndjson(usage, range(5, 9)))
    response = usage.post(body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 202, response.content
    assert response.json()["records"] == 9
    assert raw_count() == 9


def test_multi_member_gzip_is_read_whatever_the_chunking():
    members = [gzip.compress(b"%d\n" % n * 1000) for n in range(4)]
    whole = b"".join(members)
    expected = b"".join(gzip.decompress(m) for m in members)
    for size in (1, 7, 64, 4096, len(whole)):
        chunks = iter([whole[i : i + size] for i in range(0, len(whole), size)])
        assert ingest.read_body(chunks, gzipped=True) == expected, size


@pytest.mark.parametrize(
    "trailer", [b"garbage", b"\x00\x00\x00\x00", b"\x1f", b"\x1f\x8b\x08"], ids=["text", "zeros", "half-magic", "cut"]
)
def test_bytes_after_the_gzip_data_are_refused_and_nothing_is_stored(usage, trailer):
    body = gzip.compress(_ndjson(usage, range(3))) + trailer
    response = usage.post(body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_gzip"
    assert raw_count() == 0
    assert not IngestBatch.objects.exists()


def test_the_size_cap_counts_every_member(usage):
    member = gzip.compress(b"\n" * (6 * 1024 * 1024))
    response = usage.post(member + member, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413


# --- quarantine: one tenant's unattributable record never blocks another's usage ------------------


def test_records_of_a_deleted_teams_key_are_quarantined_and_the_rest_of_the_batch_is_stored(usage, team_b, outsider_b):
    from analytics.models import QuarantinedRecord
    from billing.services import team_delete
    from endpoints.services import api_key_create, endpoint_create

    endpoint_b = endpoint_create(team=team_b, name="B", services=["eth-mainnet"], actor=outsider_b)
    key_b, _ = api_key_create(endpoint=endpoint_b, name="b", actor=outsider_b)
    team_delete(team=team_b, actor=outsider_b, confirmation=team_b.slug)
    records = [usage.record(n) for n in range(4)]
    orphan = usage.record(9, key=key_b)
    response = usage.post([records[0], records[1], orphan, records[2], records[3]], key="mixed")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["records"], body["quarantined"], body["quarantine_reasons"]) == (4, 1, {"team_deleted": 1})
    assert raw_count() == 4
    batch = IngestBatch.objects.get(pk=body["batch_id"])
    assert (batch.record_count, batch.quarantined_count) == (4, 1)
    parked = QuarantinedRecord.objects.get()
    assert (parked.batch_id, parked.line, parked.reason, parked.relay_id, parked.key_id) == (
        batch.pk, 3, "team_deleted", orphan["id"], key_b.key_id
    )  # fmt: skip
    assert parked.team_id == team_b.pk
    assert parked.record["units"] == orphan["units"]
    # A retry with the same key answers the same, counting nothing twice.
    again = usage.post([records[0], records[1], orphan, records[2], records[3]], key="mixed")
    assert again.json() == body | {"replayed": True}
    assert QuarantinedRecord.objects.count() == 1


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"key_id": "key_doesnotexist0000"}, "unknown_key"),
        ({"endpoint_id": "ep_someoneelse1"}, "endpoint_mismatch"),
        ({"service": "dogecoin"}, "unknown_service"),
    ],
)
def test_unattributable_records_are_quarantined_with_their_reason(usage, changes, reason):
    from analytics.models import QuarantinedRecord

    response = usage.post([usage.record(1), usage.record(2, **changes)])
    assert response.status_code == 202, response.content
    assert response.json()["quarantine_reasons"] == {reason: 1}
    assert raw_count() == 1
    assert QuarantinedRecord.objects.get().reason == reason


def test_a_batch_of_only_quarantined_records_is_accepted_with_nothing_to_aggregate(usage):
    from analytics import aggregation

    response = usage.post([usage.record(n, key_id="key_gone000000000") for n in range(3)])
    assert response.status_code == 202
    assert (response.json()["records"], response.json()["quarantined"]) == (0, 3)
    aggregation.aggregate_pending()
    assert not IngestBatch.objects.filter(aggregated_at__isnull=True).exists()


# --- Redis is not needed to acknowledge a batch -------------------------------------------------------


def test_ingestion_acknowledges_while_redis_is_down(usage, settings):
    from django.core.cache import caches

    from analytics import ingest as ingest_module

    ingest_module._service_ids = (0.0, frozenset())  # the catalog must come from PostgreSQL, not a warm cache
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    with pytest.raises(RedisError):
        caches["default"].get("probe")
    response = usage.post([usage.record(n) for n in range(5)])
    assert response.status_code == 202, response.content
    assert raw_count() == 5


def test_the_operator_sees_the_quarantine_and_others_do_not(usage, client_for, owner_a, admin_user, client):
    response = usage.post([usage.record(1), usage.record(2, key_id="key_gone000000000")])
    assert response.status_code == 202
    assert client_for(owner_a).get("/operator/quarantine/").status_code == 403
    client.force_login(admin_user)
    page = client.get("/operator/quarantine/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "key_gone000000000" in html
    assert "Unknown key" in html
    assert "eu-west-1" in html  # the gateway's name
    assert "(1 in 7 days)" in client.get("/operator/").content.decode()
    metrics = client.get("/metrics").content.decode()
    assert "gatehouse_quarantined_records_7d 1" in metrics
