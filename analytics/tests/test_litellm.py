"""LiteLLM's logging payload at /api/gateway/v1/usage/litellm: the documented StandardLoggingPayload (fixture built from
LiteLLM's own spec and test payload) ingested through the NDJSON path's ingestion, counted exactly once through the
real aggregation, and read back through the usage API."""

import gzip
import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from accounts.services import management_token_create
from analytics.formats import Catalog, litellm
from analytics.models import IngestBatch, QuarantinedRecord, Relay
from analytics.tests.conftest import aggregate
from endpoints.models import Service, ServiceKind

pytestmark = pytest.mark.django_db

URL = "/api/gateway/v1/usage/litellm"
FIXTURE = Path(__file__).parent / "fixtures" / "litellm_standard_logging_payloads.json"
TIMES = ("startTime", "endTime", "completionStartTime")


def payloads(usage) -> list[dict]:
    """The fixture with the test's keys, moved to two minutes ago (durations kept)."""
    text = FIXTURE.read_text().replace("$LLM_KEY", usage.llm_key.key_id)
    data = json.loads(text)
    shift = (usage.now - timedelta(minutes=2)).timestamp() - min(item["startTime"] for item in data)
    for item in data:
        for name in TIMES:
            if name in item:
                item[name] += shift
    return data


def post(usage, body, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return usage.gateway.post(URL, raw, content_type="application/json", **headers)


def raw_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM analytics_relay")
        return cursor.fetchone()[0]


def summary(team, owner) -> dict:
    _token, secret = management_token_create(team=team, name="usage", scopes=["read"], actor=owner)
    response = Client(HTTP_AUTHORIZATION=f"Bearer {secret}").get(
        f"/api/v1/teams/{team.slug}/usage/summary", {"range": "1h"}
    )
    assert response.status_code == 200, response.content
    return response.json()


# --- the documented payload, counted exactly -------------------------------------------------------


def test_the_documented_payloads_are_counted_exactly_through_the_rollups(usage, team_a, owner_a):
    response = post(usage, payloads(usage))
    assert response.status_code == 202, response.content
    body = response.json()
    assert body == {"batch_id": body["batch_id"], "records": 6, "quarantined": 2,
                    "quarantine_reasons": {"unknown_key": 1, "unknown_service": 1}, "status": "accepted",
                    "replayed": False}  # fmt: skip
    aggregate()
    totals = summary(team_a, owner_a)
    # 3 successes (chat, streamed chat, embedding), a rate limit (user), a timeout (upstream), a JSONDecodeError
    # (LiteLLM's own: gateway). Units: tokens at llama-3.1-8b's list prices ($0.05 / $0.08 per million tokens):
    # 600 × 0.05 + 300 × 0.08 = 54, 1000 × 0.05 + 500 × 0.08 = 90, 200 × 0.05 = 10.
    expected = {"requests": 6, "successes": 3, "errors_user": 1, "errors_upstream": 1, "errors_gateway": 1,
                "status_2xx": 3, "status_4xx": 2, "status_5xx": 1, "input_tokens": 1800, "output_tokens": 800,
                "units": 154, "req_bytes": 0, "resp_bytes": 0}  # fmt: skip
    assert {name: totals[name] for name in expected} == expected
    # endTime − startTime: 800 + 1200 + 100 + 50 + 30,000 + 10 ms.
    assert totals["latency_avg_ms"] == pytest.approx(32160 / 6, abs=0.01)
    relays = {relay.relay_id: relay for relay in Relay.objects.all()}
    chat = relays["chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f"]
    assert (chat.service, chat.method, chat.status, chat.error_class, chat.input_tokens, chat.output_tokens,
            chat.units, chat.region, chat.key_id, chat.endpoint_id) == (
        "llama-3.1-8b-instruct", "chat.completions", 200, 0, 600, 300, 54, "litellm", usage.llm_key.pk,
        usage.endpoint.pk,
    )  # fmt: skip
    assert relays["4d9a6c1e-0e77-4a43-a2f4-6a6f8c1b2d3e"].method == "embeddings"
    failures = ("0a8f6f0e-93b4-4a8e-9d3f-7e5c4b3a2910", "6c2b1a09-8f7e-4d6c-b5a4-938271605f4e",
                "b7e4c3d2-1a0f-4e9d-8c7b-6a5f4e3d2c1b")  # fmt: skip
    assert [(relays[relay_id].status, relays[relay_id].error_class) for relay_id in failures] == [
        (429, 1), (408, 2), (500, 3)
    ]  # fmt: skip


def test_unknown_models_and_keys_are_quarantined_with_their_reason_and_the_requesters_metadata_is_never_the_key(usage):
    post(usage, payloads(usage))
    parked = {record.reason: record for record in QuarantinedRecord.objects.all()}
    assert set(parked) == {"unknown_service", "unknown_key"}
    assert parked["unknown_service"].service == "gpt-4o"
    assert parked["unknown_service"].detail == "unknown service 'gpt-4o'"
    assert parked["unknown_service"].team_id == usage.llm_key.team_id
    # The last payload names the key only in requester_metadata, which any caller sets: not trusted.
    assert parked["unknown_key"].key_id == "(none)"
    assert parked["unknown_key"].relay_id == "chatcmpl-f00dfeed-0000-4000-8000-000000000002"


def test_a_model_matching_no_llm_service_never_lands_on_an_rpc_service(usage):
    item = payloads(usage)[0] | {"model_group": "base", "model": "base"}
    body = post(usage, [item]).json()
    assert body["quarantine_reasons"] == {"unknown_service": 1}
    assert QuarantinedRecord.objects.get().service == "llm:base"


# --- exactly once ----------------------------------------------------------------------------------


def test_a_redelivered_batch_is_answered_from_the_first_and_counted_once(usage, team_a, owner_a):
    data = payloads(usage)
    first = post(usage, data)
    again = post(usage, data)
    assert again.status_code == 202
    assert again.json() == first.json() | {"replayed": True}
    assert again["Idempotent-Replayed"] == "true"
    batch = IngestBatch.objects.get()
    assert batch.idempotency_key == "litellm:sha256:" + hashlib.sha256(json.dumps(data).encode()).hexdigest()
    assert (raw_count(), QuarantinedRecord.objects.count()) == (6, 2)
    aggregate()
    post(usage, data)
    aggregate()
    assert summary(team_a, owner_a)["requests"] == 6


def test_a_redelivery_after_the_catalog_changed_is_still_the_first_batch(usage, team_a, owner_a):
    """The body's digest names the batch: the same payload converted differently since (a model added to the catalog)
    is the batch already stored, not a conflict and not a second count."""
    data = payloads(usage)
    first = post(usage, data).json()
    Service.objects.create(id="gpt-4o", name="GPT-4o", kind=ServiceKind.LLM, chain_family="llm",
                           url_template="https://llm.example/{key_id}")  # fmt: skip
    again = post(usage, data)
    assert again.status_code == 202, again.content
    assert again.json() == first | {"replayed": True}
    assert raw_count() == 6


def test_an_idempotency_key_header_is_used_when_given(usage):
    data = payloads(usage)
    assert post(usage, data, HTTP_IDEMPOTENCY_KEY="litellm-batch-7").status_code == 202
    assert IngestBatch.objects.get().idempotency_key == "litellm-batch-7"
    response = post(usage, data[:2], HTTP_IDEMPOTENCY_KEY="litellm-batch-7")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_reused"


def test_every_log_format_of_the_generic_logger_is_read(usage):
    data = payloads(usage)
    ndjson = "\n".join(json.dumps(item) for item in data[:3]).encode()  # log_format: ndjson
    assert post(usage, ndjson).json()["records"] == 3
    assert post(usage, data[3]).json()["records"] == 1  # log_format: single
    gzipped = gzip.compress(json.dumps(data[4:6]).encode())
    assert post(usage, gzipped, HTTP_CONTENT_ENCODING="gzip").json()["records"] == 2
    assert raw_count() == 6


def test_the_region_comes_from_the_url(usage):
    item = payloads(usage)[0]
    response = usage.gateway.post(f"{URL}?region=eu-west-1", json.dumps([item]), content_type="application/json")
    assert response.status_code == 202
    assert Relay.objects.get().region == "eu-west-1"
    refused = usage.gateway.post(f"{URL}?region=eu%0Awest", json.dumps([item]), content_type="application/json")
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_region")


# --- refusals: machine-readable, never a 500, nothing stored ---------------------------------------


def _without(item: dict, name: str) -> dict:
    return {key: value for key, value in item.items() if key != name}


BAD = [
    ("not JSON", lambda items: b"{not json", 400, "invalid_json", None),
    ("a number", lambda items: b"42", 400, "invalid_payload", None),
    ("an empty array", lambda items: b"[]", 400, "empty_batch", None),
    ("no id", lambda items: [items[0], _without(items[1], "id")], 422, "invalid_records",
     {"line": 2, "source": "[1]", "reason": "Object missing required field `id`"}),
    ("negative tokens", lambda items: [items[0] | {"prompt_tokens": -1}], 422, "invalid_records",
     {"line": 1, "source": "[0]", "reason": "Expected `int` >= 0 - at `$.prompt_tokens`"}),
    ("a time that is none", lambda items: [items[0] | {"startTime": "yesterday"}], 422, "invalid_records",
     {"line": 1, "source": "[0]", "reason": "startTime: expected Unix seconds or an ISO 8601 time, got 'yesterday'"}),
    ("a time beyond the calendar", lambda items: [items[0] | {"endTime": 1e300}], 422, "invalid_records",
     {"line": 1, "source": "[0]", "reason": "endTime: expected Unix seconds or an ISO 8601 time, got 1e+300"}),
    ("too old", lambda items: [items[0], items[1] | {"startTime": 1000.0, "endTime": 1001.0}], 422,
     "invalid_records", {"line": 2, "source": "[1]", "reason": "ts is older than 35 days"}),
    ("the same id twice", lambda items: [items[0], items[0]], 422, "invalid_records",
     {"line": 2, "source": "[1]",
      "reason": "id 'chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f' appears twice in this batch"}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "status", "code", "first_error"), BAD, ids=[case[0] for case in BAD])
def test_bad_payloads_are_refused_with_a_machine_readable_body(usage, case, make, status, code, first_error):
    response = post(usage, make(payloads(usage)))
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    if first_error is not None:
        assert body["errors"][0] == first_error
    assert raw_count() == 0
    assert not IngestBatch.objects.exists()


def test_broken_gzip_and_unknown_encodings_are_refused(usage):
    assert post(usage, b"not gzip", HTTP_CONTENT_ENCODING="gzip").json()["code"] == "invalid_gzip"
    assert post(usage, b"[]", HTTP_CONTENT_ENCODING="br").status_code == 415


def test_only_gateway_credentials_may_push(usage, team_a, owner_a, client_for):
    _token, secret = management_token_create(team=team_a, name="t", scopes=["read", "write"], actor=owner_a)
    body = json.dumps(payloads(usage))
    for client in (Client(HTTP_AUTHORIZATION=f"Bearer {secret}"), client_for(owner_a), Client()):
        assert client.post(URL, body, content_type="application/json").status_code in (401, 403)
    assert raw_count() == 0


# --- the mapping, item by item ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("information", "status", "error_class"),
    [
        ({"error_class": "AuthenticationError", "error_code": "401"}, 401, "user"),
        ({"error_class": "BadRequestError", "error_code": "400"}, 400, "user"),
        ({"error_class": "ContextWindowExceededError", "error_code": ""}, 400, "user"),
        ({"error_class": "RateLimitError", "error_code": 429}, 429, "user"),
        ({"error_class": "Timeout", "error_code": "408"}, 408, "upstream"),
        ({"error_class": "ServiceUnavailableError", "error_code": "503"}, 503, "upstream"),
        ({"error_class": "APIConnectionError", "error_code": "500"}, 500, "upstream"),
        ({"error_class": "litellm.InternalServerError", "error_code": "500"}, 500, "upstream"),
        ({"error_class": "KeyError", "error_code": ""}, 500, "gateway"),
        ({"error_class": "ProxyException", "error_code": "401"}, 401, "user"),
        ({"error_class": "ProxyException", "error_code": "504"}, 504, "upstream"),
        ({"error_class": "ProxyException", "error_code": "200"}, 500, "gateway"),
        ({}, 500, "gateway"),
    ],
)
def test_litellm_exceptions_map_to_who_caused_them(usage, information, status, error_class):
    item = payloads(usage)[0] | {"status": "failure", "error_information": information}
    converted = litellm.convert([item], catalog=Catalog.load(), region="litellm")
    record = converted.records[0]
    assert (record["status"], record["error_class"], record["units"]) == (status, error_class, 0)


@pytest.mark.parametrize(
    ("call_type", "method"),
    [("acompletion", "chat.completions"), ("completion", "chat.completions"), ("atext_completion", "completions"),
     ("aembedding", "embeddings"), ("aresponses", "responses"), ("anthropic_messages", "messages"),
     ("litellm.completion", "chat.completions"), ("pass_through_endpoint", "pass_through_endpoint"), ("", "unknown")],
)  # fmt: skip
def test_call_types_become_methods(usage, call_type, method):
    item = payloads(usage)[0] | {"call_type": call_type}
    assert litellm.convert([item], catalog=Catalog.load(), region="x").records[0]["method"] == method


def test_a_payload_id_the_contract_cannot_hold_becomes_a_stable_digest(usage):
    item = payloads(usage)[0] | {"id": "x" * 100}
    first = litellm.convert([item], catalog=Catalog.load(), region="x").records[0]["id"]
    assert first == litellm.convert([item], catalog=Catalog.load(), region="x").records[0]["id"]
    assert first.startswith("litellm-")
    assert len(first) <= 64
