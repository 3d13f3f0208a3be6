"""OTLP/HTTP traces and logs at /api/gateway/v1/otlp/v1/{traces,logs}: OTLP JSON fixtures built from
opentelemetry-proto's own examples (examples/trace.json, examples/logs.json) and binary protobuf built here from the
proto classes, ingested through the NDJSON path's ingestion, counted exactly once through the real aggregation, and
read back through the usage API; answers as OTLP/HTTP specifies them."""

import gzip
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import Client
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from accounts.services import management_token_create
from analytics import formats_api
from analytics.models import IngestBatch, QuarantinedRecord, Relay
from analytics.tests.conftest import aggregate

pytestmark = pytest.mark.django_db

TRACES = "/api/gateway/v1/otlp/v1/traces"
LOGS = "/api/gateway/v1/otlp/v1/logs"
FIXTURES = Path(__file__).parent / "fixtures"
PROTOBUF = "application/x-protobuf"
TIME_FIELDS = ("startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "observedTimeUnixNano")


def fixture(usage, name: str) -> dict[str, Any]:
    """An OTLP JSON fixture with the test's keys, moved to two minutes ago (durations kept)."""
    text = (FIXTURES / name).read_text()
    for placeholder, value in (("$LLM_KEY", usage.llm_key.key_id), ("$KEY", usage.key.key_id),
                               ("$ENDPOINT", usage.endpoint.public_id)):  # fmt: skip
        text = text.replace(placeholder, value)
    document = json.loads(text)
    times: list[int] = []
    _walk_times(document, times.append)
    shift = int((usage.now - timedelta(minutes=2)).timestamp() * 1e9) - min(times)
    _walk_times(document, lambda _value: None, shift)
    return document


def _walk_times(value: Any, seen, shift: int = 0) -> None:
    if isinstance(value, list):
        for item in value:
            _walk_times(item, seen, shift)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in TIME_FIELDS:
                seen(item)
                value[key] = item + shift
            else:
                _walk_times(item, seen, shift)


def post(usage, url: str, body: bytes | dict, content_type: str = "application/json", **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return usage.gateway.post(url, raw, content_type=content_type, **headers)


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


def status_of(response) -> tuple[Any, dict[str, str], list[tuple[str, str]]]:
    """A refusal's google.rpc.Status, its ErrorInfo (reason and metadata) and its BadRequest's field violations."""
    if response["Content-Type"] == PROTOBUF:
        status = status_pb2.Status.FromString(response.content)
    else:
        status = json_format.Parse(response.content, status_pb2.Status())
    info: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(error_info)
            info = {"reason": error_info.reason, **error_info.metadata}
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations = [(violation.field, violation.description) for violation in bad_request.field_violations]
    return status, info, violations


# What the traces fixture holds for team A: 2 eth_call (26 CU each: one says so, one from the catalog), a rate-limited
# eth_getBalance (user), a 502 eth_blockNumber (upstream), a chat on llama-3.1-8b (600 / 300 tokens = 54 units); an
# upstream client span without gatehouse.key_id (skipped); an unknown key and an unknown model (quarantined).
TRACE_TOTALS = {"requests": 5, "successes": 3, "errors_user": 1, "errors_upstream": 1, "errors_gateway": 0,
                "status_2xx": 3, "status_4xx": 1, "status_5xx": 1, "units": 106, "input_tokens": 600,
                "output_tokens": 300, "req_bytes": 612, "resp_bytes": 2080}  # fmt: skip
TRACE_LATENCY_SUM = 40 + 60 + 2 + 3000 + 800


def test_otlp_json_traces_are_counted_exactly_through_the_rollups(usage, team_a, owner_a):
    response = post(usage, TRACES, fixture(usage, "otlp_traces.json"))
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    answer = json_format.Parse(response.content, ExportTraceServiceResponse())
    assert answer.partial_success.rejected_spans == 2
    assert "unknown_key 1, unknown_service 1" in answer.partial_success.error_message
    assert response["Gatehouse-Ignored"] == "1"
    aggregate()
    totals = summary(team_a, owner_a)
    assert {name: totals[name] for name in TRACE_TOTALS} == TRACE_TOTALS
    assert totals["latency_avg_ms"] == pytest.approx(TRACE_LATENCY_SUM / 5, abs=0.01)
    relays = {relay.relay_id: relay for relay in Relay.objects.all()}
    assert set(relays) == {"eee19b7ec3c1b174", "eee19b7ec3c1b175", "eee19b7ec3c1b176", "eee19b7ec3c1b177",
                           "aaa19b7ec3c1b101"}  # fmt: skip
    chat = relays["aaa19b7ec3c1b101"]
    assert (chat.service, chat.method, chat.units, chat.latency_ms, chat.region, chat.key_id) == (
        "llama-3.1-8b-instruct", "chat.completions", 54, 800.0, "eu-west-1", usage.llm_key.pk
    )  # fmt: skip
    assert (relays["eee19b7ec3c1b177"].status, relays["eee19b7ec3c1b177"].error_class) == (502, 2)
    parked = {record.reason: record for record in QuarantinedRecord.objects.all()}
    assert (parked["unknown_key"].key_id, parked["unknown_service"].service) == ("key_doesnotexist0000", "gpt-4o")


def _attributes(**values: Any) -> list[KeyValue]:
    pairs = []
    for name, value in values.items():
        key = name.replace("__", ".")
        if isinstance(value, int):
            pairs.append(KeyValue(key=key, value=AnyValue(int_value=value)))
        elif isinstance(value, float):
            pairs.append(KeyValue(key=key, value=AnyValue(double_value=value)))
        else:
            pairs.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    return pairs


def protobuf_traces(usage) -> ExportTraceServiceRequest:
    """The traces fixture's team-A spans, built from the proto classes as an SDK's exporter builds them."""
    start = int((usage.now - timedelta(minutes=2)).timestamp() * 1e9)
    ms = 1_000_000
    trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")

    def span(span_id: str, offset: int, duration: int, **attributes: Any) -> Span:
        return Span(trace_id=trace_id, span_id=bytes.fromhex(span_id), name="relay", kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=start + offset * ms, end_time_unix_nano=start + (offset + duration) * ms,
                    attributes=_attributes(**attributes))  # fmt: skip

    rpc = {"gatehouse__key_id": usage.key.key_id, "gatehouse__service": "eth-mainnet"}
    spans = [
        span("eee19b7ec3c1b174", 0, 40, **rpc, rpc__method="eth_call", http__response__status_code=200,
             http__request__body__size=312, http__response__body__size=1180, gatehouse__units=26),
        span("eee19b7ec3c1b175", 100, 60, **rpc, gatehouse__endpoint_id=usage.endpoint.public_id,
             rpc__method="eth_call", http__response__status_code=200, http__request__body__size=300,
             http__response__body__size=900),
        span("eee19b7ec3c1b176", 200, 2, **rpc, rpc__method="eth_getBalance", http__response__status_code=429),
        span("eee19b7ec3c1b177", 300, 3000, **rpc, rpc__method="eth_blockNumber", http__response__status_code=502),
        span("eee19b7ec3c1b178", 0, 35, upstream__cluster="anvil"),
        span("eee19b7ec3c1b179", 400, 20, gatehouse__key_id="key_doesnotexist0000", gatehouse__service="eth-mainnet",
             rpc__method="eth_call"),
        span("aaa19b7ec3c1b101", 500, 800, gatehouse__key_id=usage.llm_key.key_id, gen_ai__operation__name="chat",
             gen_ai__request__model="llama-3.1-8b-instruct", gen_ai__usage__input_tokens=600,
             gen_ai__usage__output_tokens=300, http__response__status_code=200),
        span("aaa19b7ec3c1b102", 600, 500, gatehouse__key_id=usage.llm_key.key_id, gen_ai__operation__name="chat",
             gen_ai__request__model="gpt-4o", gen_ai__usage__input_tokens=10, gen_ai__usage__output_tokens=20),
    ]  # fmt: skip
    resource = Resource(attributes=_attributes(service__name="envoy-gateway", cloud__region="eu-west-1"))
    scope = InstrumentationScope(name="envoy", version="1.36.0")
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])]
    )


