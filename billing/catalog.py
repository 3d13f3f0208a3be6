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


def plans_sync(Plan: Any, PlanVersion: Any) -> None:  # noqa: N803 - model classes (historical ones in the migration)
    """Create the plans and their first versions if missing; never touches later versions."""
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
        plan, _ = Plan.objects.update_or_create(
            slug=slug,
            defaults={"name": name, "tagline": tagline, "self_serve": self_serve, "requires_payment": requires_payment,
                      "hard_cap": hard_cap, "invoiced": invoiced, "sort_order": order},
        )  # fmt: skip
        PlanVersion.objects.get_or_create(
            plan=plan, team=None, effective_from=START,
            defaults={"monthly_fee": Decimal(fee), "included_units": included, "tiers": tiers},
        )  # fmt: skip
