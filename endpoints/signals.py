"""What endpoints tells the apps above it, without importing them (they connect in their AppConfig.ready)."""

from django.dispatch import Signal

# Sent inside the transaction that set, changed or removed a key's daily cap or an endpoint's monthly cap (or revoked a
# capped key), with keys=[ApiKey…], endpoints=[Endpoint…] and actor: alerts enforces caps as budgets from the ledger.
caps_changed = Signal()
