"""Hour and day summaries: the rollups with dimensions summed away, one cube per GROUPING SETS entry.

See analytics.summaries. The cube ids in the partial indexes are GROUPING() bitmasks of
(endpoint_id, key_id, service, method, region): 11 = (endpoint, service), 3 = (endpoint, key, service),
31 = team totals, 27 = per service (the operator's view across teams reads these two by time).
The histogram tables' indexes include the counts, so their reads are index-only scans.
Existing rollups are summarized here, so a database upgraded with history has its summaries at once.
"""

from django.db import migrations

COUNTERS = (
    "requests, successes, errors_user, errors_upstream, errors_gateway, status_2xx, status_3xx, status_4xx, "
    "status_5xx, latency_sum_ms, req_bytes, resp_bytes, units, input_tokens, output_tokens"
)
KEY = "cube, team_id, bucket, endpoint_id, key_id, service, method, region"
GROUPED = (
    "GROUPING(endpoint_id, key_id, service, method, region), COALESCE(endpoint_id, 0), COALESCE(key_id, 0), "
    "COALESCE(service, ''), COALESCE(method, ''), COALESCE(region, '')"
)
SETS = (
    "GROUPING SETS ((), (service), (service, region), (service, method), (endpoint_id, service), "
    "(endpoint_id, key_id, service))"
)
# Histogram reads are index-only scans (the indexes include the counts), which need the visibility map
# current: vacuum after 2 % of the rows changed or were inserted, not the default 20 %.
STORAGE = "fillfactor = 90, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02"


def tables(grain: str) -> str:
    sums = ", ".join(f"sum({c})" for c in COUNTERS.split(", "))
    return f"""
CREATE TABLE analytics_summary_{grain} (
    cube smallint NOT NULL,
    bucket timestamptz NOT NULL,
    team_id integer NOT NULL,
    endpoint_id integer NOT NULL,
    key_id integer NOT NULL,
    service varchar(64) NOT NULL,
    method varchar(128) NOT NULL,
    region varchar(32) NOT NULL,
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
    output_tokens bigint NOT NULL,
    PRIMARY KEY ({KEY})
) WITH ({STORAGE});
CREATE INDEX analytics_summary_{grain}_bucket ON analytics_summary_{grain} (bucket);
CREATE INDEX analytics_summary_{grain}_endpoint ON analytics_summary_{grain} (cube, team_id, endpoint_id, bucket)
    WHERE cube IN (11, 3);
CREATE INDEX analytics_summary_{grain}_key ON analytics_summary_{grain} (team_id, key_id, bucket) WHERE cube = 3;
CREATE INDEX analytics_summary_{grain}_platform ON analytics_summary_{grain} (cube, bucket) WHERE cube IN (31, 27);
CREATE TABLE analytics_summary_latency_{grain} (
    cube smallint NOT NULL,
    bucket timestamptz NOT NULL,
    team_id integer NOT NULL,
    endpoint_id integer NOT NULL,
    key_id integer NOT NULL,
    service varchar(64) NOT NULL,
    method varchar(128) NOT NULL,
    region varchar(32) NOT NULL,
    le smallint NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY ({KEY}, le) INCLUDE (count)
) WITH ({STORAGE});
CREATE INDEX analytics_summary_latency_{grain}_bucket ON analytics_summary_latency_{grain} (bucket);
CREATE INDEX analytics_summary_latency_{grain}_endpoint
    ON analytics_summary_latency_{grain} (cube, team_id, endpoint_id, bucket) INCLUDE (le, count) WHERE cube IN (11, 3);
CREATE INDEX analytics_summary_latency_{grain}_key
    ON analytics_summary_latency_{grain} (team_id, key_id, bucket) INCLUDE (le, count) WHERE cube = 3;
CREATE INDEX analytics_summary_latency_{grain}_platform
    ON analytics_summary_latency_{grain} (cube, bucket) INCLUDE (team_id, service, le, count) WHERE cube IN (31, 27);
INSERT INTO analytics_summary_{grain}
    (cube, endpoint_id, key_id, service, method, region, bucket, team_id, {COUNTERS}, latency_max_ms)
SELECT {GROUPED}, bucket, team_id, {sums}, max(latency_max_ms)
FROM analytics_rollup_{grain} GROUP BY bucket, team_id, {SETS};
INSERT INTO analytics_summary_latency_{grain}
    (cube, endpoint_id, key_id, service, method, region, bucket, team_id, le, count)
SELECT {GROUPED}, bucket, team_id, le, sum(count)
FROM analytics_latency_{grain} GROUP BY bucket, team_id, le, {SETS};
"""  # noqa: S608 - constant SQL


class Migration(migrations.Migration):
    dependencies = [("analytics", "0004_dirty_buckets")]

    operations = [
        migrations.RunSQL(
            tables("hour") + tables("day"),
            "DROP TABLE analytics_summary_hour, analytics_summary_day, analytics_summary_latency_hour, "
            "analytics_summary_latency_day;",
        )
    ]
