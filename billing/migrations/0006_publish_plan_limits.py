"""Publish each team's plan limit to the endpoints app (which no longer reads billing's tables): the default from
the Free plan, and a row for every team with a billing account."""

from django.db import migrations


def publish(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    BillingAccount = apps.get_model("billing", "BillingAccount")
    PlanLimit = apps.get_model("endpoints", "PlanLimit")
    free = Plan.objects.filter(slug="free").first()
    if free is not None and not PlanLimit.objects.filter(team__isnull=True).exists():
        PlanLimit.objects.create(team=None, rate_limit_rps=free.rate_limit_rps)
    for account in BillingAccount.objects.select_related("plan"):
        PlanLimit.objects.update_or_create(
            team_id=account.team_id, defaults={"rate_limit_rps": account.plan.rate_limit_rps}
        )


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0005_plan_spans_segments"),
        ("endpoints", "0003_plan_limit"),
    ]

    operations = [migrations.RunPython(publish, migrations.RunPython.noop)]
