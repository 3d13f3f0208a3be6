"""Writes for endpoints, API keys, gateway credentials and the config feed's change log."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from accounts.models import Team, User
from accounts.selectors import user_email_verified
from accounts.services import audit_record
from endpoints import keys as key_format
from endpoints import validators
from endpoints.listen import config_change_notify
from endpoints.models import (
    ENFORCED_FIELDS,
    GATEWAY_CREDENTIAL_PREFIX,
    MAX_UNIT_CAP,
    ApiKey,
    ConfigChange,
    Endpoint,
    EndpointStatus,
    Environment,
    GatewayCredential,
    PlanLimit,
    Service,
    ServiceStatus,
    TeamSuspension,
    TrafficStop,
)
from endpoints.selectors import known_methods, plan_rate_limit
from endpoints.signals import caps_changed
from project.errors import ServiceError
from project.secrets import prefixed_secret, sha256_hex
from webhooks.models import KEY_EXPIRING
from webhooks.services import event_emit

# Any 64-bit number, shared by every writer of the change log.
CONFIG_FEED_LOCK = 0x67617465_66656564  # "gatefeed"
ROTATION_OVERLAPS: dict[str, timedelta] = {
    "none": timedelta(0),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
EDITABLE_FIELDS = ("name", "description", *ENFORCED_FIELDS)


class AllowlistError(ServiceError):
    """Every bad entry of every allowlist at once, so a user fixes them all in one round trip. `errors` holds one
    ServiceError per bad entry, its field the list's: allowed_origins, allowed_user_agents, allowed_ips, or
    allowed_contracts.<service id> and allowed_methods.<service id>. The error itself reads as the first of them."""

    def __init__(self, errors: list[ServiceError]) -> None:
        first = errors[0]
        super().__init__(first.code, first.message, field=first.field)
        self.errors = errors


# --- the one door for what the gateway enforces ---------------------------------------------


def config_change_record(*, endpoints: Iterable[Endpoint] = (), keys: Iterable[ApiKey] = ()) -> None:
    """Record that these endpoints and keys changed, in the caller's transaction.

    Every change the gateway must enforce — from this app, billing suspensions or the admin —
    calls this, so the feed cannot miss one. The advisory lock is held until commit: change
    ids are allocated and committed in the same order, so `?since=` never skips a row that
    commits late. Call it last in the transaction (after the row updates).
    """
    if not connection.in_atomic_block:
        raise RuntimeError("config_change_record must run inside the transaction that makes the change")
    rows = [ConfigChange(kind=ConfigChange.Kind.ENDPOINT, object_id=e.public_id) for e in endpoints]
    rows += [ConfigChange(kind=ConfigChange.Kind.KEY, object_id=k.key_id) for k in keys]
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CONFIG_FEED_LOCK])
    ConfigChange.objects.bulk_create(rows)
    config_change_notify(cursor=max(row.id for row in rows))  # delivered at commit: wakes the feed's long-polls


def _keys_that_matter(endpoints: Iterable[Endpoint]) -> list[ApiKey]:
    """Keys whose effective status follows their endpoint (revoked keys stay revoked)."""
    return list(ApiKey.objects.filter(endpoint__in=list(endpoints), revoked_at__isnull=True))


# --- the service catalog ------------------------------------------------------------------------


def service_catalog_sync() -> int:
    """Add services listed in endpoints/catalog.py that the table lacks; never overwrite operator edits.

    Returns how many were added. (The first seed is a data migration; this adds later catalog entries.)
    """
    from endpoints.catalog import SERVICES

    existing = set(Service.objects.values_list("id", flat=True))
    missing = [Service(**spec) for spec in SERVICES if spec["id"] not in existing]
    Service.objects.bulk_create(missing, ignore_conflicts=True)
    return len(missing)


# --- endpoints ------------------------------------------------------------------------------


def _active_services(service_ids: Iterable[str]) -> list[Service]:
    """The services to enable, at least one, none unknown or retired."""
    wanted = sorted(set(service_ids))
    found = list(Service.objects.filter(id__in=wanted).exclude(status=ServiceStatus.RETIRED))
    missing = sorted(set(wanted) - {s.id for s in found})
    if missing:
        raise ServiceError("unknown_service", f"Unknown or retired services: {', '.join(missing)}.", field="services")
    if not found:
        raise ServiceError("services_required", "Enable at least one service.", field="services")
    return found


def _name(value: object, *, noun: str) -> str:
    name = str(value).strip()
    if not name:
        raise ServiceError("name_required", f"Give the {noun} a name.", field="name")
    return name[:80]


def _apply(instance: models.Model, changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set the fields whose value differs (HackSoft's model_update, without the save: the caller saves, once). Returns
    the changed fields' values before and after, for the audit log."""
    before = {field: getattr(instance, field) for field, value in changes.items() if getattr(instance, field) != value}
    after = {field: changes[field] for field in before}
    for field, value in after.items():
        setattr(instance, field, value)
    return before, after


