"""The plans and their first prices, as data: seeded by a migration (and again after a test's flush).

Operators change prices by adding plan versions in the admin, never by editing these.
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

START = datetime(2026, 1, 1, tzinfo=UTC)
PLANS = [
    # slug, name, tagline, self_serve, requires_payment, hard_cap, invoiced, fee, included, tiers
    ("free", "Free", "25M units a month to build and test. No card.", True, False, True, False,
     "0", 25_000_000, []),
    ("payg", "Pay as you go", "No monthly fee: pay per million units, cheaper as you grow.", True, True, False, False,
     "0", 0, [{"up_to": 1_000_000_000, "per_million": "1.00"}, {"up_to": 10_000_000_000, "per_million": "0.80"},
              {"up_to": None, "per_million": "0.60"}]),
    ("growth", "Growth", "$49 a month with 100M units included, then $0.70 per million.", True, True, False, False,
     "49.00", 100_000_000, [{"up_to": None, "per_million": "0.70"}]),
    ("enterprise", "Enterprise", "Custom prices and invoicing with payment terms. Talk to us.", False, True, False,
     True, "0", 0, [{"up_to": None, "per_million": "0.50"}]),
]  # fmt: skip


# Requests per second an endpoint may have on each plan (Alchemy, Infura and QuickNode scale theirs by tier).
RATE_LIMITS_RPS = {"free": 25, "payg": 300, "growth": 1_000, "enterprise": 10_000}


def plans_sync(Plan: Any, PlanVersion: Any) -> None:  # noqa: N803 - model classes (historical ones in the migration)
    """Create the plans and their first versions if missing; never touches later versions. Sets only the fields the
    given (possibly historical) model has, so the early migrations keep working as the catalog grows."""
    fields = {field.name for field in Plan._meta.get_fields()}
    for order, (
        slug,
        name,
        tagline,
        self_serve,
        requires_payment,
        hard_cap,
        invoiced,
        fee,
        included,
        tiers,
    ) in enumerate(PLANS):
        defaults = {"name": name, "tagline": tagline, "self_serve": self_serve, "requires_payment": requires_payment,
                     "hard_cap": hard_cap, "invoiced": invoiced, "sort_order": order,
                     "rate_limit_rps": RATE_LIMITS_RPS[slug]}  # fmt: skip
        plan, _ = Plan.objects.update_or_create(
            slug=slug, defaults={name: value for name, value in defaults.items() if name in fields}
        )
        PlanVersion.objects.get_or_create(
            plan=plan, team=None, effective_from=START,
            defaults={"monthly_fee": Decimal(fee), "included_units": included, "tiers": tiers},
        )  # fmt: skip
