"""What the feed says, enforced at the edge: key, endpoint and team status, the secret, allowlists, the endpoint's
rate limit and the key's daily cap — each refusal with the HTTP status and JSON-RPC error the field uses:

- 401: unknown, revoked or expired key; the secret missing where required, or wrong;
- 402: key, endpoint or team suspended (a budget, billing, the platform, a pause);
- 403: the service is not on the endpoint; origin, user agent, IP, method or contract not allowlisted;
- 429: the endpoint's rate limit; the key's daily cap or the endpoint's monthly cap reached.

`error.data.reason` names the case (README, "The reference relay", has the table). Every refusal here is the
caller's doing: error class "user" (ARCHITECTURE.md: bad key, rate limited, malformed request).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from relay.feed import ConfigStore, EndpointRecord, KeyRecord

# JSON-RPC error codes: the spec's for malformed requests, EIP-1474's -32005 ("limit exceeded") for limits, and the
# spec's implementation-defined range (-32000 … -32099) for the rest; error.data.reason is what a client should read.
RPC_PARSE_ERROR = -32700
RPC_INVALID_REQUEST = -32600
RPC_INTERNAL_ERROR = -32603
RPC_UNAUTHORIZED = -32001
RPC_PAYMENT_REQUIRED = -32002
RPC_FORBIDDEN = -32003
RPC_LIMIT_EXCEEDED = -32005
_RPC_CODES = {401: RPC_UNAUTHORIZED, 402: RPC_PAYMENT_REQUIRED, 403: RPC_FORBIDDEN, 429: RPC_LIMIT_EXCEEDED}

CAP_REASONS = frozenset({"daily_cap_reached", "monthly_cap_reached"})
# Calls whose first parameter is a transaction object: its `to` must be an allowlisted contract.
CALL_METHODS = frozenset({"eth_call", "eth_estimateGas", "eth_createAccessList", "debug_traceCall", "trace_call"})
# Calls whose first parameter is a log filter: its `address` (one or a list) must all be allowlisted.
LOG_METHODS = frozenset({"eth_getLogs", "eth_newFilter"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Refusal:
    """A request (or one call of a batch) the relay answers itself."""

    status: int
    reason: str  # machine-readable, in error.data.reason
    message: str
    rpc_code: int = 0
    retry_after: float | None = None
    error_class: str = "user"
    status_reason: str | None = None  # the feed's reason, when the refusal comes from a status

    @property
    def code(self) -> int:
        return self.rpc_code or _RPC_CODES.get(self.status, RPC_INTERNAL_ERROR)

    def error(self) -> dict[str, Any]:
        """The JSON-RPC error object."""
        data: dict[str, Any] = {"reason": self.reason, "http_status": self.status}
        if self.status_reason:
            data["status_reason"] = self.status_reason
        if self.retry_after is not None:
            data["retry_after_seconds"] = math.ceil(self.retry_after)
        return {"code": self.code, "message": self.message, "data": data}


def _words(reason: str) -> str:
    """A machine-readable reason (budget_exceeded) in words (budget exceeded); a sentence is kept as it is."""
    return reason.replace("_", " ") if " " not in reason else reason.rstrip(".")


def status_refusal(status: str, reason: str | None, *, subject: str = "API key") -> Refusal | None:
    """The refusal for a status the feed published (None for active). Unknown statuses refuse: fail closed."""
    because = f": {_words(reason)}" if reason else ""
    if status == "active":
        return None
    if status in ("revoked", "deleted"):
        return Refusal(401, "key_revoked", f"This {subject} was revoked{because}.", status_reason=reason)
    if status == "expired":
        return Refusal(401, "key_expired", f"This {subject} has expired.", status_reason=reason)
    if status == "suspended" and reason in CAP_REASONS:
        message = f"This {subject} is stopped{because}; it resumes when its cap allows."
        return Refusal(429, reason, message, status_reason=reason)
    if status == "suspended":
        code = "budget_exceeded" if reason == "budget_exceeded" else "suspended"
        return Refusal(402, code, f"This {subject} is suspended{because}.", status_reason=reason)
    return Refusal(403, "not_allowed", f"This {subject} may not be used ({status}{because}).", status_reason=reason)


def key_refusal(key: KeyRecord, now: datetime) -> Refusal | None:
    """The key's published status, with the ends the feed leaves to the gateway's clock: expiry, rotation overlap."""
    if key.status == "active" and key.valid_until is not None and key.valid_until <= now:
        return status_refusal("revoked", "replaced by rotation")
    if key.status == "active" and key.expires_at is not None and key.expires_at <= now:
        return status_refusal("expired", None)
    return status_refusal(key.status, key.status_reason)


# --- allowlists ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OriginRule:
    """One allowlisted origin as Gatehouse stores it: https://app.example.com[:port], or *.example.com[:port] with
    or without a scheme (any subdomain, at any depth, never the domain itself)."""

    scheme: str | None
    host: str  # exact host, or the suffix ".example.com" for a wildcard
    port: int | None  # None: the scheme's default port
    wildcard: bool

    @classmethod
    def parse(cls, entry: str) -> OriginRule:
        scheme, _, rest = entry.lower().rpartition("://")
        host, port = _split_port(rest)
        wildcard = host.startswith("*.")
        return cls(scheme or None, host[1:] if wildcard else host, port, wildcard)

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        if self.scheme is not None and self.scheme != scheme:
            return False
        if self.port != port:
            return False
        return host.endswith(self.host) if self.wildcard else host == self.host


def _split_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):  # [::1]:8080
        close = hostport.find("]")
        host, after = hostport[: close + 1], hostport[close + 1 :]
        return host, int(after[1:]) if after.startswith(":") and after[1:].isdigit() else None
    host, colon, port = hostport.partition(":")
    return host, int(port) if colon and port.isdigit() else None


def parse_origin(value: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port or None for the default) of an Origin header; None for "null" or anything malformed."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:  # an IPv6 literal: compared in its compressed form, bracketed, as Gatehouse stores it
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            return None
    return parts.scheme, host, None if port == _DEFAULT_PORTS[parts.scheme] else port


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, IPv4-mapped IPv6 (::ffff:203.0.113.5) taken as the IPv4 address it is."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _networks(entries: list[str]) -> tuple[IPNetwork, ...]:
    """The allowlisted ranges; an entry that is not one matches nothing (Gatehouse validates them: fail closed)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return tuple(networks)