_LIST_CLEANERS: dict[str, Callable[[list[str]], list[str]]] = {
    "allowed_origins": validators.clean_origins,
    "allowed_user_agents": validators.clean_user_agents,
    "allowed_ips": validators.clean_ip_ranges,
}


def _per_service_cleaner(field: str, service: Service | None) -> Callable[[list[str]], list[str]] | None:
    """How to clean a service's contracts or methods list; None when the endpoint cannot have one for it."""
    if service is None or (field == "allowed_contracts" and service.is_llm):
        return None
    if field == "allowed_contracts":
        return partial(validators.clean_contract_addresses, chain_family=service.chain_family)
    return partial(validators.clean_methods, known=known_methods(service))


def _allowlists_clean(changes: dict[str, Any], services: list[Service]) -> None:
    """Validate and normalize, in place, the allowlists among the changes (endpoints/validators.py), for the services
    the endpoint will have. Raises AllowlistError with every bad entry; a service's empty list is dropped."""
    errors: list[ServiceError] = []

    def clean(field: str, cleaner: Callable[[list[str]], list[str]], entries: list[str]) -> list[str]:
        try:
            return cleaner(entries)
        except ValidationError as error:
            errors.extend(ServiceError(e.code or "invalid", e.messages[0], field=field) for e in error.error_list)
            return []

    for field, cleaner in _LIST_CLEANERS.items():
        if field in changes:
            changes[field] = clean(field, cleaner, changes[field])
    by_id = {service.id: service for service in services}
    for field in ("allowed_contracts", "allowed_methods"):
        if field not in changes:
            continue
        per_service: dict[str, list[str]] = {}
        for service_id, entries in changes[field].items():
            where = f"{field}.{service_id}"
            service_cleaner = _per_service_cleaner(field, by_id.get(service_id))
            if service_cleaner is None:
                message = f"{service_id!r} is not an enabled RPC service of this endpoint"
                errors.append(ServiceError("unknown_service", message, field=where))
            elif cleaned := clean(where, service_cleaner, entries):
                per_service[service_id] = cleaned
        changes[field] = per_service
    if errors:
        raise AllowlistError(errors)


@transaction.atomic
def endpoint_create(
    *,
    team: Team,
    name: str,
    actor: User,
    services: Iterable[str],
    environment: str = Environment.PRODUCTION,
    description: str = "",
) -> Endpoint:
    """Create an endpoint (a team's app) with the services it may call."""
    name = _name(name, noun="endpoint")
    if environment not in Environment.values:
        raise ServiceError("invalid_environment", "Choose production or test.", field="environment")
    chosen = _active_services(services)
    Team.objects.select_for_update().filter(pk=team.pk).first()  # one creation at a time: the count holds
    if Endpoint.objects.filter(team=team).live().count() >= settings.TEAM_MAX_ENDPOINTS:
        raise ServiceError(
            "quota_exceeded",
            f"This team has {settings.TEAM_MAX_ENDPOINTS} endpoints, the most it can have. Delete endpoints it no "
            "longer uses, or contact support to raise the limit.",
        )
    endpoint = Endpoint.objects.create(
        public_id=key_format.public_id("ep_", 12),
        team=team,
        name=name,
        description=description.strip()[:500],
        environment=environment,
    )
    endpoint.services.set(chosen)
    audit_record(
        action="endpoint.created",
        actor=actor,
        team=team,
        target=endpoint,
        after={"name": endpoint.name, "environment": environment, "services": sorted(s.id for s in chosen)},
    )
    config_change_record(endpoints=[endpoint])
    return endpoint


