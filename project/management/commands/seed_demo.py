from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Role, Team, User
from accounts.services import team_create, user_create
from billing import rating
from billing.models import Invoice, InvoiceLine, Plan, SubscriptionStatus
from billing.services import account_ensure, plan_limits_publish
from endpoints.models import Endpoint
from endpoints.services import api_key_create, endpoint_create, endpoint_update
from project.demo import DEMO_EMAIL, DEMO_ENDPOINTS, DEMO_NAME, DEMO_PASSWORD, DEMO_TEAM_NAME, DEMO_TEAMMATES


class Command(BaseCommand):
    help = "Create the demo login, its team and teammates (DEBUG only); running it again changes nothing."

    def _user(self, email: str, name: str) -> User:
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            user = user_create(email=email, password=DEMO_PASSWORD, name=name, email_verified=True)
            self.stdout.write(f"Created user {email}")
        return user

    def handle(self, *args: object, **options: object) -> None:
        if not settings.DEBUG:
            # Five logins with a password printed in the README must never exist on a real installation.
            raise CommandError(
                "seed_demo creates logins with a public password, so it runs only with DEBUG on (make run sets it). "
                "On a real installation, create the first user with `manage.py createsuperuser`."
            )
        self._seed()

    @transaction.atomic
    def _seed(self) -> None:
        owner = self._user(DEMO_EMAIL, DEMO_NAME)
        team = Team.objects.filter(memberships__user=owner, memberships__role=Role.OWNER, name=DEMO_TEAM_NAME).first()
        if team is None:
            team = team_create(name=DEMO_TEAM_NAME, owner=owner)
            self.stdout.write(f"Created team {team.name} (/t/{team.slug}/)")
        for email, name, role in DEMO_TEAMMATES:
            user = self._user(email, name)
            Membership.objects.get_or_create(team=team, user=user, defaults={"role": role})
        self.stdout.write(f"Demo team {team.name}: {team.memberships.count()} members")
        self._billing(team)  # first: the plan decides the rate limits the endpoints may set
        if not Endpoint.objects.filter(team=team).exists():
            self._endpoints(team, owner)

    def _billing(self, team: Team) -> None:
        """The team on Growth with three past monthly invoices: two paid, the last one's payment failed a day
        ago (so the overdue banner shows; re-seeding keeps it a day old rather than letting keys stop), and
        one open invoice with payment terms. Without Stripe they have no hosted pages; their amounts are the
        Growth fee, which is what the usage ledger rates those months at (the simulator's history is newer)."""
        account = account_ensure(team=team)
        if account.plan_id != "growth":  # on Growth since always (no plan history): its past invoices are Growth's
            account.plan = Plan.objects.get(slug="growth")
            plan_limits_publish(team=team, plan=account.plan)
            account.subscription_status = SubscriptionStatus.ACTIVE
            account.card_brand, account.card_last4, account.card_exp_month, account.card_exp_year = (
                "visa",
                "4242",
                12,
                2028,
            )
            account.save()
        now = timezone.now()
        start, _end = rating.period_of(now)
        growth = Plan.objects.get(slug="growth")
        for months_ago, status in ((3, "paid"), (2, "paid"), (1, "failed")):
            period_start = start
            for _ in range(months_ago):
                period_start = rating.previous_period(period_start)[0]
            period_end = rating.period_of(period_start)[1]
            invoice, created = Invoice.objects.get_or_create(
                stripe_id=f"in_demo_{team.pk}_{period_start:%Y%m}",
                defaults={
                    "team": team, "plan": growth, "number": f"ACME-{period_start:%Y%m}",
                    "status": "paid" if status == "paid" else "open",
                    "subtotal": 4900, "total": 4900, "amount_due": 4900,
                    "amount_paid": 4900 if status == "paid" else 0, "amount_remaining": 0 if status == "paid" else 4900,
                    "period_start": period_start, "period_end": period_end,
                    "created": period_end + timedelta(hours=1), "due_date": period_end + timedelta(hours=1),
                    "paid_at": period_end + timedelta(hours=2) if status == "paid" else None,
                    "attempt_count": 1 if status == "paid" else 2,
                },
            )  # fmt: skip
            if created:
                InvoiceLine.objects.create(invoice=invoice, stripe_id=f"il_demo_{invoice.pk}", quantity=1, amount=4900,
                                           description=f"Growth plan ({period_start:%b %Y})",
                                           period_start=period_start, period_end=period_end)  # fmt: skip
            if status == "failed" and invoice.status == "open":
                invoice.payment_failed_at = now - timedelta(days=1)
                invoice.payment_error = "The payment attempt failed (attempt 2): the card was declined."
                invoice.save(update_fields=["payment_failed_at", "payment_error"])
        Invoice.objects.get_or_create(
            stripe_id=f"in_demo_{team.pk}_setup",
            defaults={
                "team": team, "number": "ACME-SETUP", "status": "open", "subtotal": 25000, "total": 25000,
                "payment_error": "",
                "amount_due": 25000, "amount_remaining": 25000, "period_start": start, "period_end": start,
                "created": now - timedelta(days=2), "due_date": now + timedelta(days=12),
            },
        )  # fmt: skip
        self.stdout.write(f"Billing: {team.name} on Growth with {team.invoices.count()} invoices")

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
