import pytest
from django.core.management import call_command

from accounts.models import Membership, Team, User
from project.demo import DEMO_EMAIL, DEMO_PASSWORD, DEMO_TEAM_NAME, DEMO_TEAMMATES
from tests.fixtures import seed_demo


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_its_login_works(client):
    seed_demo()
    seed_demo()
    assert User.objects.filter(email=DEMO_EMAIL).count() == 1
    team = Team.objects.get(name=DEMO_TEAM_NAME)
    roles = dict(Membership.objects.filter(team=team).values_list("user__email", "role"))
    assert roles == {DEMO_EMAIL: "owner", **{email: role for email, _name, role in DEMO_TEAMMATES}}
    response = client.post("/accounts/login/", {"login": DEMO_EMAIL, "password": DEMO_PASSWORD})
    assert response.status_code == 302
    assert client.get("/").url == f"/t/{team.slug}/"


@pytest.mark.django_db
def test_the_demo_team_is_on_growth_with_paid_open_and_failed_invoices(client):
    from billing import selectors
    from billing.models import Invoice

    seed_demo()
    seed_demo()
    team = Team.objects.get(name=DEMO_TEAM_NAME)
    assert selectors.plan_of(team=team).slug == "growth"
    invoices = Invoice.objects.filter(team=team)
    assert sorted(invoices.values_list("status", flat=True)) == ["open", "open", "paid", "paid"]
    overdue = selectors.overdue_of(team=team)
    assert overdue is not None
    assert overdue.invoice.number.startswith("ACME-")
    # The monthly invoices add up to what the ledger rates their months at.
    for invoice in invoices.exclude(number="ACME-SETUP"):
        assert selectors.invoice_breakdown(team=team, invoice=invoice).difference == 0
    client.post("/accounts/login/", {"login": DEMO_EMAIL, "password": DEMO_PASSWORD})
    page = client.get(f"/t/{team.slug}/billing/invoices/").content.decode()
    assert "Payment failed" in page
    assert page.count("Paid</span>") == 2


@pytest.mark.django_db
def test_seed_demo_refuses_to_create_public_logins_with_debug_off(settings):
    from django.core.management.base import CommandError

    settings.DEBUG = False
    with pytest.raises(CommandError, match="runs only with DEBUG on"):
        call_command("seed_demo", stdout=None)
    assert not User.objects.exists()


def _seed_with(**options: object) -> str:
    """`manage.py seed_demo` with options, as make run runs it (DEBUG on); returns what it printed."""
    from io import StringIO

    from django.test import override_settings

    out = StringIO()
    with override_settings(DEBUG=True):
        call_command("seed_demo", stdout=out, stderr=out, **options)
    return out.getvalue()


@pytest.mark.django_db
def test_the_demo_has_a_key_cap_two_health_rules_and_a_webhook_to_the_demo_receiver(tmp_path):
    from decimal import Decimal

    from alerts.models import AlertRule, Budget
    from webhooks.models import WebhookEndpoint

    secret_file = tmp_path / "data" / "webhook-sink-secret"
    url = "http://127.0.0.1:8001/gatehouse"
    first = _seed_with(webhook_url=url, webhook_secret_file=str(secret_file))
    _seed_with(webhook_url=url, webhook_secret_file=str(secret_file))
    team = Team.objects.get(name=DEMO_TEAM_NAME)

    (cap,) = Budget.objects.filter(team=team, origin=Budget.Origin.KEY_CAP)
    assert (cap.key.name, cap.amount, cap.period, cap.action) == ("batch-jobs", Decimal(20_000_000), "day", "stop")
    rules = AlertRule.objects.filter(team=team).order_by("name")
    assert [(r.name, r.endpoint.name, r.metric, r.threshold, r.window_minutes, r.min_relays) for r in rules] == [
        ("Assistant latency", "AI assistant", "p95_latency", Decimal(8000), 10, 100),
        ("Wallet backend error rate", "Wallet backend", "error_rate", Decimal(2), 5, 100),
    ]
    (endpoint,) = WebhookEndpoint.objects.filter(team=team)
    assert (endpoint.url, endpoint.event_types, endpoint.description) == (url, [], "Demo receiver (make run)")
    assert secret_file.read_text() == endpoint.secret + "\n"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    # No traffic yet: the monthly budget waits for the simulator's backfill.
    assert "created after the simulator's backfill" in first
    assert not Budget.objects.filter(team=team, origin=Budget.Origin.BUDGET).exists()

    # A new data directory (no secret file) and another port: the same endpoint, moved, with a new secret.
    secret_file.unlink()
    _seed_with(webhook_url="http://127.0.0.1:8101/gatehouse", webhook_secret_file=str(secret_file))
    (moved,) = WebhookEndpoint.objects.filter(team=team)
    assert moved.url == "http://127.0.0.1:8101/gatehouse"
    assert moved.secret != endpoint.secret
    assert moved.previous_secret == endpoint.secret  # rotated through the service: the old one signs for a day
    assert secret_file.read_text() == moved.secret + "\n"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert AlertRule.objects.filter(team=team).count() == 2
    assert sorted(Budget.objects.filter(team=team).values_list("origin", flat=True)) == ["endpoint_cap", "key_cap"]


