from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Budgets and alerts"

    def ready(self) -> None:
        from alerts.services import evaluate_after_aggregation
        from analytics.signals import rollups_updated

        rollups_updated.connect(evaluate_after_aggregation, dispatch_uid="alerts.budgets")
