"""Several web and worker processes against one PostgreSQL through PgBouncer in transaction pooling mode (Debian's
pgbouncer, started here): with DATABASE_TRANSACTION_POOLING=1 nothing outlives a transaction, and the long-poll
LISTENs on DATABASE_DIRECT_URL. bench/ingest.py --pgbouncer runs two web and two worker instances through it."""

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from endpoints import listen
from endpoints.services import api_key_create, endpoint_create, gateway_credential_create
from project.devstack import PGBOUNCER, pgbouncer

pytestmark = pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="Debian's pgbouncer is not installed")
PROBE = Path(__file__).with_name("pgbouncer_probe.py")


def test_ingestion_aggregation_feed_and_long_poll_work_through_pgbouncer(transactional_db, team_a, owner_a):
    endpoint = endpoint_create(team=team_a, name="Pooled", services=["eth-mainnet"], actor=owner_a)
    key, _secret = api_key_create(endpoint=endpoint, name="pooled", actor=owner_a)
    credential, _ = gateway_credential_create(name="pooled")
    params = connection.get_connection_params()
    direct = f"postgres://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}"
    direct += f"/{params['dbname']}"
    with pgbouncer(direct) as pooled:
        env = {**os.environ, "DATABASE_URL": pooled, "DATABASE_TRANSACTION_POOLING": "1", "DATABASE_DIRECT_URL": direct}
        result = subprocess.run(
            [sys.executable, str(PROBE), str(credential.pk), key.key_id, endpoint.public_id],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["port"] == str(params.get("port", 5432))  # the probe's queries reached PostgreSQL through PgBouncer
    assert urlsplit(pooled).port != int(seen["port"])
    assert seen["accepted"] == 40
    assert seen["aggregated"] >= 120  # the run may also take what other tests of this database left pending
    assert seen["hour_requests"] == 120  # the key's three batches, each counted once
    assert key.key_id in seen["snapshot_keys"]
    assert seen["woke"]["changed"] is True
    assert seen["woke"]["seconds"] < 10  # woken by the revocation, not the timeout
    assert ["key", "revoked"] in seen["changes"]
    assert seen["direct_port"] == params.get("port", 5432)


def test_the_long_poll_listens_on_the_direct_url_when_the_pool_is_in_between(settings):
    parts = urlsplit(settings.DATABASE_URL)
    settings.DATABASE_DIRECT_URL = urlunsplit(parts._replace(netloc="listener:secret@db-direct.internal:6543"))
    params = listen._connection_params()
    assert (params["host"], params["port"], params["user"], params["password"]) == (
        "db-direct.internal", 6543, "listener", "secret")  # fmt: skip
    assert params["dbname"] == connection.get_connection_params()["dbname"]  # the test database, not the URL's


def test_transaction_pooling_turns_off_what_outlives_a_transaction():
    code = (
        "from django.conf import settings as s; d = s.DATABASES['default']; "
        "print(d['DISABLE_SERVER_SIDE_CURSORS'], d['OPTIONS'].get('prepare_threshold', 'unset'), "
        "'options' in d['OPTIONS'])"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_TRANSACTION_POOLING": "1"}
    out = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], env=env,
                         capture_output=True, text=True, check=True, cwd=settings.BASE_DIR).stdout  # fmt: skip
    assert out.split() == ["True", "None", "False"]
