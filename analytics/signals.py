"""What analytics tells the apps above it, without importing them (they connect in their AppConfig.ready)."""

from django.dispatch import Signal

# Sent after an aggregation run's transaction commits, with key_pks: the keys whose usage the run added.
rollups_updated = Signal()
