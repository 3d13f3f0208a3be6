from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Team, User


class ServiceKind(models.TextChoices):
    RPC = "rpc", "Blockchain RPC"
    LLM = "llm", "LLM inference"


class ServiceStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    BETA = "beta", "Beta"
    RETIRED = "retired", "Retired"


class Service(models.Model):
    """A chain or model the gateway serves. Operator-managed in the admin; seeded from endpoints/catalog.py."""

    id = models.SlugField(primary_key=True, max_length=64)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=ServiceKind.choices)
    status = models.CharField(max_length=8, choices=ServiceStatus.choices, default=ServiceStatus.ACTIVE)
    chain_family = models.CharField(max_length=16, help_text="evm, solana or llm: decides the known methods.")
    chain_id = models.BigIntegerField(null=True, blank=True)
    url_template = models.CharField(max_length=200, help_text="The URL customers use; {key_id} is replaced.")
    compute_units = models.PositiveIntegerField(default=1, help_text="Compute units per relay (RPC).")
    method_compute_units = models.JSONField(default=dict, blank=True, help_text="Per-method overrides.")
    input_price_per_million = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    output_price_per_million = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    sort_order = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sort_order", "id"]

    def __str__(self) -> str:
        return self.name

    def url_for(self, key_id: str) -> str:
        return self.url_template.replace("{key_id}", key_id)

    def compute_units_for(self, method: str) -> int:
        return int(self.method_compute_units.get(method, self.compute_units))

    @property
    def is_llm(self) -> bool:
        return self.kind == ServiceKind.LLM

    @property
    def token_prices(self) -> tuple[Decimal | None, Decimal | None]:
        return self.input_price_per_million, self.output_price_per_million


class Environment(models.TextChoices):
    PRODUCTION = "production", "Production"
    TEST = "test", "Test"


class EndpointStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused by the team"
    SUSPENDED = "suspended", "Suspended by the platform"


class EndpointQuerySet(models.QuerySet["Endpoint"]):
    def live(self) -> EndpointQuerySet:
        return self.filter(deleted_at__isnull=True)


# An endpoint's allowlists; the config feed and the team API name each without "allowed_" (allowlists.origins, …).
ALLOWLIST_FIELDS = ("allowed_origins", "allowed_user_agents", "allowed_ips", "allowed_contracts", "allowed_methods")
# What the team sets itself on the security tab (and the API's PATCH) of what the gateway enforces.
SECURITY_FIELDS = ("secret_key_required", "rate_limit_rps", "monthly_unit_cap", *ALLOWLIST_FIELDS)
# Everything of an endpoint the gateway enforces, named once: the config feed (feed.py) publishes it, and changing any
# of it is a config change (services.endpoint_update).
ENFORCED_FIELDS = ("environment", "status", "suspended_reason", *SECURITY_FIELDS)


class Endpoint(models.Model):
    """A team's app: which services it may call, with which limits and allowlists. Keys belong to one."""

    public_id = models.CharField(max_length=24, unique=True)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="endpoints")
    name = models.CharField(max_length=80)
    description = models.CharField(max_length=500, blank=True)
    environment = models.CharField(max_length=16, choices=Environment.choices, default=Environment.PRODUCTION)
    services = models.ManyToManyField(Service, related_name="endpoints", blank=True)
    status = models.CharField(max_length=16, choices=EndpointStatus.choices, default=EndpointStatus.ACTIVE)
    suspended_reason = models.CharField(max_length=200, blank=True)
    rate_limit_rps = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per second; empty: plan default."
    )
    monthly_unit_cap = models.PositiveBigIntegerField(null=True, blank=True, help_text="Units per calendar month.")
    secret_key_required = models.BooleanField(default=False)
    allowed_origins = ArrayField(models.CharField(max_length=256), default=list, blank=True)
    allowed_user_agents = ArrayField(models.CharField(max_length=256), default=list, blank=True)
    allowed_ips = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    allowed_contracts = models.JSONField(default=dict, blank=True, help_text="{service id: [addresses]}")
    allowed_methods = models.JSONField(default=dict, blank=True, help_text="{service id: [methods]}")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # Deleted endpoints stay as rows so usage and invoices keep naming them; their keys are revoked.
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = EndpointQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["team", "deleted_at"], name="endpoints_team_live")]

    def __str__(self) -> str:
        return self.name


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def unrevoked(self, at: datetime | None = None) -> ApiKeyQuerySet:
        """Keys not ended by a revocation, their endpoint's deletion or the end of a rotation overlap: every key the
        config feed tells the gateway about (an expired one included, so it can say "expired")."""
        now = at or timezone.now()
        return self.filter(
            Q(revoked_at__isnull=True, endpoint__deleted_at__isnull=True),
            Q(valid_until__isnull=True) | Q(valid_until__gt=now),
        )

    def usable(self, at: datetime | None = None) -> ApiKeyQuerySet:
        """Keys that work: unrevoked and not expired (ApiKey.is_usable, as a filter)."""
        now = at or timezone.now()
        return self.unrevoked(now).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class ApiKey(models.Model):
    """An API key: a public key id (in URLs) and a secret shown once and stored only as SHA-256."""

    key_id = models.CharField(max_length=32, unique=True)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=80)
    secret_hash = models.CharField(max_length=64, unique=True)
    secret_hint = models.CharField(max_length=32, help_text="Start and end of the secret, to recognise it.")
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    daily_unit_cap = models.PositiveBigIntegerField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # After a rotation the old key keeps working until valid_until; the new key is replaced_by.
    valid_until = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    last_used_at = models.DateTimeField(null=True, blank=True)
    # The expires_at that key.expiring was sent for: a changed expiry no longer matches, so it is warned about again.
    expiry_warned_for = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["team", "endpoint"], name="endpoints_key_team_endpoint")]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_id})"

    def is_usable(self, at: datetime | None = None) -> bool:
        """ApiKeyQuerySet.usable for one loaded key (its endpoint's deletion revokes it, so revoked_at says that)."""
        now = at or timezone.now()
        return (
            self.revoked_at is None
            and (self.valid_until is None or self.valid_until > now)
            and (self.expires_at is None or self.expires_at > now)
        )