@transaction.atomic
def endpoint_update(
    *,
    endpoint: Endpoint,
    actor: User | None,
    services: Iterable[str] | None = None,
    **changes: Any,
) -> Endpoint:
    """Change an endpoint's settings, limits or allowlists. Allowlists are validated and normalized here, every bad
    entry reported at once (AllowlistError); on any error nothing changes."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable here: {sorted(unknown)}")
    endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
    if endpoint.deleted_at is not None:
        raise ServiceError("endpoint_deleted", "This endpoint was deleted.", status=404)
    if "name" in changes:
        changes["name"] = _name(changes["name"], noun="endpoint")
    current = list(endpoint.services.all())
    chosen = current if services is None else _active_services(services)
    _allowlists_clean(changes, chosen)  # for the services the endpoint will have
    if changes.get("rate_limit_rps") is not None:
        _check_rate_limit(endpoint.team, changes["rate_limit_rps"])
    _check_cap(changes.get("monthly_unit_cap"), "monthly_unit_cap")
    audit_before, audit_after = _apply(endpoint, changes)
    before_services, after_services = sorted(s.id for s in current), sorted(s.id for s in chosen)
    if not audit_after and after_services == before_services:
        return endpoint
    endpoint.save(update_fields=[*audit_after, "updated_at"])
    if after_services != before_services:
        endpoint.services.set(chosen)
        audit_before["services"], audit_after["services"] = before_services, after_services
    audit_record(
        action="endpoint.updated",
        actor=actor,
        team=endpoint.team,
        target=endpoint,
        before=audit_before,
        after=audit_after,
    )
    if set(audit_after) & {*ENFORCED_FIELDS, "services"}:
        config_change_record(endpoints=[endpoint], keys=_keys_that_matter([endpoint]))
    if set(audit_after) & {"name", "monthly_unit_cap"}:  # the cap's budget is named after the endpoint
        caps_changed.send(sender=Endpoint, keys=[], endpoints=[endpoint], actor=actor)
    return endpoint


def _check_rate_limit(team: Team, rps: int) -> None:
    allowed = plan_rate_limit(team=team)
    if rps > allowed:
        raise ServiceError(
            "rate_limit_above_plan",
            f"Your plan allows up to {allowed:,} requests per second per endpoint; choose {allowed:,} or less, or "
            "leave it empty for the plan's limit.",
            field="rate_limit_rps",
        )


def plan_limit_set(*, team: Team | None, rate_limit_rps: int) -> None:
    """Billing says what the team's plan allows (team None: the default, for teams on no plan). When it changes, the
    endpoints it governs are republished in the config feed, so the gateway enforces the new limit."""
    with transaction.atomic():
        current = PlanLimit.objects.select_for_update().filter(team=team).first()
        if current is not None and current.rate_limit_rps == rate_limit_rps:
            return
        if current is None:
            PlanLimit.objects.create(team=team, rate_limit_rps=rate_limit_rps)
        else:
            PlanLimit.objects.filter(pk=current.pk).update(rate_limit_rps=rate_limit_rps)
        governed = (
            Endpoint.objects.filter(team=team) if team else Endpoint.objects.filter(team__plan_limit__isnull=True)
        )
        config_change_record(endpoints=list(governed.live()))


def endpoint_set_paused(*, endpoint: Endpoint, paused: bool, actor: User) -> Endpoint:
    """The team pauses (every key refused) or resumes its endpoint. A platform suspension overrides both."""
    if endpoint.status == EndpointStatus.SUSPENDED:
        raise ServiceError(
            "suspended",
            f"The platform suspended this endpoint: {endpoint.suspended_reason}. Contact support.",
            status=409,
        )
    status = EndpointStatus.PAUSED if paused else EndpointStatus.ACTIVE
    return endpoint_update(endpoint=endpoint, actor=actor, status=status)


def endpoint_suspend(*, endpoint: Endpoint, reason: str, actor: User | None = None) -> Endpoint:
    """Operator action: the platform suspends an endpoint with a reason the team sees."""
    if not reason.strip():
        raise ServiceError("reason_required", "Say why the endpoint is suspended.", field="reason")
    return endpoint_update(
        endpoint=endpoint, actor=actor, status=EndpointStatus.SUSPENDED, suspended_reason=reason.strip()[:200]
    )


def endpoint_unsuspend(*, endpoint: Endpoint, actor: User | None = None) -> Endpoint:
    return endpoint_update(endpoint=endpoint, actor=actor, status=EndpointStatus.ACTIVE, suspended_reason="")


@transaction.atomic
def endpoint_delete(*, endpoint: Endpoint, actor: User) -> None:
    """Delete an endpoint: its keys stop working at once; the row stays so usage history keeps its name."""
    endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
    if endpoint.deleted_at is not None:
        return
    now = timezone.now()
    keys = _keys_that_matter([endpoint])
    ApiKey.objects.filter(pk__in=[k.pk for k in keys]).update(revoked_at=now)
    endpoint.deleted_at = now
    endpoint.save(update_fields=["deleted_at", "updated_at"])
    audit_record(
        action="endpoint.deleted",
        actor=actor,
        team=endpoint.team,
        target=endpoint,
        before={"name": endpoint.name, "keys_revoked": [k.key_id for k in keys]},
    )
    config_change_record(endpoints=[endpoint], keys=keys)


# --- API keys -------------------------------------------------------------------------------


def _validate_key_limits(expires_at: datetime | None, daily_unit_cap: int | None) -> None:
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError("expiry_in_past", "The expiry must be in the future.", field="expires_at")
    _check_cap(daily_unit_cap, "daily_unit_cap")


def _check_cap(cap: int | None, field: str) -> None:
    if cap is not None and not 0 < cap <= MAX_UNIT_CAP:
        raise ServiceError("invalid_cap", f"A cap is a number of units from 1 to {MAX_UNIT_CAP:,}.", field=field)


def _new_key(
    *, endpoint: Endpoint, name: str, actor: User | None, expires_at: datetime | None, daily_unit_cap: int | None
) -> tuple[ApiKey, str]:
    secret = key_format.generate_secret(endpoint.environment)
    key = ApiKey.objects.create(
        key_id=key_format.public_id("key_", 16),
        team_id=endpoint.team_id,
        endpoint=endpoint,
        name=name,
        secret_hash=key_format.secret_hash(secret),
        secret_hint=key_format.secret_hint(secret),
        created_by=actor,
        expires_at=expires_at,
        daily_unit_cap=daily_unit_cap,
    )
    return key, secret


def api_key_create(
    *,
    endpoint: Endpoint,
    name: str,
    actor: User,
    expires_at: datetime | None = None,
    daily_unit_cap: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key. Returns it and its secret — the only time the secret exists outside the caller."""
    name = _name(name, noun="key")
    if not user_email_verified(actor):
        raise ServiceError(
            "email_unverified", "Verify your email address before creating API keys (check your inbox).", status=403
        )
    _validate_key_limits(expires_at, daily_unit_cap)
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=endpoint.team_id).first()  # one creation at a time
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        if endpoint.deleted_at is not None:
            raise ServiceError("endpoint_deleted", "This endpoint was deleted.", status=404)
        working = ApiKey.objects.filter(team_id=endpoint.team_id, revoked_at__isnull=True, endpoint__deleted_at=None)
        if working.count() >= settings.TEAM_MAX_KEYS:
            raise ServiceError(
                "quota_exceeded",
                f"This team has {settings.TEAM_MAX_KEYS} API keys, the most it can have. Revoke keys it no longer "
                "uses, or contact support to raise the limit.",
            )
        key, secret = _new_key(
            endpoint=endpoint, name=name, actor=actor, expires_at=expires_at, daily_unit_cap=daily_unit_cap
        )
        audit_record(
            action="key.created",
            actor=actor,
            team=endpoint.team,
            target=key,
            after={
                "endpoint": endpoint.public_id,
                "name": key.name,
                "expires_at": expires_at.isoformat() if expires_at else None,
                "daily_unit_cap": daily_unit_cap,
            },
        )
        config_change_record(keys=[key])
        if daily_unit_cap is not None:
            caps_changed.send(sender=ApiKey, keys=[key], endpoints=[], actor=actor)
    return key, secret