def test_gzipped_protobuf_traces_are_counted_the_same_and_answered_in_protobuf(usage, team_a, owner_a):
    body = gzip.compress(protobuf_traces(usage).SerializeToString())
    response = post(usage, TRACES, body, PROTOBUF, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == PROTOBUF
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    aggregate()
    totals = summary(team_a, owner_a)
    assert {name: totals[name] for name in TRACE_TOTALS} == TRACE_TOTALS
    assert totals["latency_avg_ms"] == pytest.approx(TRACE_LATENCY_SUM / 5, abs=0.01)


def test_a_request_whose_relays_all_count_leaves_partial_success_unset(usage):
    request = protobuf_traces(usage)
    spans = request.resource_spans[0].scope_spans[0].spans
    del spans[5:]  # drop the unknown key and model
    response = post(usage, TRACES, request.SerializeToString(), PROTOBUF)
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert (response.status_code, answer.HasField("partial_success")) == (200, False)
    assert response.content == b""


# 3 relays on Base for team A: an eth_call with its own relay id (26 CU), an eth_getBalance whose relay id is its
# span id (19 CU), a 503 the gateway caused; an embedding on llama-3.1-8b (2,000 input tokens = 100 units); one log
# record of something else (skipped).
LOG_TOTALS = {"requests": 4, "successes": 3, "errors_user": 0, "errors_upstream": 0, "errors_gateway": 1,
              "units": 145, "input_tokens": 2000, "output_tokens": 0, "req_bytes": 312, "resp_bytes": 1180}  # fmt: skip


def test_otlp_json_logs_are_counted_exactly_through_the_rollups(usage, team_a, owner_a):
    response = post(usage, LOGS, fixture(usage, "otlp_logs.json"))
    assert response.status_code == 200, response.content
    answer = json_format.Parse(response.content, ExportLogsServiceResponse())
    assert not answer.HasField("partial_success")
    assert response["Gatehouse-Ignored"] == "1"
    aggregate()
    totals = summary(team_a, owner_a)
    assert {name: totals[name] for name in LOG_TOTALS} == LOG_TOTALS
    assert totals["latency_avg_ms"] == pytest.approx((41.7 + 12.3 + 5.0 + 90.0) / 4, abs=0.01)
    relays = {relay.relay_id: relay for relay in Relay.objects.all()}
    assert set(relays) == {"r-8f2c", "eee19b7ec3c1b180", "r-8f2e", "r-llm-1"}
    assert (relays["r-8f2c"].region, relays["r-llm-1"].region) == ("us-east-1", "eu-west-1")
    assert (relays["r-llm-1"].service, relays["r-llm-1"].method) == ("llama-3.1-8b-instruct", "embeddings")


def test_protobuf_logs_with_an_unknown_key_are_answered_with_their_rejected_count(usage):
    now = int((usage.now - timedelta(minutes=1)).timestamp() * 1e9)
    relay = {"gatehouse__service": "eth-mainnet", "rpc__method": "eth_call", "gatehouse__latency_ms": 9.5}
    records = [
        LogRecord(
            time_unix_nano=now, attributes=_attributes(gatehouse__key_id=key, gatehouse__relay_id=relay_id, **relay)
        )
        for key, relay_id in ((usage.key.key_id, "l-1"), ("key_gone000000000", "l-2"))
    ]
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])])
    response = post(usage, LOGS, request.SerializeToString(), PROTOBUF)
    assert response.status_code == 200, response.content
    answer = ExportLogsServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_log_records == 1
    assert "unknown_key 1" in answer.partial_success.error_message
    assert Relay.objects.get().units == 26  # eth_call's compute units, from the catalog
    assert Relay.objects.get().region == "otlp"


