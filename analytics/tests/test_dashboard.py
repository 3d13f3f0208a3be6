import csv
import html
import io
import json
import math
import random
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.services import management_token_create
from analytics import aggregation, dashboard, explorer
from endpoints.services import api_key_create, endpoint_create

pytestmark = pytest.mark.django_db


def aggregate():
    aggregation.aggregate_pending()
    aggregation.compact_rollups()


def csv_rows(response):
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def chart_of(response):
    """The data a chart panel hands to the chart renderer (its data-chart-json attribute)."""
    found = re.search(r'data-chart-json="([^"]*)"', response.content.decode())
    assert found, response.content[:500]
    return json.loads(html.unescape(found.group(1)))


def table_of(client, team, by, **params):
    rows = csv_rows(client.get(f"/t/{team.slug}/usage/panels/table", {"by": by, "format": "csv", **params}))
    return {row[0]: int(row[1]) for row in rows[1:]}


def test_cards_equal_what_was_ingested(client_for, owner_a, team_a, known):
    page = client_for(owner_a).get(f"/t/{team_a.slug}/usage/panels/cards", {"range": "1h"})
    cards = dashboard.cards(team=team_a, query=dashboard.parse({"range": "1h"}, team=team_a))
    assert cards["requests"] == 22
    assert (cards["errors_user"], cards["errors_upstream"], cards["errors_gateway"]) == (3, 2, 1)
    assert cards["success_rate"] == pytest.approx(16 / 19)  # user errors leave the denominator
    assert cards["units"] == 12 * 26 + 4 * 900
    assert (cards["input_tokens"], cards["output_tokens"]) == (2400, 1200)
    assert sum(cards["requests_spark"]) == 22
    html = page.content.decode()
    assert "84.21%" in html  # 16 / 19
    assert ">22<" in html


def test_series_breakdowns_and_csv_add_up(client_for, owner_a, team_a, known):
    client = client_for(owner_a)
    chart = chart_of(client.get(f"/t/{team_a.slug}/usage/panels/requests", {"range": "1h"}))
    per_service = {s["label"]: sum(s["values"]) for s in chart["series"]}
    assert per_service == {"Ethereum Mainnet": 16, "Base": 2, "Llama 3.1 8B Instruct": 4}
    methods = table_of(client, team_a, "method", range="1h")
    assert methods == {"eth_call": 15, "eth_getBalance": 3, "chat.completions": 4}
    assert table_of(client, team_a, "region", range="1h") == {"eu-west-1": 21, "us-east-1": 1}
    page = client.get(f"/t/{team_a.slug}/usage/panels/table", {"range": "1h", "by": "method"}).content.decode()
    assert "eth_call" in page
    exported = csv_rows(client.get(f"/t/{team_a.slug}/usage/panels/requests", {"range": "1h", "format": "csv"}))
    assert exported[0][0] == "bucket_start (UTC)"
    assert sum(int(v) for row in exported[1:] for v in row[1:] if v) == 22
    table = csv_rows(
        client.get(f"/t/{team_a.slug}/usage/panels/table", {"range": "1h", "by": "method", "format": "csv"})
    )
    assert {row[0]: int(row[1]) for row in table[1:]} == methods


def test_error_rate_chart_is_the_share_of_requests(client_for, owner_a, team_a, known):
    chart = chart_of(client_for(owner_a).get(f"/t/{team_a.slug}/usage/panels/errors", {"range": "24h"}))
    user = [v for v in chart["series"][0]["values"] if v is not None]
    assert sum(user) == pytest.approx(100 * 3 / 22, rel=1e-3)


def test_percentile_panels_match_the_exact_values(client_for, owner_a, team_a, usage):
    rng = random.Random(3)
    values = [round(rng.lognormvariate(4, 0.9), 2) for _ in range(2000)]
    minute = usage.now.replace(second=0) - timedelta(minutes=3)
    usage.post(
        [
            usage.record(n, ts=(minute + timedelta(seconds=n % 60)).isoformat(), latency_ms=v)
            for n, v in enumerate(values)
        ]
    )
    aggregate()
    chart = chart_of(client_for(owner_a).get(f"/t/{team_a.slug}/usage/panels/latency", {"range": "1h"}))
    at = chart["x"].index(int(minute.timestamp()))
    ordered = sorted(values)
    for series, q in zip(chart["series"], (0.5, 0.9, 0.99), strict=True):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert series["values"][at] == pytest.approx(exact, rel=0.05), (series["label"], exact)
    cards = dashboard.cards(team=team_a, query=dashboard.parse({"range": "1h"}, team=team_a))
    assert cards["p99"] == pytest.approx(ordered[math.ceil(0.99 * len(ordered)) - 1], rel=0.05)


