from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import User
from accounts.services import user_create
from project.demo import DEMO_EMAIL, DEMO_NAME, DEMO_PASSWORD


class Command(BaseCommand):
    help = "Create the demo login and its data; running it again changes nothing."

    @transaction.atomic
    def handle(self, *args: object, **options: object) -> None:
        user = User.objects.filter(email__iexact=DEMO_EMAIL).first()
        if user is None:
            user = user_create(email=DEMO_EMAIL, password=DEMO_PASSWORD, name=DEMO_NAME, email_verified=True)
            self.stdout.write(f"Created demo user {user.email}")
        else:
            self.stdout.write(f"Demo user {user.email} already exists")
