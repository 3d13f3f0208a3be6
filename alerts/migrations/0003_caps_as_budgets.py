"""Every key's daily cap and every endpoint's monthly cap gets its budget (origin key_cap / endpoint_cap), so the ledger
enforces the caps set before budgets existed; from now on alerts.caps keeps them in step with their caps."""

from django.db import migrations

DEFAULT_ROLES = ["owner", "admin", "finance"]


def caps_to_budgets(apps, schema_editor):
    Budget = apps.get_model("alerts", "Budget")
    ApiKey = apps.get_model("endpoints", "ApiKey")
    Endpoint = apps.get_model("endpoints", "Endpoint")
    common = {"thresholds": [100], "action": "stop", "measure": "units", "notify_roles": DEFAULT_ROLES}
    keys = ApiKey.objects.filter(daily_unit_cap__isnull=False, revoked_at__isnull=True)
    Budget.objects.bulk_create(
        Budget(
            team_id=key.team_id,
            scope="key",
            endpoint_id=key.endpoint_id,
            key=key,
            origin="key_cap",
            period="day",
            name=f"Daily cap · {key.name}"[:80],
            amount=key.daily_unit_cap,
            **common,
        )  # fmt: skip
        for key in keys.exclude(pk__in=Budget.objects.filter(origin="key_cap").values("key_id"))
    )
    endpoints = Endpoint.objects.filter(monthly_unit_cap__isnull=False, deleted_at__isnull=True)
    Budget.objects.bulk_create(
        Budget(
            team_id=endpoint.team_id,
            scope="endpoint",
            endpoint=endpoint,
            origin="endpoint_cap",
            period="month",
            name=f"Monthly cap · {endpoint.name}"[:80],
            amount=endpoint.monthly_unit_cap,
            **common,
        )  # fmt: skip
        for endpoint in endpoints.exclude(pk__in=Budget.objects.filter(origin="endpoint_cap").values("endpoint_id"))
    )


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0002_health_rules_money_forecast_caps"),
        ("endpoints", "0004_trafficstop"),
    ]

    operations = [migrations.RunPython(caps_to_budgets, migrations.RunPython.noop)]