def summary_of(client, team, **params):
    rows = csv_rows(client.get(f"/t/{team.slug}/usage/panels/cards", {"format": "csv", **params}))
    return {row[0]: row[1] for row in rows[1:]}


def test_filters_narrow_every_panel(client_for, owner_a, team_a, known, usage):
    client = client_for(owner_a)
    assert summary_of(client, team_a, range="1h", key=usage.llm_key.key_id)["requests"] == "4"
    assert summary_of(client, team_a, range="1h", status="5xx")["requests"] == "3"
    assert table_of(client, team_a, "service", range="1h", method="eth_getBalance") == {"Ethereum Mainnet": 3}
    bad = client.get(f"/t/{team_a.slug}/", {"range": "fortnight", "tz": "Mars/Olympus", "status": "7xx"})
    assert bad.status_code == 200
    page = bad.content.decode()
    assert "Unknown range" in page
    assert "Unknown time zone" in page
    assert "Unknown status class" in page


def test_a_custom_range_across_a_month_end_and_a_dst_change(client_for, owner_a, team_a, usage):
    berlin = ZoneInfo("Europe/Berlin")
    moments = [
        datetime(2026, 10, 24, 23, 30, tzinfo=berlin),  # Oct 24, summer time (UTC+2)
        datetime(2026, 10, 25, 23, 30, tzinfo=berlin),  # Oct 25: the 25-hour day, winter time from 03:00
        datetime(2026, 10, 31, 23, 30, tzinfo=berlin),
        datetime(2026, 11, 1, 0, 30, tzinfo=berlin),  # a new month, an hour later
    ]
    query = {"range": "custom", "start": "2026-10-20T00:00", "end": "2026-11-10T00:00", "tz": "Europe/Berlin"}
    with time_machine.travel(datetime(2026, 11, 12, 9, 0, tzinfo=UTC)):  # the records are within 35 days then
        accepted = usage.post([usage.record(n, ts=m.astimezone(UTC).isoformat()) for n, m in enumerate(moments)])
        assert accepted.status_code == 202, accepted.content
        aggregate()
        chart = chart_of(client_for(owner_a).get(f"/t/{team_a.slug}/usage/panels/requests", query))
    assert chart["step"] == "day"
    days = [datetime.fromtimestamp(x, tz=berlin) for x in chart["x"]]
    assert all((d.hour, d.minute) == (0, 0) for d in days)  # every bucket starts at a local midnight
    assert days[0].date().isoformat() == "2026-10-20"
    assert days[-1].date().isoformat() == "2026-11-09"
    assert len(days) == 21
    counts = {d.date().isoformat(): sum(s["values"][i] for s in chart["series"]) for i, d in enumerate(days)}
    assert {day: n for day, n in counts.items() if n} == {
        "2026-10-24": 1,
        "2026-10-25": 1,
        "2026-10-31": 1,
        "2026-11-01": 1,
    }
    assert (days[6].astimezone(UTC) - days[5].astimezone(UTC)).total_seconds() == 25 * 3600  # Oct 25: 25 hours


def test_bucket_size_follows_the_range(owner_a, team_a):
    sizes = {key: dashboard.parse({"range": key}, team=team_a).step for key in dashboard.RANGES}
    assert sizes == {"1h": "minute", "24h": "hour", "7d": "hour", "30d": "day", "90d": "day"}
    query = dashboard.parse({"range": "24h"}, team=team_a)
    assert len(dashboard.bucket_starts(query)) == 24


# --- tenancy ------------------------------------------------------------------------------------


def test_another_teams_usage_never_appears(client_for, owner_a, outsider_b, team_a, team_b, known, usage):
    endpoint_b = endpoint_create(team=team_b, name="B", services=["eth-mainnet"], actor=outsider_b)
    key_b, _ = api_key_create(endpoint=endpoint_b, name="b", actor=outsider_b)
    usage.post([usage.record(n, key=key_b) for n in range(50)])
    aggregate()
    client = client_for(owner_a)
    assert summary_of(client, team_a, range="1h")["requests"] == "22"
    assert summary_of(client, team_a, range="1h", endpoint=endpoint_b.public_id)["requests"] == "22"  # filter dropped
    snooping = client.get(f"/t/{team_a.slug}/", {"endpoint": endpoint_b.public_id})
    assert "That endpoint is not one of this team&#x27;s; the filter was removed." in snooping.content.decode()
    keys = table_of(client, team_a, "key", range="1h")
    assert all(key_b.key_id not in label for label in keys)
    assert sum(keys.values()) == 22
    explorer_csv = csv_rows(client.get(f"/t/{team_a.slug}/explorer/", {"format": "csv"}))
    assert len(explorer_csv) == 23
    _token, secret = management_token_create(team=team_a, name="t", scopes=["read"], actor=owner_a)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get(f"/api/v1/teams/{team_a.slug}/usage/summary", {"range": "1h"}).json()["requests"] == 22
    assert api.get(f"/api/v1/teams/{team_b.slug}/usage/summary").status_code == 404
    foreign = api.get(f"/api/v1/teams/{team_a.slug}/usage/summary", {"endpoint": endpoint_b.public_id})
    assert foreign.status_code == 400
    assert foreign.json()["code"] == "invalid_query"