class TeamSuspension(models.Model):
    """A team whose keys the gateway must refuse (e.g. payment overdue). Set and cleared by billing."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="gateway_suspension")
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.team}: {self.reason}"


class TrafficStop(models.Model):
    """Traffic the gateway must refuse until it is lifted: a team's, an endpoint's or one key's. Set and lifted by the
    apps above (a budget that stops traffic at 100 %), each stop under its own `source` so two never lift each other.
    The feed reports it as status "suspended" with the stop's machine-readable reason (e.g. budget_exceeded)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="traffic_stops")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    reason = models.CharField(max_length=40, help_text="Machine-readable, as the feed says it: budget_exceeded.")
    detail = models.CharField(max_length=200, help_text="For people: which budget, how to lift it.")
    source = models.CharField(max_length=64, unique=True, help_text="Who set it, e.g. budget:12.")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


# A team billing never set a limit for, before any default is recorded: the Free plan's (billing's catalog seeds the
# default row with its plan's value).
DEFAULT_RATE_LIMIT_RPS = 25

# The largest unit cap a key or an endpoint may set: a quadrillion units, far beyond any real month, and well inside
# what the ledger (bigint) and a cap's budget (20 digits) can count.
MAX_UNIT_CAP = 10**15


class PlanLimit(models.Model):
    """What a team's plan lets its endpoints do at the gateway: the rate limit when an endpoint sets none, and the most
    it may set. Billing owns the plans and writes these (endpoints.services.plan_limit_set); the config feed and the
    endpoint checks read them. The row without a team is the default, for teams on no plan (Free)."""

    team = models.OneToOneField(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="plan_limit")
    rate_limit_rps = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [  # one default row at most
            models.UniqueConstraint(Coalesce("team", models.Value(0)), name="endpoints_plan_limit_once")
        ]

    def __str__(self) -> str:
        return f"{self.team or 'default'}: {self.rate_limit_rps} rps"


GATEWAY_CREDENTIAL_PREFIX = "ggw_"


class GatewayCredential(models.Model):
    """One gateway instance or region. Only these may read the config feed or push usage."""

    name = models.CharField(max_length=80, unique=True)
    prefix = models.CharField(max_length=24, unique=True)
    secret_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class ConfigChange(models.Model):
    """The config feed's change log: one row per changed endpoint or key. Its id is the feed cursor.

    Rows are written only by services.config_change_record(), under an advisory lock held to
    commit, so ids become visible in order and a reader never skips a late-committing change.
    """

    class Kind(models.TextChoices):
        ENDPOINT = "endpoint"
        KEY = "key"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    object_id = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"#{self.id} {self.kind} {self.object_id}"


class ConfigFeedHorizon(models.Model):
    """Single row: change-log ids at or below this were pruned. An older cursor must take a new snapshot."""

    pruned_through_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"pruned through #{self.pruned_through_id}"
