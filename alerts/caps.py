"""A key's daily unit cap and an endpoint's monthly unit cap, enforced from the ledger as budgets.

The config feed still publishes each cap, so a gateway can count locally between ledger updates; Gatehouse also keeps
one budget per cap (origin key_cap / endpoint_cap, stop traffic at 100 %), so the same machinery as every budget stops
the key or the endpoint once the ledger says the cap is used, however many gateways served it, and lifts the stop at
the next period or when the cap is raised or removed. The cap's page changes it; the Budgets page only shows it."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.db import transaction

from accounts.models import User
from alerts import services
from alerts.models import Budget
from endpoints.models import ApiKey, Endpoint

CAP_THRESHOLDS = [100]


def _key_cap(key: ApiKey) -> dict[str, Any] | None:
    if key.daily_unit_cap is None or key.revoked_at is not None:
        return None
    return {"name": f"Daily cap · {key.name}"[:80], "amount": Decimal(key.daily_unit_cap), "period": Budget.Period.DAY}


def _endpoint_cap(endpoint: Endpoint) -> dict[str, Any] | None:
    if endpoint.monthly_unit_cap is None or endpoint.deleted_at is not None:
        return None
    return {"name": f"Monthly cap · {endpoint.name}"[:80], "amount": Decimal(endpoint.monthly_unit_cap),
            "period": Budget.Period.MONTH}  # fmt: skip


def _sync(budget: Budget | None, wanted: dict[str, Any] | None, actor: User | None, create: dict[str, Any]) -> None:
    origin = create["origin"]
    if wanted is None:
        if budget is not None:
            services.budget_delete(budget=budget, actor=actor, origin=origin)
        return
    if budget is None:
        services.budget_create(actor=actor, thresholds=CAP_THRESHOLDS, action=Budget.Action.STOP, **create, **wanted)
    elif (budget.name, budget.amount, budget.period) != (wanted["name"], wanted["amount"], wanted["period"]):
        services.budget_update(budget=budget, actor=actor, origin=origin, **wanted)


@transaction.atomic
def caps_sync(*, keys: Iterable[ApiKey] = (), endpoints: Iterable[Endpoint] = (), actor: User | None = None,
              **_: Any) -> None:  # fmt: skip
    """endpoints' caps_changed receiver: make each cap's budget match its cap (create, change, or delete it)."""
    for key in keys:
        budget = Budget.objects.filter(origin=Budget.Origin.KEY_CAP, key=key).select_related("team").first()
        create = {"team": key.team, "scope": Budget.Scope.KEY, "key": key, "origin": Budget.Origin.KEY_CAP}
        _sync(budget, _key_cap(key), actor, create)
    for endpoint in endpoints:
        budget = (
            Budget.objects.filter(origin=Budget.Origin.ENDPOINT_CAP, endpoint=endpoint).select_related("team").first()
        )
        create = {"team": endpoint.team, "scope": Budget.Scope.ENDPOINT, "endpoint": endpoint,
                  "origin": Budget.Origin.ENDPOINT_CAP}  # fmt: skip
        _sync(budget, _endpoint_cap(endpoint), actor, create)
