"""Usage: ingested batches, the raw relay log and the rollups.

The raw relay log and the rollup tables are created by SQL migrations (day-partitioned tables,
BRIN indexes, fillfactor) and are read through the unmanaged models below; they are written
only with COPY and INSERT … SELECT in analytics/ingest.py and analytics/aggregation.py.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from endpoints.models import GatewayCredential

ERROR_CLASSES = {None: 0, "user": 1, "upstream": 2, "gateway": 3}
ERROR_CLASS_NAMES = {code: name for name, code in ERROR_CLASSES.items()}


class IngestBatch(models.Model):
    """One accepted POST of usage records. Its flag says whether its records are in the rollups."""

    id = models.BigAutoField(primary_key=True)
    gateway = models.ForeignKey(GatewayCredential, on_delete=models.PROTECT, related_name="+")
    idempotency_key = models.CharField(max_length=128)
    body_sha256 = models.CharField(max_length=64)
    record_count = models.PositiveIntegerField(help_text="Records stored in the relay log (and so in the rollups).")
    quarantined_count = models.PositiveIntegerField(
        default=0, help_text="Well-formed records set aside in the quarantine: not attributable to a key or service."
    )
    min_ts = models.DateTimeField()
    max_ts = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    aggregated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["gateway", "idempotency_key"], name="analytics_batch_idempotency"),
        ]
        indexes = [
            models.Index(fields=["id"], condition=models.Q(aggregated_at__isnull=True), name="analytics_batch_pending"),
            models.Index(fields=["received_at"], name="analytics_batch_received"),
        ]

    def __str__(self) -> str:
        return f"batch {self.id} ({self.record_count} records)"


class QuarantineReason(models.TextChoices):
    UNKNOWN_KEY = "unknown_key", "Unknown key"
    TEAM_DELETED = "team_deleted", "The key's team was deleted"
    ENDPOINT_MISMATCH = "endpoint_mismatch", "The key belongs to another endpoint"
    UNKNOWN_SERVICE = "unknown_service", "Service not in the catalog"


class QuarantinedRecord(models.Model):
    """A well-formed usage record the gateway sent that no team can be billed for as it stands. Kept (never
    dropped silently) for the operator to see, and counted in the batch's 202; it never blocks the batch."""

    id = models.BigAutoField(primary_key=True)
    batch = models.ForeignKey(IngestBatch, on_delete=models.CASCADE, related_name="quarantined")
    gateway = models.ForeignKey(GatewayCredential, on_delete=models.PROTECT, related_name="+")
    line = models.PositiveIntegerField(help_text="Line of the record in its batch.")
    reason = models.CharField(max_length=32, choices=QuarantineReason.choices)
    detail = models.CharField(max_length=300)
    team_id = models.IntegerField(null=True, blank=True, help_text="The key's team, when the key is known.")
    relay_id = models.CharField(max_length=64)
    key_id = models.CharField(max_length=32)
    endpoint_id = models.CharField(max_length=24)
    service = models.CharField(max_length=64)
    ts = models.DateTimeField()
    record = models.JSONField(help_text="The record as the gateway sent it.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["received_at"], name="analytics_quarantine_received")]

    def __str__(self) -> str:
        return f"{self.relay_id} ({self.get_reason_display()})"


# The raw relay log's columns in table order (the order ingestion's binary COPY writes them), with their SQL types.
RELAY_COLUMNS: dict[str, str] = {
    "ts": "timestamptz",
    "batch_id": "int8",
    "team_id": "int4",
    "endpoint_id": "int4",
    "key_id": "int4",
    "relay_id": "text",
    "service": "text",
    "method": "text",
    "region": "text",
    "status": "int2",
    "error_class": "int2",
    "latency_ms": "float4",
    "req_bytes": "int4",
    "resp_bytes": "int4",
    "units": "int4",
    "input_tokens": "int4",
    "output_tokens": "int4",
}


class Relay(models.Model):
    """One relay in the raw log (read-only here; partitioned by day, kept for the retention window)."""

    ts = models.DateTimeField()
    batch_id = models.BigIntegerField()
    team_id = models.IntegerField()
    endpoint_id = models.IntegerField()
    key_id = models.IntegerField()
    relay_id = models.CharField(max_length=64, primary_key=True)  # unique per gateway; a pk only for the ORM
    service = models.CharField(max_length=64)
    method = models.CharField(max_length=128)
    region = models.CharField(max_length=32)
    status = models.SmallIntegerField()
    error_class = models.SmallIntegerField()
    latency_ms = models.FloatField()
    req_bytes = models.IntegerField()
    resp_bytes = models.IntegerField()
    units = models.IntegerField()
    input_tokens = models.IntegerField()
    output_tokens = models.IntegerField()

    class Meta:
        managed = False
        db_table = "analytics_relay"

    def __str__(self) -> str:
        return f"{self.relay_id} {self.service} {self.method}"


# What every rollup and summary row sums (aggregation adds them up, selectors read them); latency_max_ms, a maximum,
# is kept beside them.
ROLLUP_COUNTERS = ("requests", "successes", "errors_user", "errors_upstream", "errors_gateway", "status_2xx",
                   "status_3xx", "status_4xx", "status_5xx", "latency_sum_ms", "req_bytes", "resp_bytes", "units",
                   "input_tokens", "output_tokens")  # fmt: skip


class RollupBase(models.Model):
    bucket = models.DateTimeField(primary_key=True)  # the natural key is (bucket, dimensions); a pk only for the ORM
    team_id = models.IntegerField()
    endpoint_id = models.IntegerField()
    key_id = models.IntegerField()
    service = models.CharField(max_length=64)
    method = models.CharField(max_length=128)
    region = models.CharField(max_length=32)
    requests = models.BigIntegerField()
    successes = models.BigIntegerField()
    errors_user = models.BigIntegerField()
    errors_upstream = models.BigIntegerField()
    errors_gateway = models.BigIntegerField()
    status_2xx = models.BigIntegerField()
    status_3xx = models.BigIntegerField()
    status_4xx = models.BigIntegerField()
    status_5xx = models.BigIntegerField()
    latency_sum_ms = models.FloatField()
    latency_max_ms = models.FloatField()
    req_bytes = models.BigIntegerField()
    resp_bytes = models.BigIntegerField()
    units = models.BigIntegerField()
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M} {self.service} {self.method}: {self.requests}"


