"""Reads for billing that other apps use."""

from __future__ import annotations

from typing import Any


def team_has_unpaid_invoices(*, team: Any) -> bool:
    """Whether the team owes money on an invoice. Billing is not built yet: nothing is ever unpaid."""
    return False