# --- exactly once ----------------------------------------------------------------------------------


def test_a_resent_export_is_answered_from_the_first_and_counted_once(usage, team_a, owner_a):
    body = protobuf_traces(usage).SerializeToString()
    first = post(usage, TRACES, body, PROTOBUF)
    again = post(usage, TRACES, gzip.compress(body), PROTOBUF, HTTP_CONTENT_ENCODING="gzip")  # same data, gzipped
    assert (again.status_code, again.content) == (200, first.content)
    assert again["Idempotent-Replayed"] == "true"
    assert again["Gatehouse-Batch"] == first["Gatehouse-Batch"]
    assert IngestBatch.objects.get().idempotency_key.startswith("otlp-traces:sha256:")
    assert (raw_count(), QuarantinedRecord.objects.count()) == (5, 2)
    aggregate()
    assert summary(team_a, owner_a)["requests"] == 5


def test_a_request_without_relays_is_a_success_that_stores_nothing(usage):
    for body in ({}, {"resourceSpans": []}, fixture(usage, "otlp_traces.json") | {"resourceSpans": []}):
        response = post(usage, TRACES, body)
        assert (response.status_code, response.content) == (200, b"{}")
    assert not IngestBatch.objects.exists()


# --- refusals: a google.rpc.Status in the request's encoding, never a 500, nothing stored ------------