# --- the usage API ---------------------------------------------------------------------------------


def test_usage_api_matches_the_dashboard(team_a, owner_a, known, usage):
    _token, secret = management_token_create(team=team_a, name="t", scopes=["read"], actor=owner_a)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    base = f"/api/v1/teams/{team_a.slug}/usage"
    summary = api.get(f"{base}/summary", {"range": "1h"}).json()
    assert (summary["requests"], summary["errors_user"], summary["units"]) == (22, 3, 12 * 26 + 4 * 900)
    assert summary["success_rate"] == pytest.approx(16 / 19)
    series = api.get(f"{base}/series", {"range": "1h", "group_by": "key"}).json()
    per_key = {}
    for point in series["points"]:
        per_key[point["key"]] = per_key.get(point["key"], 0) + point["requests"]
    assert per_key == {usage.key.key_id: 18, usage.llm_key.key_id: 4}
    ungrouped = api.get(f"{base}/series", {"range": "1h"}).json()
    assert ungrouped["group_by"] is None
    assert sum(point["requests"] for point in ungrouped["points"]) == 22
    breakdown = api.get(f"{base}/breakdown", {"range": "1h", "by": "endpoint"}).json()
    assert [(r["value"], r["requests"]) for r in breakdown["rows"]] == [(usage.endpoint.public_id, 22)]
    latency = api.get(f"{base}/latency", {"range": "1h"}).json()
    assert latency["points"]
    assert all("p99_ms" in p for p in latency["points"])
    assert api.get(f"{base}/breakdown", {"by": "planet"}).status_code == 400
    assert api.get(f"{base}/series", {"range": "custom", "start": "yesterday"}).status_code == 400
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/teams/{team_slug}/usage/series" in schema["paths"]


# --- query counts --------------------------------------------------------------------------------


def _queries(client, url, params):
    client.get(url, params)  # the first request of a session also saves it
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url, params).status_code == 200
    return len(captured.captured_queries)


def test_panel_query_counts_do_not_grow_with_endpoints_and_keys(
    client_for, owner_a, team_a, usage, django_assert_max_num_queries
):
    client = client_for(owner_a)
    panels = [("cards", {}), ("requests", {"stack": "endpoint"}), ("latency", {}), ("errors", {}),
              ("table", {"by": "key"}), ("table", {"by": "endpoint"})]  # fmt: skip
    usage.post([usage.record(n) for n in range(20)])
    aggregate()
    before = {
        f"{p}{q}": _queries(client, f"/t/{team_a.slug}/usage/panels/{p}", {"range": "24h", **q}) for p, q in panels
    }
    for n in range(15):  # many more endpoints and keys, all with traffic
        endpoint = endpoint_create(team=team_a, name=f"extra {n}", services=["base"], actor=owner_a)
        for k in range(3):
            key, _ = api_key_create(endpoint=endpoint, name=f"k{k}", actor=owner_a)
            usage.post([usage.record(i, key=key, service="base") for i in range(3)])
    aggregate()
    after = {
        f"{p}{q}": _queries(client, f"/t/{team_a.slug}/usage/panels/{p}", {"range": "24h", **q}) for p, q in panels
    }
    assert after == before
    assert max(v for k, v in after.items() if not k.startswith("cards")) <= 10
    # the owner's cards add the cost card: account, plan history, plan, prices, catalog, usage
    assert after["cards{}"] <= 16
    with django_assert_max_num_queries(12):
        client.get(f"/t/{team_a.slug}/endpoints/")