class RollupMinute(RollupBase):
    class Meta:
        managed = False
        db_table = "analytics_rollup_minute"


class RollupHour(RollupBase):
    class Meta:
        managed = False
        db_table = "analytics_rollup_hour"


class RollupDay(RollupBase):
    class Meta:
        managed = False
        db_table = "analytics_rollup_day"


class LatencyBase(models.Model):
    bucket = models.DateTimeField(primary_key=True)
    team_id = models.IntegerField()
    endpoint_id = models.IntegerField()
    key_id = models.IntegerField()
    service = models.CharField(max_length=64)
    method = models.CharField(max_length=128)
    region = models.CharField(max_length=32)
    le = models.SmallIntegerField(help_text="Histogram bucket: see analytics.histogram.")
    count = models.BigIntegerField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M} le={self.le}: {self.count}"


class LatencyMinute(LatencyBase):
    class Meta:
        managed = False
        db_table = "analytics_latency_minute"


class LatencyHour(LatencyBase):
    class Meta:
        managed = False
        db_table = "analytics_latency_hour"


class LatencyDay(LatencyBase):
    class Meta:
        managed = False
        db_table = "analytics_latency_day"


class SummaryBase(RollupBase):
    """A rollup row of one cube (analytics.summaries): dimensions the cube sums away hold '' or 0."""

    cube = models.SmallIntegerField(help_text="GROUPING() bitmask of the dimensions summed away.")

    class Meta:
        abstract = True


class SummaryHour(SummaryBase):
    class Meta:
        managed = False
        db_table = "analytics_summary_hour"


class SummaryDay(SummaryBase):
    class Meta:
        managed = False
        db_table = "analytics_summary_day"


class SummaryLatencyBase(LatencyBase):
    cube = models.SmallIntegerField(help_text="GROUPING() bitmask of the dimensions summed away.")

    class Meta:
        abstract = True


class SummaryLatencyHour(SummaryLatencyBase):
    class Meta:
        managed = False
        db_table = "analytics_summary_latency_hour"


class SummaryLatencyDay(SummaryLatencyBase):
    class Meta:
        managed = False
        db_table = "analytics_summary_latency_day"
