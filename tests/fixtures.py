"""Fixtures shared by every test: users and tenants, a real browser, subprocess helpers."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from accounts.models import Membership, Role, Team, User
from accounts.services import team_create, user_create
from endpoints.models import ApiKey, Endpoint
from endpoints.services import api_key_create, endpoint_create, gateway_credential_create

BASE_DIR = Path(__file__).resolve().parent.parent
ARTIFACTS = BASE_DIR / "artifacts"
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    # Each xdist worker has its own Redis database (tests/settings.py), so this never reaches another worker.
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _service_catalog(request, django_db_blocker):
    """The catalog and the plans come from data migrations, which a transactional test's flush wipes: put them back."""
    uses_db = request.node.get_closest_marker("django_db") or {"db", "transactional_db", "live_server"} & set(
        request.fixturenames
    )
    if not uses_db:
        return
    request.getfixturevalue("django_db_setup")  # the test database, never the real one
    from billing.catalog import plans_sync
    from billing.models import Plan, PlanVersion
    from endpoints.models import PlanLimit
    from endpoints.services import service_catalog_sync

    with django_db_blocker.unblock():
        service_catalog_sync()
        plans_sync(Plan, PlanVersion)
        free = Plan.objects.get(slug="free")
        PlanLimit.objects.get_or_create(team=None, defaults={"rate_limit_rps": free.rate_limit_rps})


@pytest.fixture
def make_user(db):
    def make(email: str, *, verified: bool = True, password: str = PASSWORD, **fields: object) -> User:
        return user_create(email=email, password=password, email_verified=verified, **fields)

    return make


# --- three tenants (healthchecks' Alice / Bob / Charlie) ------------------------------------
# owner_a owns team A; teammate_a is a developer in team A; outsider_b owns team B and nothing else.


@pytest.fixture
def owner_a(make_user) -> User:
    return make_user("alice@a.example", name="Alice Owner")


@pytest.fixture
def team_a(owner_a) -> Team:
    return team_create(name="Team A", owner=owner_a)


@pytest.fixture
def teammate_a(make_user, team_a) -> User:
    user = make_user("bob@a.example", name="Bob Developer")
    Membership.objects.create(team=team_a, user=user, role=Role.DEVELOPER)
    return user


@pytest.fixture
def outsider_b(make_user) -> User:
    return make_user("charlie@b.example", name="Charlie Outsider")


@pytest.fixture
def team_b(outsider_b) -> Team:
    return team_create(name="Team B", owner=outsider_b)


@pytest.fixture
def member_of(make_user, team_a):
    """member_of(role) → a new user holding `role` in team A."""

    def make(role: str, email: str | None = None) -> User:
        user = make_user(email or f"{role}-{User.objects.count()}@a.example")
        if role == Role.OWNER:
            raise ValueError("team A has its owner: owner_a")
        Membership.objects.create(team=team_a, user=user, role=role)
        return user

    return make


@pytest.fixture
def client_for(client):
    """client_for(user) → a test client signed in as user."""
    from django.test import Client

    def make(user: User, **kwargs: object) -> Client:
        c = Client(**kwargs)
        c.force_login(user)
        return c

    return make


