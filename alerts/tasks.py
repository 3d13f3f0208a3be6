from __future__ import annotations

from celery import shared_task

from alerts import services


@shared_task(ignore_result=True)
def budgets_sweep() -> dict[str, int]:
    """Re-evaluate the budgets whose stop is in force, so a new period (no traffic reaches a stopped scope, so no
    aggregation run would) lifts them within seconds."""
    budgets = services.budgets_stopping()
    if budgets:
        services.budgets_evaluate(budgets=budgets)
    return {"budgets": len(budgets)}
