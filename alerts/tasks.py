from __future__ import annotations

from celery import shared_task

from alerts import health, services


@shared_task(ignore_result=True)
def budgets_sweep() -> dict[str, int]:
    """Re-evaluate the budgets whose stop is in force, so a new period (no traffic reaches a stopped scope, so no
    aggregation run would) lifts them within seconds."""
    budgets = services.budgets_stopping()
    if budgets:
        services.budgets_evaluate(budgets=budgets)
    return {"budgets": len(budgets)}


@shared_task(ignore_result=True)
def alert_rules_sweep() -> dict[str, int]:
    """Evaluate every enabled health alert rule: a window empties when traffic stops, and no aggregation run would
    notice (so a firing rule resolves within the beat's 30 s)."""
    rules = health.rules_enabled()
    changes = health.rules_evaluate(rules=rules) if rules else []
    return {"rules": len(rules), "changes": len(changes)}
