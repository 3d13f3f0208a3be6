"""CSV injection: every export goes through project.csv, which makes text a spreadsheet would run as a formula
inert. Names, user agents and what the gateway sends (methods, regions, relay ids) all come from outside."""

from __future__ import annotations

import csv
import io
import re

import pytest

from accounts.services import audit_record
from billing.models import InvoiceLine
from endpoints.services import endpoint_create
from project.csv import FORMULA_TRIGGERS, neutralise
from tests.fixtures import BASE_DIR, make_invoice

pytestmark = pytest.mark.django_db
NUMBER = re.compile(r"-?\d+(\.\d+)?(e-?\d+)?")


def cells(response) -> list[list[str]]:
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def dangerous(rows: list[list[str]]) -> list[str]:
    return [c for row in rows for c in row if c.startswith(FORMULA_TRIGGERS) and not NUMBER.fullmatch(c)]


def test_neutralise_only_touches_text_a_spreadsheet_would_evaluate():
    assert [neutralise(v) for v in ("=1+1", "+1", "-x", "@SUM(A1)", "\tx", "\rx", "a=b", "", "plain")] == [
        "'=1+1", "'+1", "'-x", "'@SUM(A1)", "'\tx", "'\rx", "a=b", "", "plain",
    ]  # fmt: skip
    assert [neutralise(v) for v in (-5, -1.5, None)] == [-5, -1.5, None]


def test_no_export_lets_a_formula_through(usage, client_for, owner_a, team_a, settings):
    from analytics import aggregation

    evil = '=HYPERLINK("http://evil.example","click")'
    endpoint = endpoint_create(team=team_a, name=evil, services=["eth-mainnet"], actor=owner_a)
    from endpoints.services import api_key_create

    key, _ = api_key_create(endpoint=endpoint, name="+cmd|' /C calc'!A0", actor=owner_a)
    records = [
        usage.record(1, key=key, method="@SUM(1+1)", region="-2+3", id="=relay"),
        usage.record(2, key=key, method="+1", region="eu", id="+relay"),
        usage.record(3, method="=cmd", id="@relay"),
    ]
    assert usage.post(records).status_code == 202
    aggregation.aggregate_pending()
    aggregation.compact_rollups()
    audit_record(action="auth.login", actor=owner_a, team=team_a, target_repr="=1+2")
    from project.audit import audit_context

    with audit_context(ip="203.0.113.9", user_agent="@IMPORTXML(evil)"):  # as a request's middleware sets it
        audit_record(action="custom.test", actor=owner_a, team=team_a)
    invoice = make_invoice(team_a, lines=(("-credit =1", -500), ("Growth", 4900)))
    InvoiceLine.objects.filter(invoice=invoice).update(price_id="=price")

    client = client_for(owner_a)
    slug = team_a.slug
    exports = {
        "audit": f"/t/{slug}/audit.csv",
        "explorer": f"/t/{slug}/explorer/?window=24h&format=csv",
        "methods": f"/t/{slug}/usage/panels/table?range=1h&by=method&format=csv",
        "regions": f"/t/{slug}/usage/panels/table?range=1h&by=region&format=csv",
        "endpoints": f"/t/{slug}/usage/panels/table?range=1h&by=endpoint&format=csv",
        "keys": f"/t/{slug}/usage/panels/table?range=1h&by=key&format=csv",
        "requests by endpoint": f"/t/{slug}/usage/panels/requests?range=1h&stack=endpoint&format=csv",
        "cards": f"/t/{slug}/usage/panels/cards?range=1h&format=csv",
        "invoices": f"/t/{slug}/billing/invoices/?format=csv",
        "invoice lines": f"/t/{slug}/billing/invoices/lines.csv",
    }
    seen = {}
    for name, url in exports.items():
        rows = cells(client.get(url))
        assert dangerous(rows) == [], name
        seen[name] = {c for row in rows for c in row}
    assert f"'{evil}" in seen["endpoints"]
    assert any(cell.startswith("'+cmd|' /C calc'!A0") for cell in seen["keys"])
    assert {"'@SUM(1+1)", "'+1", "'=cmd"} <= seen["methods"]
    assert "'-2+3" in seen["regions"]
    assert {"'=relay", "'+relay", "'@relay", "'@SUM(1+1)"} <= seen["explorer"]
    assert {"'@IMPORTXML(evil)", "'=1+2"} <= seen["audit"]
    assert {"'-credit =1", "'=price", "-5.00"} <= seen["invoice lines"]  # a credit stays a number


def test_every_csv_is_written_by_project_csv():
    # The class stays closed: no module writes CSV by itself.
    offenders = []
    for path in BASE_DIR.rglob("*.py"):
        parts = path.relative_to(BASE_DIR).parts
        if parts[0] in (".venv", "tests", "bench", ".data") or "tests" in parts or path.name == "csv.py":
            continue
        if re.search(r"csv\.(writer|DictWriter)\(", path.read_text()):
            offenders.append(str(path.relative_to(BASE_DIR)))
    assert offenders == []
