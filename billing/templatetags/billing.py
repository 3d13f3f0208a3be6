from __future__ import annotations

from typing import Any

from django import template

from accounts.permissions import can

register = template.Library()


@register.simple_tag(takes_context=True)
def billing_notice(context: template.Context) -> dict[str, Any] | None:
    """What a team page's banner says about billing: an overdue invoice (owners, admins, finance) or keys
    stopped by the Free plan's allowance (everyone). None when there is nothing to say (one or two queries)."""
    request = context.get("request")
    membership = getattr(request, "membership", None)
    team = getattr(request, "team", None)
    if membership is None or team is None:
        return None
    from billing import selectors, services
    from endpoints.selectors import team_suspension_reason

    reason = team_suspension_reason(team=team)
    if can(membership.role, "billing.view"):
        overdue = selectors.overdue_of(team=team)
        if overdue:
            return {"kind": "overdue", "overdue": overdue, "suspended": reason == services.PAYMENT_OVERDUE}
    if reason == services.FREE_ALLOWANCE_USED:
        return {"kind": "free_cap", "can_upgrade": can(membership.role, "billing.manage")}
    return None