@pytest.mark.django_db
def test_after_the_backfill_the_monthly_budget_is_sized_so_that_85_percent_of_it_is_used(tmp_path):
    import json
    import uuid
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from django.test import Client

    from alerts.models import Budget, BudgetFiring
    from alerts.services import standings
    from analytics import aggregation
    from endpoints.models import ApiKey
    from endpoints.services import gateway_credential_create
    from webhooks.models import WebhookDelivery

    secret_file = tmp_path / "webhook-sink-secret"
    url = "http://127.0.0.1:8001/gatehouse"
    _seed_with(webhook_url=url, webhook_secret_file=str(secret_file))
    team = Team.objects.get(name=DEMO_TEAM_NAME)
    key = ApiKey.objects.get(team=team, name="api-server")
    _credential, gateway_secret = gateway_credential_create(name="eu-west-1")
    gateway = Client(HTTP_AUTHORIZATION=f"Bearer {gateway_secret}")
    now = datetime.now(UTC)

    def push(count: int) -> None:  # successful eth_calls of the demo key, 26 billable units each
        records = [{"id": f"relay-{uuid.uuid4().hex}", "ts": (now - timedelta(seconds=n % 50)).isoformat(),
                    "key_id": key.key_id, "endpoint_id": key.endpoint.public_id, "service": "eth-mainnet",
                    "method": "eth_call", "status": 200, "error_class": None, "latency_ms": 25.0, "req_bytes": 300,
                    "resp_bytes": 900, "units": 26, "region": "eu-west-1"} for n in range(count)]  # fmt: skip
        body = "\n".join(json.dumps(r) for r in records).encode()
        response = gateway.post("/api/gateway/v1/usage", body, content_type="application/x-ndjson",
                                HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)  # fmt: skip
        assert response.status_code == 202, response.content

    push(30)
    aggregation.aggregate_pending(time_budget_seconds=10)
    push(10)  # still pending when the simulator's marker appears: --after-traffic aggregates it first
    out = _seed_with(after_traffic=True, webhook_url=url, webhook_secret_file=str(secret_file))
    _seed_with(after_traffic=True, webhook_url=url, webhook_secret_file=str(secret_file))

    (budget,) = Budget.objects.filter(team=team, origin=Budget.Origin.BUDGET)
    assert (budget.name, budget.scope, budget.measure, budget.period) == ("Monthly units", "team", "units", "month")
    assert (budget.thresholds, budget.forecast, budget.action) == ([50, 80, 100], True, "alert")
    assert budget.amount == Decimal(1220)  # 40 × 26 = 1,040 units used; 1,040 / 0.85 = 1,223.5, to 3 figures
    assert 80 < standings([budget])[0].percent < 90
    assert "Created budget Monthly units: 1,220 units, 85% used this month" in out
    fired = BudgetFiring.objects.filter(budget=budget, kind=BudgetFiring.Kind.THRESHOLD)
    assert sorted(fired.values_list("threshold", flat=True)) == [50, 80]
    # Both reach the demo receiver (the worker sends them once the seed's transaction commits).
    sent = WebhookDelivery.objects.filter(endpoint__url=url, event__type="budget.threshold_crossed")
    assert sorted(d.event.payload["threshold"] for d in sent) == [50, 80]


@pytest.mark.django_db
def test_the_demo_keys_secrets_and_a_relay_credential_are_written_for_make_run(tmp_path):
    import json
    import stat

    from endpoints.keys import secret_hash
    from endpoints.models import ApiKey, GatewayCredential

    def live_credential(secret: str) -> bool:
        return GatewayCredential.objects.filter(secret_hash=secret_hash(secret), revoked_at__isnull=True).exists()

    secrets_file, credential_file = tmp_path / "keys.json", tmp_path / "relay-secret"
    options = {"key_secrets_file": secrets_file, "relay_credential_file": credential_file}

    _seed_with(**options)

    written = json.loads(secrets_file.read_text())
    keys = ApiKey.objects.filter(team__name=DEMO_TEAM_NAME)
    assert set(written) == set(keys.values_list("key_id", flat=True))
    for key in keys:
        assert key.secret_hash == secret_hash(written[key.key_id]["secret"])
        assert written[key.key_id]["name"] == key.name
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    first = credential_file.read_text()
    assert live_credential(first)
    # A second start: the keys exist (their secrets are not shown again, the file stays), a new credential replaces
    # the old one.
    _seed_with(**options)
    assert json.loads(secrets_file.read_text()) == written
    second = credential_file.read_text()
    assert second != first
    assert live_credential(second)
    assert not live_credential(first)


def test_the_relays_demo_upstreams_cover_the_demo_services_by_family():
    from endpoints.catalog import SERVICES
    from project.demo import DEMO_ENDPOINTS, DEMO_EVM_SERVICES, DEMO_LLM_SERVICES

    family = {spec["id"]: spec["chain_family"] for spec in SERVICES}
    demo_services = {service for endpoint in DEMO_ENDPOINTS for service in endpoint["services"]}
    assert {family[s] for s in DEMO_EVM_SERVICES} == {"evm"}
    assert {family[s] for s in DEMO_LLM_SERVICES} == {"llm"}
    uncovered = demo_services - set(DEMO_EVM_SERVICES) - set(DEMO_LLM_SERVICES)
    assert {family[s] for s in uncovered} == {"solana"}  # no local node: its live traffic stays synthetic
