from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Membership, Role, Team, User
from accounts.services import team_create, user_create
from endpoints.models import Endpoint
from endpoints.services import api_key_create, endpoint_create, endpoint_update
from project.demo import DEMO_EMAIL, DEMO_ENDPOINTS, DEMO_NAME, DEMO_PASSWORD, DEMO_TEAM_NAME, DEMO_TEAMMATES


class Command(BaseCommand):
    help = "Create the demo login, its team and teammates; running it again changes nothing."

    def _user(self, email: str, name: str) -> User:
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            user = user_create(email=email, password=DEMO_PASSWORD, name=name, email_verified=True)
            self.stdout.write(f"Created user {email}")
        return user

    @transaction.atomic
    def handle(self, *args: object, **options: object) -> None:
        owner = self._user(DEMO_EMAIL, DEMO_NAME)
        team = Team.objects.filter(memberships__user=owner, memberships__role=Role.OWNER, name=DEMO_TEAM_NAME).first()
        if team is None:
            team = team_create(name=DEMO_TEAM_NAME, owner=owner)
            self.stdout.write(f"Created team {team.name} (/t/{team.slug}/)")
        for email, name, role in DEMO_TEAMMATES:
            user = self._user(email, name)
            Membership.objects.get_or_create(team=team, user=user, defaults={"role": role})
        self.stdout.write(f"Demo team {team.name}: {team.memberships.count()} members")
        if not Endpoint.objects.filter(team=team).exists():
            self._endpoints(team, owner)

    def _endpoints(self, team: Team, owner: User) -> None:
        for spec in DEMO_ENDPOINTS:
            endpoint = endpoint_create(
                team=team,
                name=spec["name"],
                description=spec["description"],
                environment=spec["environment"],
                services=spec["services"],
                actor=owner,
            )
            if spec.get("security"):
                endpoint_update(endpoint=endpoint, actor=owner, **spec["security"])
            for key_name in spec["keys"]:
                api_key_create(endpoint=endpoint, name=key_name, actor=owner)
            self.stdout.write(f"Created endpoint {endpoint.name} with {len(spec['keys'])} key(s)")