@dataclass(frozen=True)
class EndpointPolicy:
    """An endpoint's record with its allowlists parsed once (compiled when the record changes, not per request)."""

    record: EndpointRecord
    services: frozenset[str]
    origins: tuple[OriginRule, ...]
    user_agents: tuple[str, ...]
    networks: tuple[IPNetwork, ...]
    contracts: dict[str, frozenset[str]]  # service → lower-case addresses
    methods: dict[str, frozenset[str]]

    @classmethod
    def compile(cls, record: EndpointRecord) -> EndpointPolicy:
        lists = record.allowlists
        return cls(
            record=record,
            services=frozenset(record.services),
            origins=tuple(OriginRule.parse(entry) for entry in lists.origins),
            user_agents=tuple(lists.user_agents),
            networks=_networks(lists.ips),
            contracts={s: frozenset(a.lower() for a in entries) for s, entries in lists.contracts.items() if entries},
            methods={s: frozenset(methods) for s, methods in lists.methods.items() if methods},
        )

    def origin_refusal(self, origin: str | None) -> Refusal | None:
        if not self.origins:
            return None
        parsed = parse_origin(origin) if origin else None
        if parsed is None or not any(rule.matches(*parsed) for rule in self.origins):
            shown = f" {origin!r}" if origin else " (none sent)"
            return Refusal(403, "origin_not_allowed", f"Origin{shown} is not on this endpoint's allowlist.")
        return None

    def user_agent_refusal(self, user_agent: str | None) -> Refusal | None:
        if not self.user_agents:
            return None
        if not user_agent or not any(entry in user_agent for entry in self.user_agents):
            return Refusal(403, "user_agent_not_allowed", "This User-Agent is not on this endpoint's allowlist.")
        return None

    def ip_refusal(self, ip: str | None) -> Refusal | None:
        if not self.record.allowlists.ips:
            return None
        address = client_ip(ip)
        if address is None or not any(address in network for network in self.networks):
            return Refusal(403, "ip_not_allowed", f"The address {ip} is not on this endpoint's allowlist.")
        return None

    def call_refusal(self, service: str, method: str, params: Any) -> Refusal | None:
        """A call's method and contract addresses against the service's allowlists."""
        allowed_methods = self.methods.get(service)
        if allowed_methods is not None and method not in allowed_methods:
            message = f"Method {method!r} is not on this endpoint's allowlist for {service}."
            return Refusal(403, "method_not_allowed", message)
        contracts = self.contracts.get(service)
        if contracts is None or (method not in CALL_METHODS and method not in LOG_METHODS):
            return None
        targets = _call_targets(method, params)
        if not targets or any(target.lower() not in contracts for target in targets):
            named = ", ".join(targets) if targets else "no contract address"
            message = f"{method} names {named}: only allowlisted contracts may be called on {service}."
            return Refusal(403, "contract_not_allowed", message)
        return None


def _call_targets(method: str, params: Any) -> list[str]:
    """The contract addresses a call names ([] when it names none, which an allowlist refuses)."""
    first = params[0] if isinstance(params, list) and params else None
    if not isinstance(first, dict):
        return []
    value = first.get("to") if method in CALL_METHODS else first.get("address")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return []


# --- rate limit and daily cap -----------------------------------------------------------------------------------


