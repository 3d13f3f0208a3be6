from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from endpoints import services
from endpoints.models import ConfigChange, ConfigFeedHorizon

CHANGE_LOG_RETENTION = timedelta(days=7)


@shared_task(ignore_result=True)
def prune_config_changes() -> int:
    """Drop change-log rows older than a week; gateways with an older cursor take a new snapshot (410)."""
    cutoff = timezone.now() - CHANGE_LOG_RETENTION
    with transaction.atomic():
        newest_old = (
            ConfigChange.objects.filter(created_at__lt=cutoff).order_by("-id").values_list("id", flat=True).first()
        )
        if newest_old is None:
            return 0
        horizon, _ = ConfigFeedHorizon.objects.select_for_update().get_or_create(pk=1)
        horizon.pruned_through_id = max(horizon.pruned_through_id, newest_old)
        horizon.save(update_fields=["pruned_through_id"])
        deleted, _ = ConfigChange.objects.filter(id__lte=newest_old).delete()
    return deleted


@shared_task(ignore_result=True)
def warn_expiring_keys() -> int:
    """Emit key.expiring for keys that expire within a week (every 15 minutes by beat; each expiry once)."""
    return services.keys_warn_expiring()