@transaction.atomic
def api_key_update(*, key: ApiKey, actor: User, **changes: Any) -> ApiKey:
    """Rename a key or change its expiry or daily cap."""
    unknown = set(changes) - {"name", "expires_at", "daily_unit_cap"}
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.revoked_at is not None:
        raise ServiceError("key_revoked", "This key is revoked.", status=409)
    if "name" in changes:
        changes["name"] = _name(changes["name"], noun="key")
    _validate_key_limits(changes.get("expires_at"), changes.get("daily_unit_cap"))
    before, after = _apply(key, changes)
    if not after:
        return key
    key.save(update_fields=list(after))
    audit_record(
        action="key.updated",
        actor=actor,
        team=key.team,
        target=key,
        before={f: v.isoformat() if isinstance(v, datetime) else v for f, v in before.items()},
        after={f: v.isoformat() if isinstance(v, datetime) else v for f, v in after.items()},
    )
    if set(after) - {"name"}:
        config_change_record(keys=[key])
    if set(after) & {"name", "daily_unit_cap"}:  # the cap's budget is named after the key
        caps_changed.send(sender=ApiKey, keys=[key], endpoints=[], actor=actor)
    return key


def api_key_rotate(*, key: ApiKey, overlap: str, actor: User) -> tuple[ApiKey, str]:
    """Replace a key with a new one; the old one keeps working for the chosen overlap, then stops."""
    if overlap not in ROTATION_OVERLAPS:
        raise ServiceError("invalid_overlap", f"Choose one of {', '.join(ROTATION_OVERLAPS)}.", field="overlap")
    if not user_email_verified(actor):
        raise ServiceError("email_unverified", "Verify your email address before creating API keys.", status=403)
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().select_related("endpoint").get(pk=key.pk)
        if not old.is_usable() or old.replaced_by_id is not None:
            raise ServiceError(
                "key_not_active", "Only an active key that was not rotated yet can be rotated.", status=409
            )
        if old.endpoint.deleted_at is not None:
            raise ServiceError("endpoint_deleted", "This endpoint was deleted.", status=404)
        new, secret = _new_key(
            endpoint=old.endpoint,
            name=old.name,
            actor=actor,
            expires_at=old.expires_at,
            daily_unit_cap=old.daily_unit_cap,
        )
        old.replaced_by = new
        ends_at = timezone.now() + ROTATION_OVERLAPS[overlap]
        if ROTATION_OVERLAPS[overlap]:
            old.valid_until = ends_at
        else:
            old.revoked_at = ends_at
        old.save(update_fields=["replaced_by", "valid_until", "revoked_at"])
        audit_record(
            action="key.rotated",
            actor=actor,
            team=old.team,
            target=old,
            after={
                "new_key": new.key_id,
                "overlap": overlap,
                "old_key_valid_until": ends_at.isoformat(),
            },
        )
        config_change_record(keys=[old, new])
        if new.daily_unit_cap is not None:
            caps_changed.send(sender=ApiKey, keys=[new], endpoints=[], actor=actor)
    return new, secret


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: User | None) -> ApiKey:
    """Revoke a key now; the gateway sees it on its next poll of the feed."""
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.revoked_at is not None:
        return key
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    audit_record(action="key.revoked", actor=actor, team=key.team, target=key)
    config_change_record(keys=[key])
    if key.daily_unit_cap is not None:
        caps_changed.send(sender=ApiKey, keys=[key], endpoints=[], actor=actor)
    return key