@dataclass
class TokenBucket:
    """`rate` tokens a second, holding at most one second's worth. A call takes one token; a batch larger than the
    bucket passes when the bucket is full and leaves it in debt, so a big batch is slowed, never refused for ever."""

    rate: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, now: float) -> TokenBucket:
        return cls(rate, max(rate, 1.0), now)

    @property
    def capacity(self) -> float:
        return max(self.rate, 1.0)

    def take(self, cost: int, now: float) -> float:
        """0.0 when granted (the tokens are taken), else the seconds until the cost could be granted."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(float(cost), self.capacity)
        if self.tokens >= needed:
            self.tokens -= cost
            return 0.0
        return (needed - self.tokens) / self.rate


@dataclass
class DailyUnits:
    """Units each key used today (UTC), counted here between ledger updates: Gatehouse stops a key at its cap from
    its own ledger (daily_cap_reached in the feed), this stops it at once from what this relay served."""

    day: date | None = None
    used: dict[str, int] = field(default_factory=dict)

    def _roll(self, today: date) -> None:
        if today != self.day:
            self.day, self.used = today, {}

    def add(self, key_id: str, units: int, today: date) -> None:
        self._roll(today)
        self.used[key_id] = self.used.get(key_id, 0) + units

    def of(self, key_id: str, today: date) -> int:
        self._roll(today)
        return self.used.get(key_id, 0)


# --- the whole decision -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """What a request says about who sends it."""

    key_id: str
    secret: str | None = None
    origin: str | None = None
    user_agent: str | None = None
    ip: str | None = None


@dataclass(frozen=True)
class Admission:
    """The outcome for a request as a whole: the key (None when unknown: nobody to attribute usage to), its
    endpoint's policy, and the refusal if any."""

    key: KeyRecord | None
    policy: EndpointPolicy | None
    refusal: Refusal | None


@dataclass
class Enforcer:
    store: ConfigStore
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    daily: DailyUnits = field(default_factory=DailyUnits)
    _policies: dict[str, EndpointPolicy] = field(default_factory=dict)

    def policy(self, endpoint: EndpointRecord) -> EndpointPolicy:
        cached = self._policies.get(endpoint.endpoint_id)
        if cached is None or cached.record is not endpoint:
            cached = self._policies[endpoint.endpoint_id] = EndpointPolicy.compile(endpoint)
        return cached

    def admit(self, caller: Caller, service: str, now: datetime) -> Admission:
        """Key, endpoint, service, secret and the request-wide allowlists (origin, user agent, IP), in that order."""
        key = self.store.keys.get(caller.key_id)
        if key is None:
            return Admission(None, None, Refusal(401, "unknown_key", "Unknown API key: check the key id in the URL."))
        endpoint = self.store.endpoints.get(key.endpoint_id)
        refusal = key_refusal(key, now)
        if refusal is None and endpoint is None:
            refusal = Refusal(401, "unknown_key", "This API key's endpoint is not known to the gateway.")
        if refusal is not None or endpoint is None:
            return Admission(key, None, refusal)
        policy = self.policy(endpoint)
        return Admission(key, policy, self._endpoint_refusal(policy, caller, service))

    def _endpoint_refusal(self, policy: EndpointPolicy, caller: Caller, service: str) -> Refusal | None:
        endpoint = policy.record
        refusal = status_refusal(endpoint.status, endpoint.status_reason, subject="endpoint")
        if refusal is None and service not in policy.services:
            refusal = Refusal(403, "service_not_enabled", f"This endpoint does not have {service} enabled.")
        return (
            refusal
            or self._secret_refusal(endpoint, caller)
            or policy.origin_refusal(caller.origin)
            or policy.user_agent_refusal(caller.user_agent)
            or policy.ip_refusal(caller.ip)
        )

    def _secret_refusal(self, endpoint: EndpointRecord, caller: Caller) -> Refusal | None:
        key = self.store.keys[caller.key_id]
        if caller.secret is not None and not key.secret_matches(caller.secret):
            return Refusal(401, "invalid_secret", "The secret key (Authorization: Bearer) does not match this key.")
        if caller.secret is None and endpoint.secret_key_required:
            return Refusal(
                401, "secret_key_required", "This endpoint requires the secret key: send Authorization: Bearer gk_…."
            )
        return None

    def spend(self, key: KeyRecord, policy: EndpointPolicy, calls: int, now: datetime, clock: float) -> Refusal | None:
        """The key's daily cap (counted here) and the endpoint's rate limit (a call is one token)."""
        cap = key.daily_unit_cap
        if cap is not None and self.daily.of(key.key_id, now.date()) >= cap:
            return Refusal(
                429,
                "daily_cap_reached",
                f"This API key used its daily cap of {cap:,} units; it resumes at 00:00 UTC.",
                status_reason="daily_cap_reached",
            )
        rps = policy.record.rate_limit_rps
        if not rps:
            return None
        bucket = self.buckets.get(policy.record.endpoint_id)
        if bucket is None:
            bucket = self.buckets[policy.record.endpoint_id] = TokenBucket.full(float(rps), clock)
        bucket.rate = float(rps)  # a new limit from the feed applies at once
        wait = bucket.take(calls, clock)
        if wait:
            message = f"Rate limit of {rps} requests per second exceeded; retry shortly."
            return Refusal(429, "rate_limited", message, retry_after=wait)
        return None

    def count(self, key_id: str, units: int, now: datetime) -> None:
        if units:
            self.daily.add(key_id, units, now.date())
