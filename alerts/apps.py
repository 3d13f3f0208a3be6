from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Budgets and alerts"

    def ready(self) -> None:
        from alerts.caps import caps_sync
        from alerts.health import rules_after_aggregation
        from alerts.services import evaluate_after_aggregation
        from analytics.signals import rollups_updated
        from endpoints.signals import caps_changed

        rollups_updated.connect(evaluate_after_aggregation, dispatch_uid="alerts.budgets")
        rollups_updated.connect(rules_after_aggregation, dispatch_uid="alerts.health")
        caps_changed.connect(caps_sync, dispatch_uid="alerts.caps")