def _mutate(document: dict, **attributes: Any) -> dict:
    """The traces fixture with attributes of its first span replaced (JSON AnyValue)."""
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    kept = [pair for pair in span["attributes"] if pair["key"] not in attributes]
    span["attributes"] = kept + [{"key": key, "value": value} for key, value in attributes.items()]
    return document


FIRST_SPAN = "resourceSpans[0].scopeSpans[0].spans[0]"
BAD = [
    ("garbage protobuf", lambda u: b"\xff\xff\xff\xff", PROTOBUF, 400, "invalid_otlp", None),
    ("JSON that is not an object", lambda u: b"[1, 2]", "application/json", 400, "invalid_otlp", None),
    ("not JSON", lambda u: b"{resourceSpans", "application/json", 400, "invalid_otlp", None),
    ("a span id not in hex", lambda u: json.dumps(fixture(u, "otlp_traces.json")).replace(
        "EEE19B7EC3C1B174", "not-hex!").encode(), "application/json", 400, "invalid_otlp", None),
    ("a wrong field type", lambda u: b'{"resourceSpans": {"x": 1}}', "application/json", 400, "invalid_otlp", None),
    ("an error class the contract has not", lambda u: _mutate(
        fixture(u, "otlp_traces.json"), **{"gatehouse.error_class": {"stringValue": "client"}}),
     "application/json", 400, "invalid_records", (FIRST_SPAN, "Invalid enum value 'client' - at `$.error_class`")),
    ("units that are no number", lambda u: _mutate(
        fixture(u, "otlp_traces.json"), **{"gatehouse.units": {"stringValue": "many"}}),
     "application/json", 400, "invalid_records", (FIRST_SPAN, "Expected `int`, got `str` - at `$.units`")),
    ("a span that ends before it starts", lambda u: json.loads(json.dumps(fixture(u, "otlp_traces.json")),
        object_hook=lambda o: o | {"endTimeUnixNano": 1} if "endTimeUnixNano" in o else o),
     "application/json", 400, "invalid_records", (FIRST_SPAN, "endTimeUnixNano is before startTimeUnixNano")),
    ("an unknown content type", lambda u: b"{}", "text/plain", 415, "unsupported_media_type", None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "content_type", "status", "code", "violation"), BAD, ids=[b[0] for b in BAD])
def test_bad_exports_are_refused_with_a_status_in_the_requests_encoding(
    usage, case, make, content_type, status, code, violation
):
    response = post(usage, TRACES, make(usage), content_type)
    assert response.status_code == status, response.content
    expected_type = PROTOBUF if content_type == PROTOBUF else "application/json"
    assert response["Content-Type"] == expected_type
    rpc_status, info, violations = status_of(response)
    assert info["reason"] == code
    assert rpc_status.message
    if violation is not None:
        assert violations[0] == violation
    assert raw_count() == 0
    assert not IngestBatch.objects.exists()


