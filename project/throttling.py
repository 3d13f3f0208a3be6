"""Rate limits for the team REST API: per management token, per signed-in user, per address for the anonymous.

One leaked or runaway token must not be able to hammer the API (and, through it, the database and the gateway's
config feed). Rates come from settings (API_THROTTLE_RATES) at request time. Counters live in Redis; if Redis is
unreachable the request is let through (logged) — the API stays up, like ingestion, on PostgreSQL alone.
The gateway API has its own credentials and no throttle here: its load is bounded by batch sizes.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle

from project.http import client_ip

logger = logging.getLogger(__name__)


class PrincipalRateThrottle(SimpleRateThrottle):
    """Counts requests per caller: a token by its id, a person by their id, anyone else by address."""

    scope = "principal"

    def __init__(self) -> None:  # the rate is chosen per request, once the caller is known
        pass

    def get_rate(self) -> str:
        return settings.API_THROTTLE_RATES[self.scope]

    def allow_request(self, request: Any, view: Any) -> bool:
        user = request.user
        token = getattr(user, "token", None)  # a management token's principal (accounts.authentication)
        if token is not None:
            self.scope, ident = "token", f"t{token.pk}"
        elif user is not None and user.is_authenticated:
            self.scope, ident = "user", f"u{user.pk}"
        else:
            self.scope, ident = "anon", f"a{client_ip(request._request)}"
        self.rate = self.get_rate()
        num_requests, duration = self.parse_rate(self.rate)
        if num_requests is None or duration is None:  # no rate, no limit (DRF's rule); every scope here has a rate
            return True
        self.num_requests, self.duration = num_requests, duration
        self.key = self.cache_format % {"scope": self.scope, "ident": ident}
        try:
            self.history = self.cache.get(self.key, [])
            self.now = self.timer()
            while self.history and self.history[-1] <= self.now - duration:
                self.history.pop()
            if len(self.history) >= num_requests:
                return self.throttle_failure()
            return self.throttle_success()
        except RedisError:
            logger.warning("API throttle skipped: Redis is unreachable", exc_info=True)
            return True
