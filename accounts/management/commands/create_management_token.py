from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import Membership, Role, Team
from accounts.services import management_token_create
from project.errors import ServiceError


class Command(BaseCommand):
    help = "Create a management token for a team's REST API and print it once (it is stored only as a hash)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="what the token is for, e.g. 'CI deploys'")
        parser.add_argument("--team", required=True, help="the team's slug")
        parser.add_argument("--scopes", default="read", help="comma-separated: read, write (default: read)")
        parser.add_argument("--expires-in-days", type=int, default=None, help="default: never expires")

    def handle(self, *args: Any, **options: Any) -> None:
        team = Team.objects.filter(slug=options["team"]).first()
        if team is None:
            raise CommandError(f"No team with slug {options['team']!r}")
        owner = Membership.objects.select_related("user").get(team=team, role=Role.OWNER).user
        days = options["expires_in_days"]
        if days is not None and days <= 0:
            raise CommandError("--expires-in-days must be positive")
        try:
            token, secret = management_token_create(
                team=team,
                name=options["name"],
                scopes=[s.strip() for s in options["scopes"].split(",") if s.strip()],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                actor=owner,  # recorded as created on the owner's behalf, from the command line
            )
        except ServiceError as error:
            raise CommandError(error.message) from None
        self.stderr.write(
            f"Created token {token.prefix}… for {team.slug} ({', '.join(token.scopes)}). It is shown once:"
        )
        self.stdout.write(secret)