def api_keys_mark_used(*, last_used: dict[int, Any]) -> None:
    """Move keys' last-used time forward (from the aggregation, one statement for many keys)."""
    if not last_used:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE endpoints_apikey AS k SET last_used_at = v.ts
            FROM unnest(%s::int[], %s::timestamptz[]) AS v(id, ts)
            WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.ts)
            """,
            [list(last_used), list(last_used.values())],
        )


# --- team-wide suspension (used by billing) --------------------------------------------------


@transaction.atomic
def team_suspend(*, team: Team, reason: str) -> None:
    """Make the gateway refuse every key of the team (e.g. payment overdue) until team_unsuspend."""
    suspension, created = TeamSuspension.objects.get_or_create(team=team, defaults={"reason": reason[:200]})
    if not created and suspension.reason == reason[:200]:
        return
    if not created:
        suspension.reason = reason[:200]
        suspension.save(update_fields=["reason"])
    audit_record(action="team.suspended", team=team, after={"reason": reason})
    endpoints = list(Endpoint.objects.filter(team=team).live())
    config_change_record(endpoints=endpoints, keys=_keys_that_matter(endpoints))


@transaction.atomic
def team_unsuspend(*, team: Team) -> None:
    deleted, _ = TeamSuspension.objects.filter(team=team).delete()
    if not deleted:
        return
    audit_record(action="team.unsuspended", team=team)
    endpoints = list(Endpoint.objects.filter(team=team).live())
    config_change_record(endpoints=endpoints, keys=_keys_that_matter(endpoints))


def _stopped_by(team: Team, endpoint: Endpoint | None, key: ApiKey | None) -> tuple[list[Endpoint], list[ApiKey]]:
    """What a stop of this scope changes in the feed: the key; the endpoint and its keys; or all the team's."""
    if key is not None:
        return [], [key]
    endpoints = [endpoint] if endpoint is not None else list(Endpoint.objects.filter(team=team).live())
    return endpoints, _keys_that_matter(endpoints)