def seed_usage(team: Team, *, days: float = 2, rate_per_minute: float = 10, seed: int = 7) -> int:
    """Realistic relays (the traffic simulator's model) for every usable key of the team, pushed through the
    real ingestion and aggregation. Returns how many."""
    import json
    import random
    from datetime import timedelta

    from django.utils import timezone

    from analytics import aggregation, simulator
    from analytics.ingest import ingest
    from endpoints.models import ApiKey
    from endpoints.services import gateway_credential_create

    keys = []
    for key in ApiKey.objects.filter(team=team).usable().select_related("endpoint"):
        sim_key = simulator.SimKey.from_catalog(
            key_id=key.key_id,
            endpoint_id=key.endpoint.public_id,
            team=team.slug,
            service_ids=list(key.endpoint.services.values_list("id", flat=True)),
            allowed_methods=key.endpoint.allowed_methods,
            environment=key.endpoint.environment,
        )
        if sim_key is not None:
            keys.append(sim_key)
    gateway, _secret = gateway_credential_create(name=f"seed-{team.slug}-{seed}")
    now = timezone.now()
    records = list(simulator.backfill(random.Random(seed), keys, now - timedelta(days=days), now, rate_per_minute))
    for start in range(0, len(records), 5000):
        body = "\n".join(json.dumps(r) for r in records[start : start + 5000]).encode()
        ingest(gateway=gateway, idempotency_key=f"seed-{seed}-{start}", body=body)
    aggregation.aggregate_pending()
    aggregation.compact_rollups()
    return len(records)


# --- subprocesses (real servers and workers) -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url_for_current_test_db() -> str:
    """DATABASE_URL pointing at the database pytest-django created for this worker."""
    from django.db import connection

    params = connection.get_connection_params()
    host = params.get("host") or "127.0.0.1"
    from urllib.parse import quote

    host_part = quote(host, safe="") if host.startswith("/") else f"{host}:{params.get('port') or 5432}"
    return f"postgres://{params.get('user') or 'postgres'}@{host_part}/{params['dbname']}"


def subprocess_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # subprocesses use the production settings module
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set in-process for Playwright only
    env.update(overrides)
    return env