def test_a_log_record_needs_its_latency_and_a_relay_id(usage):
    now = int((usage.now - timedelta(minutes=1)).timestamp() * 1e9)
    record = LogRecord(time_unix_nano=now, attributes=_attributes(gatehouse__key_id=usage.key.key_id))
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])])
    response = post(usage, LOGS, request.SerializeToString(), PROTOBUF)
    assert response.status_code == 400
    _status, info, violations = status_of(response)
    assert info["reason"] == "invalid_records"
    assert violations == [("resourceLogs[0].scopeLogs[0].logRecords[0]",
                           "gatehouse.latency_ms: a log record needs this attribute (milliseconds)")]  # fmt: skip
    request.resource_logs[0].scope_logs[0].log_records[0].attributes.extend(_attributes(gatehouse__latency_ms=3.0))
    response = post(usage, LOGS, request.SerializeToString(), PROTOBUF)
    assert status_of(response)[2][0][1].startswith("gatehouse.relay_id: a log record needs this attribute")


def test_too_large_and_broken_gzip_bodies_are_refused(usage):
    too_large = post(usage, TRACES, b"x" * (10 * 1024 * 1024 + 1), PROTOBUF)
    assert (too_large.status_code, status_of(too_large)[1]["reason"]) == (413, "payload_too_large")
    broken = post(usage, TRACES, b"not gzip", PROTOBUF, HTTP_CONTENT_ENCODING="gzip")
    assert (broken.status_code, status_of(broken)[1]["reason"]) == (400, "invalid_gzip")


def test_only_gateway_credentials_may_export(usage, team_a, owner_a):
    _token, secret = management_token_create(team=team_a, name="t", scopes=["read", "write"], actor=owner_a)
    body = protobuf_traces(usage).SerializeToString()
    for client in (Client(HTTP_AUTHORIZATION=f"Bearer {secret}"), Client()):
        response = client.post(TRACES, body, content_type=PROTOBUF)
        assert response.status_code in (401, 403)
        assert response["Content-Type"] == PROTOBUF
        assert status_of(response)[1]["reason"] in ("not_authenticated", "authentication_failed", "permission_denied")
    assert Client().post(TRACES, b"{}", content_type="application/json")["WWW-Authenticate"].startswith("Bearer")
    assert raw_count() == 0


def test_a_database_outage_is_a_retryable_503(usage, monkeypatch):
    def unavailable(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(formats_api.formats, "ingest_converted", unavailable)
    response = post(usage, TRACES, protobuf_traces(usage).SerializeToString(), PROTOBUF)
    assert (response.status_code, response["Retry-After"]) == (503, "5")
    assert status_of(response)[1]["reason"] == "unavailable"


ODD_VALUES = {
    "an array": {"arrayValue": {"values": [{"stringValue": "a"}]}},
    "a key-value list": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": 1}}]}},
    "bytes": {"bytesValue": "AAE="},
    "a bool": {"boolValue": True},
    "a double": {"doubleValue": 1.5},
    "nothing": {},
}
ATTRIBUTE_NAMES = ["gatehouse.key_id", "gatehouse.relay_id", "gatehouse.endpoint_id", "gatehouse.service",
                   "gatehouse.method", "rpc.method", "gen_ai.operation.name", "gen_ai.request.model",
                   "http.response.status_code", "gatehouse.error_class", "gatehouse.units", "gatehouse.latency_ms",
                   "gen_ai.usage.input_tokens", "http.request.body.size", "gatehouse.region"]  # fmt: skip


@pytest.mark.parametrize("attribute", ATTRIBUTE_NAMES)
def test_an_attribute_of_any_type_is_read_or_refused_never_a_500(usage, attribute):
    for kind, value in ODD_VALUES.items():
        response = post(usage, TRACES, _mutate(fixture(usage, "otlp_traces.json"), **{attribute: value}))
        assert response.status_code in (200, 400), f"{attribute} as {kind}: {response.status_code}"
        if response.status_code == 400:
            assert status_of(response)[1]["reason"] == "invalid_records", (attribute, kind)
