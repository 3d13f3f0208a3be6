from typing import Any

from django.core.management.base import BaseCommand

from endpoints.services import service_catalog_sync


class Command(BaseCommand):
    help = "Add services from endpoints/catalog.py that are missing; existing services (and operator edits) stay."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"Added {service_catalog_sync()} service(s).")
