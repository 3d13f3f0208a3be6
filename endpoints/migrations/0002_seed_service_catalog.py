"""Seed the service catalog from endpoints/catalog.py. Later edits belong to the operator (Django admin)."""

from django.db import migrations


def seed(apps, schema_editor):
    from endpoints.catalog import SERVICES

    Service = apps.get_model("endpoints", "Service")
    for spec in SERVICES:
        fields = {k: v for k, v in spec.items() if k != "id"}
        Service.objects.update_or_create(id=spec["id"], defaults=fields)


def unseed(apps, schema_editor):
    from endpoints.catalog import SERVICES

    apps.get_model("endpoints", "Service").objects.filter(id__in=[s["id"] for s in SERVICES]).delete()


class Migration(migrations.Migration):
    dependencies = [("endpoints", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
