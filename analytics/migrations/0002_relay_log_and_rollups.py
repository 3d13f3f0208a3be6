"""The raw relay log and the rollups, in SQL: Django cannot declare partitioned tables or BRIN-only tables.

- analytics_relay: partitioned by day on ts, BRIN on ts and batch_id (a btree would slow COPY
  several times over), plus a DEFAULT partition for late relays older than the daily partitions.
- analytics_rollup_{minute,hour,day} and analytics_latency_{minute,hour,day}: one row per
  (bucket, team, endpoint, key, service, method, region[, latency bucket]); additive counters
  upserted by the aggregation. Minute tables are partitioned by day. fillfactor leaves room for
  HOT updates under heavy upserting.
"""

from django.db import migrations

DIMENSIONS = """
    bucket timestamptz NOT NULL,
    team_id integer NOT NULL,
    endpoint_id integer NOT NULL,
    key_id integer NOT NULL,
    service varchar(64) NOT NULL,
    method varchar(128) NOT NULL,
    region varchar(32) NOT NULL"""

COUNTERS = """
    requests bigint NOT NULL,
    successes bigint NOT NULL,
    errors_user bigint NOT NULL,
    errors_upstream bigint NOT NULL,
    errors_gateway bigint NOT NULL,
    status_2xx bigint NOT NULL,
    status_3xx bigint NOT NULL,
    status_4xx bigint NOT NULL,
    status_5xx bigint NOT NULL,
    latency_sum_ms double precision NOT NULL,
    latency_max_ms double precision NOT NULL,
    req_bytes bigint NOT NULL,
    resp_bytes bigint NOT NULL,
    units bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL"""

KEY = "bucket, team_id, endpoint_id, key_id, service, method, region"


def rollup(name: str, partitioned: bool) -> str:
    tail = (
        " PARTITION BY RANGE (bucket)"
        if partitioned
        else " WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02)"
    )
    return f"""
CREATE TABLE analytics_rollup_{name} ({DIMENSIONS},{COUNTERS},
    PRIMARY KEY ({KEY})
){tail};
CREATE INDEX analytics_rollup_{name}_team ON analytics_rollup_{name} (team_id, bucket);
CREATE TABLE analytics_latency_{name} ({DIMENSIONS},
    le smallint NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY ({KEY}, le)
){tail};
CREATE INDEX analytics_latency_{name}_team ON analytics_latency_{name} (team_id, bucket);
"""


FORWARD = (
    """
CREATE TABLE analytics_relay (
    ts timestamptz NOT NULL,
    batch_id bigint NOT NULL,
    team_id integer NOT NULL,
    endpoint_id integer NOT NULL,
    key_id integer NOT NULL,
    relay_id varchar(64) NOT NULL,
    service varchar(64) NOT NULL,
    method varchar(128) NOT NULL,
    region varchar(32) NOT NULL,
    status smallint NOT NULL,
    error_class smallint NOT NULL,
    latency_ms real NOT NULL,
    req_bytes integer NOT NULL,
    resp_bytes integer NOT NULL,
    units integer NOT NULL,
    input_tokens integer NOT NULL,
    output_tokens integer NOT NULL
) PARTITION BY RANGE (ts);
CREATE INDEX analytics_relay_ts_brin ON analytics_relay USING brin (ts);
CREATE INDEX analytics_relay_batch_brin ON analytics_relay USING brin (batch_id);
CREATE TABLE analytics_relay_default PARTITION OF analytics_relay DEFAULT;
"""
    + rollup("minute", partitioned=True)
    + rollup("hour", partitioned=False)
    + rollup("day", partitioned=False)
)

BACKWARD = """
DROP TABLE IF EXISTS analytics_relay, analytics_rollup_minute, analytics_rollup_hour, analytics_rollup_day,
    analytics_latency_minute, analytics_latency_hour, analytics_latency_day CASCADE;
"""


def create_partitions(apps, schema_editor):
    from analytics.partitions import DAILY_TABLES, ensure_partitions

    for table in DAILY_TABLES:
        ensure_partitions(table)


class Migration(migrations.Migration):
    dependencies = [("analytics", "0001_initial")]

    operations = [
        migrations.RunSQL(FORWARD, BACKWARD),
        migrations.RunPython(create_partitions, migrations.RunPython.noop),
    ]
