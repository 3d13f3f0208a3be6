"""The plans and their first prices (billing.catalog)."""

from django.db import migrations


def seed(apps, schema_editor):
    from billing.catalog import plans_sync

    plans_sync(apps.get_model("billing", "Plan"), apps.get_model("billing", "PlanVersion"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