@transaction.atomic
def traffic_stop(
    *, team: Team, reason: str, detail: str, source: str, endpoint: Endpoint | None = None, key: ApiKey | None = None
) -> bool:
    """Make the gateway refuse the team's, the endpoint's or the key's traffic (status "suspended", this reason) until
    traffic_resume(source). Idempotent per source; True when it was not stopped before."""
    _stop, created = TrafficStop.objects.get_or_create(
        source=source,
        defaults={"team": team, "endpoint": endpoint, "key": key, "reason": reason, "detail": detail[:200]},
    )
    if created:
        audit_record(
            action="traffic.stopped",
            team=team,
            target=key or endpoint or team,
            after={"reason": reason, "detail": detail, "source": source},
            actor_email="gatehouse",
        )
        endpoints, keys = _stopped_by(team, endpoint, key)
        config_change_record(endpoints=endpoints, keys=keys)
    return created


@transaction.atomic
def traffic_resume(*, source: str) -> bool:
    """Lift the stop `source` set (nothing to do if there is none). True when it lifted one."""
    stops = TrafficStop.objects.select_for_update(of=("self",)).select_related("team", "endpoint", "key")
    stop = stops.filter(source=source).first()
    if stop is None:
        return False
    stop.delete()
    audit_record(
        action="traffic.resumed",
        team=stop.team,
        target=stop.key or stop.endpoint or stop.team,
        before={"reason": stop.reason, "detail": stop.detail, "source": source},
        actor_email="gatehouse",
    )
    endpoints, keys = _stopped_by(stop.team, stop.endpoint, stop.key)
    config_change_record(endpoints=endpoints, keys=keys)
    return True


def team_gateway_config_delete(*, team: Team) -> None:
    """End a deleted team's endpoints and keys and tell the gateway (inside the team deletion's transaction). The
    rows stay, deleted and revoked, so the team's invoices and usage keep their names."""
    now = timezone.now()
    endpoints = list(Endpoint.objects.select_for_update().filter(team=team, deleted_at__isnull=True))
    keys = list(ApiKey.objects.select_for_update().filter(team=team, revoked_at__isnull=True))
    ApiKey.objects.filter(pk__in=[k.pk for k in keys]).update(revoked_at=now)
    Endpoint.objects.filter(pk__in=[e.pk for e in endpoints]).update(deleted_at=now)
    config_change_record(endpoints=endpoints, keys=keys)


