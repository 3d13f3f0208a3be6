"""Run by tests/test_pgbouncer.py in a process of its own, whose DATABASE_URL goes through PgBouncer in transaction
pooling mode: the paths that care about sessions — ingestion (COPY in a transaction), aggregation (FOR UPDATE SKIP
LOCKED), compaction, a config change (advisory lock and NOTIFY), the streamed snapshot and the long-poll (LISTEN on
DATABASE_DIRECT_URL) — and prints what it saw as JSON.

    python tests/pgbouncer_probe.py <gateway credential pk> <key id> <endpoint id>
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(credential_pk: str, key_id: str, endpoint_id: str) -> dict[str, object]:
    import django

    django.setup()
    from django.db import connection

    from analytics import aggregation
    from analytics.ingest import ingest
    from endpoints import feed, listen
    from endpoints.models import ApiKey, GatewayCredential
    from endpoints.services import api_key_revoke

    with connection.cursor() as cursor:
        cursor.execute("SHOW port")
        port = cursor.fetchone()[0]
    credential = GatewayCredential.objects.get(pk=int(credential_pk))
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    records = [
        {"id": f"p-{uuid.uuid4().hex}", "ts": stamp, "key_id": key_id, "endpoint_id": endpoint_id,
         "service": "eth-mainnet", "method": "eth_call", "status": 200, "error_class": None, "latency_ms": 12.5,
         "req_bytes": 100, "resp_bytes": 200, "units": 26, "region": "eu-west-1"}
        for _ in range(40)
    ]  # fmt: skip
    body = "\n".join(json.dumps(r) for r in records).encode()
    for _ in range(3):  # more statements than psycopg's prepare threshold (5): prepared statements would break here
        accepted = ingest(gateway=credential, idempotency_key=uuid.uuid4().hex, body=body)
    run = aggregation.aggregate_pending()
    aggregation.compact_rollups()
    with connection.cursor() as cursor:  # this key's only: the database may hold other tests' usage
        cursor.execute(
            "SELECT coalesce(sum(requests), 0) FROM analytics_rollup_hour WHERE key_id = %s",
            [ApiKey.objects.get(key_id=key_id).pk],
        )
        hour_requests = int(cursor.fetchone()[0])
    snapshot = feed.snapshot()
    cursor_id = int(snapshot["cursor"])

    woke: dict[str, object] = {}

    def wait() -> None:
        started = time.monotonic()
        woke["changed"] = listen.wait_for_change(since=cursor_id, timeout=20)
        woke["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(1)  # the waiter is listening (it LISTENs, then looks at the log)
    api_key_revoke(key=ApiKey.objects.get(key_id=key_id), actor=None)
    waiter.join()
    changed = feed.changes(since=cursor_id)["changes"]
    return {
        "port": port,
        "accepted": accepted.records,
        "aggregated": run.records,
        "hour_requests": hour_requests,
        "snapshot_keys": [k["key_id"] for k in snapshot["keys"]],
        "woke": woke,
        "changes": [(c["type"], c.get("key", {}).get("status")) for c in changed],
        "direct_port": listen._connection_params()["port"],
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(*sys.argv[1:4]), default=str) + "\n")