def wait_for_http(url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - local test server
                return
        except urllib.error.HTTPError:
            return  # it answered, even if with an error status
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture
def run_server():
    """Start `gunicorn project.wsgi` with the given environment; stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> str:
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "project.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
            cwd=BASE_DIR,
            env=subprocess_env(**env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/healthz", process=process)
        return base

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


# --- the browser --------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium():
    # Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run
    # beside one unless told it is safe (it is: the loop is idle while our code runs).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class CheckedPage:
    """A browser tab that screenshots every page it checks and records console errors (CSP violations among them)."""

    def __init__(self, page, base_url: str, test_name: str):
        self.page = page
        self.base_url = base_url
        self.shot_dir = ARTIFACTS / "screenshots"
        self.shot_dir.mkdir(parents=True, exist_ok=True)
        self.test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.console_errors: list[str] = []
        self.allowed_errors: list[str] = []
        self.shots: list[Path] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))

    def _on_console(self, message) -> None:
        if message.type == "error" and not any(allowed in message.text for allowed in self.allowed_errors):
            self.console_errors.append(message.text)

    def allow_console_error(self, text: str) -> None:
        """Expect a console error containing text (e.g. the 404 of a page the test means to be missing)."""
        self.allowed_errors.append(text)

    def visit(self, path: str, label: str | None = None):
        response = self.page.goto(self.base_url + path)
        self.snap(label or path)
        return response

    def snap(self, label: str) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "page"
        path = self.shot_dir / f"{self.test_name}--{len(self.shots):02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path


@pytest.fixture
def browser_pages(chromium, live_server, request):
    """browser_pages(label) → a new CheckedPage in its own browser context (its own cookies): one per person."""
    opened: list[tuple[object, CheckedPage]] = []

    def open_page(label: str = "") -> CheckedPage:
        context = chromium.new_context(viewport={"width": 1280, "height": 860})
        name = request.node.name + (f"-{label}" if label else "")
        checked = CheckedPage(context.new_page(), live_server.url, name)
        opened.append((context, checked))
        return checked

    yield open_page
    for context, _checked in opened:
        context.close()
    errors = [error for _context, checked in opened for error in checked.console_errors]
    assert errors == [], f"browser console errors: {errors}"


@pytest.fixture
def browser_page(browser_pages):
    return browser_pages()


def make_invoice(team: Team, *, status: str = "paid", lines: tuple[tuple[str, int], ...] = (("Growth plan", 4900),),
                 period_start: Any = None, **fields: Any) -> Any:  # fmt: skip
    """A mirrored Stripe invoice of the team, as invoice_sync would store it (for pages and permissions)."""
    from datetime import UTC, datetime, timedelta

    from billing.models import Invoice, InvoiceLine

    start = period_start or datetime(2026, 10, 1, tzinfo=UTC)
    total = sum(amount for _description, amount in lines)
    paid = status == "paid"
    invoice = Invoice.objects.create(
        team=team,
        stripe_id=fields.pop("stripe_id", f"in_test_{team.pk}_{Invoice.objects.count() + 1}"),
        number=fields.pop("number", f"GH-{team.pk:04d}-{Invoice.objects.count() + 1:04d}"),
        status=status,
        subtotal=total,
        total=total,
        amount_due=total,
        amount_paid=total if paid else 0,
        amount_remaining=0 if paid else total,
        period_start=start,
        period_end=fields.pop("period_end", start + timedelta(days=31)),
        created=fields.pop("created", start + timedelta(days=31, hours=1)),
        paid_at=start + timedelta(days=31, hours=2) if paid else None,
        **fields,
    )
    for n, (description, amount) in enumerate(lines):
        InvoiceLine.objects.create(invoice=invoice, stripe_id=f"il_{invoice.pk}_{n}", description=description,
                                   amount=amount, quantity=1)  # fmt: skip
    return invoice


# --- usage: a team A endpoint and keys, a gateway client, record builders ----------------------------


@dataclass
class UsageEnv:
    endpoint: Endpoint
    key: ApiKey
    llm_key: ApiKey
    gateway: Client
    now: datetime

    def record(self, n: int = 0, *, key: ApiKey | None = None, **overrides: Any) -> dict[str, Any]:
        key = key or self.key
        record = {
            "id": f"relay-{uuid.uuid4().hex[:16]}-{n}",
            "ts": (self.now - timedelta(seconds=n % 50)).isoformat().replace("+00:00", "Z"),
            "key_id": key.key_id,
            "endpoint_id": key.endpoint.public_id,
            "service": "eth-mainnet",
            "method": "eth_call",
            "status": 200,
            "error_class": None,
            "latency_ms": 20.0 + n % 7,
            "req_bytes": 300,
            "resp_bytes": 900,
            "units": 26,
            "region": "eu-west-1",
        }
        record.update(overrides)
        return record

    def post(self, records: list[dict[str, Any]] | bytes, *, key: str | None = None, **headers: str) -> Any:
        body = records if isinstance(records, bytes) else "\n".join(json.dumps(r) for r in records).encode()
        return self.gateway.post(
            "/api/gateway/v1/usage",
            body,
            content_type="application/x-ndjson",
            HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex,
            **headers,
        )


@pytest.fixture
def usage(team_a, owner_a) -> UsageEnv:
    endpoint = endpoint_create(
        team=team_a, name="Wallet", services=["eth-mainnet", "base", "llama-3.1-8b-instruct"], actor=owner_a
    )
    key, _ = api_key_create(endpoint=endpoint, name="server", actor=owner_a)
    llm_key, _ = api_key_create(endpoint=endpoint, name="assistant", actor=owner_a)
    _credential, secret = gateway_credential_create(name="eu-west-1")
    # Second 55 of the last whole minute: record(n) goes back at most 50 s, so a default set of records sits in
    # one minute (and so one hour and day) whatever the time of day the test runs at.
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(seconds=5)
    return UsageEnv(endpoint, key, llm_key, Client(HTTP_AUTHORIZATION=f"Bearer {secret}"), now)


def seed_demo() -> None:
    """`manage.py seed_demo`, which runs only with DEBUG on (make run's setting), as make run runs it."""
    from django.core.management import call_command
    from django.test import override_settings

    with override_settings(DEBUG=True):
        call_command("seed_demo", stdout=None)
