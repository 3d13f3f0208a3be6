from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from endpoints.services import gateway_credential_create
from project.errors import ServiceError


class Command(BaseCommand):
    help = "Create a credential for one gateway instance or region; prints the secret once (stored only as a hash)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the gateway instance or region, e.g. eu-west-1")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            credential, secret = gateway_credential_create(name=options["name"])
        except ServiceError as error:
            raise CommandError(error.message) from None
        self.stderr.write(f"Created gateway credential {credential.prefix}… for {credential.name}. It is shown once:")
        self.stdout.write(secret)
