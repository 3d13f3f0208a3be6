"""Every parameter and path parser answers a crafted value with a 4xx and a message (or, on dashboard pages, drops
the filter with a message shown beside it) — never a 500. One row per parser; the URL walk in test_routes.py sends
hostile values to every route as well."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.services import management_token_create
from endpoints.services import gateway_credential_create
from tests.fixtures import make_invoice

pytestmark = pytest.mark.django_db

YEAR_ONE = {"range": "custom", "start": "0001-01-01T00:00", "end": "0001-01-02T00:00", "tz": "America/New_York"}
YEAR_MAX = {"range": "custom", "start": "9999-12-30T00:00", "end": "9999-12-31T23:59", "tz": "Pacific/Kiritimati"}

# (case, who, method, path, params, expected status, text the answer must contain)
CASES = [
    ("dashboard year 1 with a time zone", "owner", "get", "/t/{team}/", YEAR_ONE, 200,
     "A custom range needs a start before its end"),
    ("dashboard year 9999 with a time zone", "owner", "get", "/t/{team}/", YEAR_MAX, 200,
     "A custom range needs a start before its end"),
    ("panel year 1 (falls back to 24 hours)", "owner", "get", "/t/{team}/usage/panels/table", YEAR_ONE, 200,
     "Top methods"),
    ("panel year 9999 (falls back to 24 hours)", "owner", "get", "/t/{team}/usage/panels/latency", YEAR_MAX, 200,
     "Export CSV"),
    ("dashboard unknown zone", "owner", "get", "/t/{team}/", {"tz": "Mars/Olympus_Mons"}, 200,
     "Unknown time zone"),
    ("explorer year 1", "owner", "get", "/t/{team}/explorer/",
     {"window": "custom", "start": "0001-01-01T00:00", "end": "0001-01-01T01:00", "tz": "Asia/Tokyo"}, 200,
     "A custom window needs a start before its end"),
    ("explorer infinite latency", "owner", "get", "/t/{team}/explorer/", {"min_latency": "inf"}, 200,
     "Minimum latency must be a number"),
    ("explorer forged cursor", "owner", "get", "/t/{team}/explorer/", {"cursor": "MDAwMS0wMS0wMVQwMDowMHwxfHg"}, 200,
     "That page link is broken"),
    ("relay drawer unknown zone", "owner", "get", "/t/{team}/explorer/relays/{batch}/{relay}", {"tz": "Nowhere/Town"},
     400, "Unknown time zone"),
    ("relay drawer zone with NUL", "owner", "get", "/t/{team}/explorer/relays/{batch}/{relay}", {"tz": "UTC\x00"},
     400, "NUL character"),
    ("usage API limit=²", "token", "get", "/api/v1/teams/{team}/usage/breakdown", {"by": "method", "limit": "²"}, 400,
     "limit 1–100"),
    ("usage API year 1", "token", "get", "/api/v1/teams/{team}/usage/summary", YEAR_ONE, 400, "invalid_query"),
    ("usage API huge limit", "token", "get", "/api/v1/teams/{team}/usage/breakdown",
     {"by": "method", "limit": "9" * 40}, 400, "limit 1–100"),
    ("feed since=²", "gateway", "get", "/api/gateway/v1/config", {"since": "²"}, 400, "invalid_cursor"),
    ("feed limit=٣", "gateway", "get", "/api/gateway/v1/config", {"since": "0", "limit": "٣"}, 400, "invalid_cursor"),
    ("feed since beyond bigint", "gateway", "get", "/api/gateway/v1/config", {"since": "9" * 30}, 400,
     "invalid_cursor"),
    ("invoices until=9999-12-31", "owner", "get", "/t/{team}/billing/invoices/", {"until": "9999-12-31"}, 200,
     "Choose a date between 1970-01-01 and 2199-12-31"),
    ("invoice lines until=9999-12-31", "owner", "get", "/t/{team}/billing/invoices/lines.csv",
     {"until": "9999-12-31"}, 200, "invoice_number"),
    ("invoice lines invoice=²", "owner", "get", "/t/{team}/billing/invoices/lines.csv", {"invoice": "²"}, 404, ""),
    ("audit until=9999-12-31", "owner", "get", "/t/{team}/audit/", {"until": "9999-12-31"}, 200,
     "Choose a date between 1970-01-01 and 2199-12-31"),
    ("audit CSV since=0001-01-01", "owner", "get", "/t/{team}/audit.csv", {"since": "0001-01-01"}, 200, "action"),
    ("NUL in a path id (API)", "token", "get", "/api/v1/teams/{team}/endpoints/%00/", {}, 400, "NUL character"),
    ("NUL in a path id (page)", "owner", "get", "/t/{team}/endpoints/ep_%00/", {}, 400, "NUL character"),
    ("NUL in a key id", "token", "get", "/api/v1/teams/{team}/keys/key_%00x/", {}, 400, "NUL character"),
    ("NUL in a filter", "owner", "get", "/t/{team}/usage/panels/cards", {"method": "eth\x00call"}, 400,
     "NUL character"),
    ("NUL in a form field", "owner", "post", "/t/{team}/billing/checkout", {"plan": "growth\x00"}, 400,
     "NUL character"),
    ("NUL in the time zone form", "owner", "post", "/account/time-zone", {"tz": "UTC\x00"}, 400, "NUL character"),
    ("unknown panel", "owner", "get", "/t/{team}/usage/panels/nope", {}, 404, ""),
    ("unknown breakdown", "owner", "get", "/t/{team}/usage/panels/table", {"by": "planet"}, 404, ""),
    ("page=²", "owner", "get", "/t/{team}/audit/", {"page": "²"}, 200, "Audit log"),
]  # fmt: skip


@pytest.fixture
def callers(team_a, owner_a, usage):
    _token, token = management_token_create(team=team_a, name="t", scopes=["read"], actor=owner_a)
    _credential, gateway = gateway_credential_create(name="crafted")
    owner = Client()
    owner.force_login(owner_a)
    return {
        "owner": owner,
        "token": Client(HTTP_AUTHORIZATION=f"Bearer {token}"),
        "gateway": Client(HTTP_AUTHORIZATION=f"Bearer {gateway}"),
    }


FIELDS = ("case", "who", "method", "path", "params", "status", "text")


@pytest.mark.parametrize(FIELDS, CASES, ids=[c[0] for c in CASES])
def test_crafted_parameters_get_a_clear_4xx_never_a_500(
    case, who, method, path, params, status, text, callers, team_a, usage
):
    batch = usage.post([usage.record(1, id="crafted-relay")]).json()["batch_id"]
    make_invoice(team_a)
    url = path.format(team=team_a.slug, batch=batch, relay="crafted-relay")
    client = callers[who]
    response = client.get(url, params) if method == "get" else client.post(url, params)
    assert response.status_code == status, (case, response.status_code)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert text.encode() in body, (case, body[:300])
    if status >= 400 and url.startswith("/api/"):
        assert set(json.loads(body)) >= {"code", "detail"}