def test_stacking_by_endpoint_shows_the_largest_seven_and_sums_the_rest_into_other(client_for, owner_a, team_a, usage):
    keys = []
    for n in range(10):
        endpoint = endpoint_create(team=team_a, name=f"app {n}", services=["base"], actor=owner_a)
        keys.append(api_key_create(endpoint=endpoint, name="k", actor=owner_a)[0])
    # app n gets n + 1 relays: apps 9..3 are the seven largest, apps 2, 1, 0 (3 + 2 + 1 relays) are "Other".
    usage.post([usage.record(i, key=key, service="base") for n, key in enumerate(keys) for i in range(n + 1)])
    aggregate()
    client = client_for(owner_a)
    url = f"/t/{team_a.slug}/usage/panels/requests"
    chart = chart_of(client.get(url, {"range": "24h", "stack": "endpoint"}))
    labels = [s["label"] for s in chart["series"]]
    assert labels == [f"app {n}" for n in range(9, 2, -1)] + ["Other (3 endpoints)"]
    assert [sum(s["values"]) for s in chart["series"]] == [10, 9, 8, 7, 6, 5, 4, 6]
    rows = csv_rows(client.get(url, {"range": "24h", "stack": "endpoint", "format": "csv"}))
    assert sorted(rows[0][1:]) == sorted(f"app {n}" for n in range(10))  # the export has every endpoint
    assert sum(int(v) for row in rows[1:] for v in row[1:] if v) == 55


# --- explorer ------------------------------------------------------------------------------------


def relay_ids(response):
    return re.findall(r"/explorer/relays/\d+/([^?\"]+)\?", response.content.decode())


def test_explorer_pages_newest_first_with_filters(client_for, owner_a, team_a, usage):
    records = [
        usage.record(n, ts=(usage.now - timedelta(seconds=n)).isoformat(), latency_ms=float(n)) for n in range(120)
    ]
    usage.post(records)
    client = client_for(owner_a)
    first = client.get(f"/t/{team_a.slug}/explorer/")
    ids = relay_ids(first)
    assert len(ids) == explorer.PAGE_SIZE * 2  # each row links twice (href and hx-get)
    assert ids[::2][:3] == [records[0]["id"], records[1]["id"], records[2]["id"]]
    cursor = re.search(r"cursor=([A-Za-z0-9_-]+)&(?:amp;)?fragment=rows", first.content.decode()).group(1)
    second = client.get(f"/t/{team_a.slug}/explorer/", {"cursor": cursor, "fragment": "rows"}, HTTP_HX_REQUEST="true")
    assert relay_ids(second)[0] == records[50]["id"]
    assert "<html" not in second.content.decode()
    assert len(explorer.page(team=team_a, search=explorer.parse({"min_latency": "100"}, team=team_a)).rows) == 20
    assert explorer.page(team=team_a, search=explorer.parse({"status": "4xx"}, team=team_a)).rows == []
    old = client.get(
        f"/t/{team_a.slug}/explorer/", {"window": "custom", "start": "2026-01-01T00:00", "end": "2026-01-02T00:00"}
    )
    assert b"Relays are kept" in old.content


def test_a_relay_opens_in_the_drawer_and_other_teams_relays_are_404(
    client_for, owner_a, outsider_b, team_a, team_b, usage
):
    usage.post([usage.record(1, latency_ms=42.0)])
    row = explorer.page(team=team_a, search=explorer.parse({}, team=team_a)).rows[0]
    path = f"/t/{team_a.slug}/explorer/relays/{row['batch_id']}/{row['relay_id']}"
    detail = client_for(owner_a).get(path)
    assert detail.status_code == 200
    assert b"42 ms" in detail.content
    assert client_for(outsider_b).get(path).status_code == 404
    assert (
        client_for(outsider_b).get(f"/t/{team_b.slug}/explorer/relays/{row['batch_id']}/{row['relay_id']}").status_code
        == 404
    )


def test_explorer_csv_is_capped_with_a_clear_note(team_a, usage):
    usage.post([usage.record(n) for n in range(30)])
    search = explorer.parse({}, team=team_a)
    rows = list(explorer.csv_rows(team=team_a, search=search, cap=10))
    assert len(rows) == 12
    assert rows[-1][0].startswith("# capped at 10 rows")


# --- operator -------------------------------------------------------------------------------------


def test_operator_view_is_staff_only_and_spans_teams(client_for, owner_a, team_a, known, admin_user, client):
    assert client_for(owner_a).get("/operator/").status_code == 403
    client.force_login(admin_user)
    assert client.get("/operator/").status_code == 200
    query = dashboard.parse({"range": "1h"}, team=None)
    health = {r["label"]: r["requests"] for r in dashboard.service_health(query=query)}
    assert health == {"Ethereum Mainnet": 16, "Base": 2, "Llama 3.1 8B Instruct": 4}
    assert "Llama 3.1 8B Instruct" in client.get("/operator/panels/health", {"range": "1h"}).content.decode()
    assert [(r["label"], r["requests"]) for r in dashboard.top_teams(query=query)] == [("Team A", 22)]
    assert "Team A" in client.get("/operator/panels/teams", {"range": "1h"}).content.decode()
    rows = csv_rows(client.get("/operator/panels/cards", {"range": "1h", "format": "csv"}))
    assert {r[0]: r[1] for r in rows[1:]}["requests"] == "22"