# --- gateway credentials --------------------------------------------------------------------


def gateway_credential_create(*, name: str, actor: User | None = None) -> tuple[GatewayCredential, str]:
    """A credential for one gateway instance or region. Returns the secret, which is never stored."""
    name = name.strip()
    if not name:
        raise ServiceError("name_required", "Name the gateway (e.g. eu-west-1).", field="name")
    secret, public_part = prefixed_secret(GATEWAY_CREDENTIAL_PREFIX)
    try:
        with transaction.atomic():
            credential = GatewayCredential.objects.create(
                name=name[:80],
                prefix=f"{GATEWAY_CREDENTIAL_PREFIX}{public_part}",
                secret_hash=sha256_hex(secret),
                created_by=actor,
            )
            audit_record(
                action="gateway_credential.created", actor=actor, target=credential, after={"name": credential.name}
            )
    except IntegrityError:
        raise ServiceError(
            "name_taken", f"A gateway credential named {name!r} exists.", field="name", status=409
        ) from None
    return credential, secret


def gateway_credentials_revoke(*, name_prefix: str, actor: User | None = None) -> int:
    """Revoke every active credential whose name starts with name_prefix (e.g. a simulator's earlier runs)."""
    revoked = 0
    for credential in GatewayCredential.objects.filter(name__startswith=name_prefix, revoked_at__isnull=True):
        gateway_credential_revoke(credential=credential, actor=actor)
        revoked += 1
    return revoked


def gateway_credential_revoke(*, credential: GatewayCredential, actor: User | None = None) -> None:
    updated = GatewayCredential.objects.filter(pk=credential.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if updated:
        audit_record(action="gateway_credential.revoked", actor=actor, target=credential)


# --- expiry warnings -----------------------------------------------------------------------

KEY_EXPIRY_WARNING = timedelta(days=7)


def _expiring_in(left: timedelta) -> str:
    days = left.days
    return "within a day" if days < 1 else "in 1 day" if days == 1 else f"in {days} days"


def keys_warn_expiring(*, now: datetime | None = None) -> int:
    """Emit `key.expiring` for each working key whose expiry is within KEY_EXPIRY_WARNING, once per expires_at value
    (a changed expiry is warned about again). A key in a rotation overlap that ends first is skipped: it stops anyway.
    Returns how many were emitted."""
    now = now or timezone.now()
    due = (
        ApiKey.objects.usable(now)
        .filter(expires_at__lte=now + KEY_EXPIRY_WARNING)
        .filter(models.Q(valid_until__isnull=True) | models.Q(valid_until__gt=models.F("expires_at")))
        .exclude(expiry_warned_for=models.F("expires_at"))
        .select_related("team", "endpoint")
        .order_by("expires_at", "pk")
    )
    emitted = 0
    for key in due:
        assert key.expires_at is not None  # usable() with expires_at__lte
        with transaction.atomic():
            # The claim: a concurrent sweep's UPDATE waits for this row, then finds it warned and updates nothing.
            claimed = (
                ApiKey.objects.filter(pk=key.pk, expires_at=key.expires_at, revoked_at__isnull=True)
                .exclude(expiry_warned_for=models.F("expires_at"))
                .update(expiry_warned_for=models.F("expires_at"))
            )
            if not claimed:
                continue
            left = key.expires_at - now
            summary = (
                f"API key {key.name} ({key.key_id}) of endpoint {key.endpoint.name} expires {_expiring_in(left)}, "
                f"at {key.expires_at:%Y-%m-%d %H:%M} UTC: rotate it or change its expiry to keep it working."
            )
            payload = {
                "key": {"id": key.key_id, "name": key.name},
                "endpoint": {"id": key.endpoint.public_id, "name": key.endpoint.name},
                "expires_at": key.expires_at.isoformat(),
                "days_left": left.days,
                "summary": summary,
            }
            event_emit(team=key.team, type=KEY_EXPIRING, payload=payload)
        emitted += 1
    return emitted
