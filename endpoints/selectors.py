"""Reads for endpoints and keys. Every read of team data takes the team explicitly."""

from __future__ import annotations

from django.db.models import Count, F, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Team
from endpoints import keys as key_format
from endpoints.catalog import KNOWN_METHODS
from endpoints.feed import Status, Stops, key_status, stops_of
from endpoints.models import (
    DEFAULT_RATE_LIMIT_RPS,
    ApiKey,
    ApiKeyQuerySet,
    Endpoint,
    PlanLimit,
    Service,
    ServiceStatus,
    TeamSuspension,
)


def service_list(*, include_retired: bool = False) -> QuerySet[Service]:
    services = Service.objects.all()
    return services if include_retired else services.exclude(status=ServiceStatus.RETIRED)


def known_methods(service: Service) -> tuple[str, ...]:
    return KNOWN_METHODS.get(service.chain_family, ())


def endpoint_list(*, team: Team) -> QuerySet[Endpoint]:
    """Live endpoints with their services and counts of keys that still work (three queries in all)."""
    usable_keys = (
        ApiKey.objects.usable().filter(endpoint=OuterRef("pk")).order_by().values("endpoint").annotate(n=Count("pk"))
    )
    return (
        Endpoint.objects.filter(team=team)
        .live()
        .annotate(key_count=Coalesce(Subquery(usable_keys.values("n")), 0))
        .prefetch_related(Prefetch("services", queryset=Service.objects.order_by("sort_order")))
        .order_by("name", "id")
    )


def endpoint_get(*, team: Team, public_id: str) -> Endpoint:
    """One live endpoint of the team; Endpoint.DoesNotExist otherwise (another team's is 'not found')."""
    return (
        Endpoint.objects.live()
        .prefetch_related(Prefetch("services", queryset=Service.objects.order_by("sort_order")))
        .get(team=team, public_id=public_id)
    )


def key_list(*, team: Team, endpoint: Endpoint | None = None, include_revoked: bool = True) -> ApiKeyQuerySet:
    keys = ApiKey.objects.filter(team=team).select_related("endpoint", "created_by", "replaced_by")
    if endpoint is not None:
        keys = keys.filter(endpoint=endpoint)
    if not include_revoked:
        keys = keys.filter(revoked_at__isnull=True)
    return keys.order_by("revoked_at", "-created_at")


def key_get(*, team: Team, key_id: str) -> ApiKey:
    return ApiKey.objects.select_related("endpoint", "team").get(
        team=team, key_id=key_id, endpoint__deleted_at__isnull=True
    )


def key_by_secret(*, team: Team, secret: str) -> ApiKey | None:
    """The team's key with this secret. A malformed secret is refused by its checksum, without a query."""
    if not key_format.is_well_formed(secret):
        return None
    return (
        ApiKey.objects.select_related("endpoint").filter(team=team, secret_hash=key_format.secret_hash(secret)).first()
    )


def key_effective_status(key: ApiKey, *, team_suspension: str | None, stops: Stops | None = None) -> Status:
    """The status the gateway applies to this key now (the config feed's rules, with the stops of its team read by
    `team_stops`: a budget's or a cap's); no query."""
    endpoint = key.endpoint
    stop = stops.of_key_in_team(endpoint.public_id, key.key_id) if stops else None
    return key_status(
        revoked_at=key.revoked_at,
        valid_until=key.valid_until,
        expires_at=key.expires_at,
        endpoint_deleted=endpoint.deleted_at is not None,
        endpoint_status=endpoint.status,
        endpoint_reason=endpoint.suspended_reason,
        team_suspension=team_suspension,
        now=timezone.now(),
        stop=stop,
    )


def plan_rate_limit(*, team: Team) -> int:
    """The most requests per second the team's plan allows an endpoint (and its limit when the endpoint sets none)."""
    limits = PlanLimit.objects.filter(Q(team=team) | Q(team__isnull=True)).order_by(F("team").asc(nulls_last=True))
    return limits.values_list("rate_limit_rps", flat=True).first() or DEFAULT_RATE_LIMIT_RPS


def team_stops(*, team: Team) -> Stops:
    """The team's traffic stops in force (a budget's, a cap's), for key_effective_status."""
    return stops_of(team)


def team_suspension_reason(*, team: Team) -> str | None:
    return TeamSuspension.objects.filter(team=team).values_list("reason", flat=True).first()


def curl_example(service: Service, key_id: str, endpoint: Endpoint) -> str:
    """A request a developer can paste into a terminal to see their first relay."""
    auth = ' \\\n  -H "Authorization: Bearer $GATEHOUSE_SECRET"' if endpoint.secret_key_required else ""
    url = service.url_for(key_id)
    if service.is_llm:
        body = (
            f'{{"model": "{service.id}", "messages": [{{"role": "user", "content": "Say hello"}}], "max_tokens": 32}}'
        )
    elif service.chain_family == "solana":
        body = '{"jsonrpc": "2.0", "id": 1, "method": "getSlot"}'
    else:
        body = '{"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}'
    return f"curl {url} \\\n  -H \"Content-Type: application/json\"{auth} \\\n  -d '{body}'"


def first_request_example(*, team: Team) -> dict[str, str] | None:
    """The team's first live endpoint and usable key, as a URL and a curl example (for empty states)."""
    key = ApiKey.objects.filter(team=team).usable().select_related("endpoint").order_by("created_at").first()
    if key is None:
        return None
    service = key.endpoint.services.order_by("sort_order").first()
    if service is None:
        return None
    return {"url": service.url_for(key.key_id), "curl": curl_example(service, key.key_id, key.endpoint)}
