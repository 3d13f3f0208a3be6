import json
import os
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Role, Team, User
from accounts.services import team_create, user_create
from alerts import services as budgets
from alerts.health import alert_rule_create
from alerts.models import AlertRule, Budget
from analytics import aggregation
from billing import rating
from billing.models import Invoice, InvoiceLine, Plan, SubscriptionStatus
from billing.services import account_ensure, plan_limits_publish
from endpoints.models import ApiKey, Endpoint
from endpoints.services import (
    api_key_create,
    api_key_update,
    endpoint_create,
    endpoint_update,
    gateway_credential_create,
    gateway_credentials_revoke,
)
from project.demo import DEMO_EMAIL, DEMO_ENDPOINTS, DEMO_NAME, DEMO_PASSWORD, DEMO_TEAM_NAME, DEMO_TEAMMATES
from project.errors import ServiceError
from webhooks.models import WebhookEndpoint
from webhooks.services import webhook_endpoint_create, webhook_endpoint_rotate_secret, webhook_endpoint_update

# The batch-jobs key's daily cap: at the simulator's default rates (5 relays/s live, 60/min backfill) even a key that
# draws most of the traffic uses under ~13 million units a day, so the cap shows on the Budgets page and stops nothing.
BATCH_JOBS_KEY = "batch-jobs"
BATCH_JOBS_DAILY_CAP = 20_000_000
# Health alert rules on two endpoints: the simulator's upstream incidents (25 % errors, timeouts) set them off. At
# least 100 relays: in the few dozen of a restart's first minutes one failed relay is already over 2 %.
DEMO_ALERT_RULES: list[dict[str, Any]] = [
    {"name": "Wallet backend error rate", "endpoint": "Wallet backend", "metric": AlertRule.Metric.ERROR_RATE,
     "threshold": 2, "window_minutes": 5, "min_relays": 100},
    {"name": "Assistant latency", "endpoint": "AI assistant", "metric": AlertRule.Metric.P95_LATENCY,
     "threshold": 8000, "window_minutes": 10, "min_relays": 100},
]  # fmt: skip
# A team budget the team has used ~85 % of: the page shows it between its 80 and 100 % thresholds, 50 and 80 fired.
MONTHLY_BUDGET_NAME = "Monthly units"
MONTHLY_BUDGET_THRESHOLDS = [50, 80, 100]
MONTHLY_BUDGET_USED_SHARE = Decimal("0.85")
WEBHOOK_DESCRIPTION = "Demo receiver (make run)"
RELAY_CREDENTIAL = "demo-relay-"  # + a timestamp: the gateway credential of the relay `make run` starts


class Command(BaseCommand):
    help = "Create the demo login, its team and teammates (DEBUG only); running it again changes nothing."

    def _user(self, email: str, name: str) -> User:
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            user = user_create(email=email, password=DEMO_PASSWORD, name=name, email_verified=True)
            self.stdout.write(f"Created user {email}")
        return user

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--webhook-url", help="a webhook endpoint of the team's, for every event, sends here")
        parser.add_argument(
            "--webhook-secret-file", type=Path, help="where its signing secret is written (mode 0600), for the receiver"
        )
        parser.add_argument(
            "--key-secrets-file",
            type=Path,
            help="when the demo keys are created, their secrets are written here (mode 0600) for the simulator",
        )
        parser.add_argument(
            "--relay-credential-file",
            type=Path,
            help="a fresh gateway credential for the demo relay (earlier ones revoked): its secret is written here",
        )
        parser.add_argument(
            "--after-traffic",
            action="store_true",
            help="the simulator's backfill is in: bring the ledger up to date, then add the monthly budget from it",
        )

    def handle(self, *args: object, **options: Any) -> None:
        if not settings.DEBUG:
            # Five logins with a password printed in the README must never exist on a real installation.
            raise CommandError(
                "seed_demo creates logins with a public password, so it runs only with DEBUG on (make run sets it). "
                "On a real installation, create the first user with `manage.py createsuperuser`."
            )
        url, secret_file = options.get("webhook_url"), options.get("webhook_secret_file")
        if bool(url) != bool(secret_file):
            raise CommandError("--webhook-url and --webhook-secret-file go together.")
        self.key_secrets: dict[str, dict[str, str]] = {}
        team, owner = self._seed()
        if self.key_secrets and options.get("key_secrets_file"):
            _write_private(Path(options["key_secrets_file"]), json.dumps(self.key_secrets, indent=1) + "\n")
        if options.get("relay_credential_file"):
            gateway_credentials_revoke(name_prefix=RELAY_CREDENTIAL)
            name = f"{RELAY_CREDENTIAL}{timezone.now():%Y%m%dT%H%M%S.%fZ}"  # names stay taken once revoked
            credential, relay_secret = gateway_credential_create(name=name)
            _write_private(Path(options["relay_credential_file"]), relay_secret)
            self.stdout.write(f"Gateway credential {credential.prefix}… for the demo relay")
        if url and secret_file:  # first: the events the steps below emit reach the receiver
            self._webhook(team, owner, url, Path(secret_file))
        self._alerts(team, owner)
        if options.get("after_traffic"):
            self._settle_ledger()
        self._monthly_budget(team, owner)

    @transaction.atomic
    def _seed(self) -> tuple[Team, User]:
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
        return team, owner

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
                key, secret = api_key_create(endpoint=endpoint, name=key_name, actor=owner)
                # Shown once: kept (in a file only its owner reads) for the simulator's requests and make run's curl.
                self.key_secrets[key.key_id] = {"name": key_name, "endpoint": endpoint.name, "secret": secret}
            self.stdout.write(f"Created endpoint {endpoint.name} with {len(spec['keys'])} key(s)")

    def _webhook(self, team: Team, owner: User, url: str, secret_file: Path) -> None:
        """The demo receiver's endpoint, for every event type, and its secret in the file the receiver reads. A new
        data directory (no file, or another secret in it) gets a new secret: rotated, as a user would."""
        endpoint = WebhookEndpoint.objects.filter(team=team, description=WEBHOOK_DESCRIPTION).first()
        try:
            if endpoint is None:
                endpoint, secret = webhook_endpoint_create(
                    team=team, url=url, event_types=[], description=WEBHOOK_DESCRIPTION, actor=owner
                )
                self.stdout.write(f"Created webhook endpoint {url} (every event type)")
            else:
                if endpoint.url != url:  # the receiver's port may differ from the last run's
                    webhook_endpoint_update(endpoint=endpoint, actor=owner, url=url)
                    self.stdout.write(f"Webhook endpoint moved to {url}")
                written = secret_file.read_text().strip() if secret_file.exists() else ""
                if written == endpoint.secret:
                    return
                endpoint, secret = webhook_endpoint_rotate_secret(endpoint=endpoint, actor=owner)
                self.stdout.write(f"Rotated the secret of webhook endpoint {url} (it was not in {secret_file})")
        except ServiceError as error:  # the demo goes on without it
            self.stderr.write(
                f"No webhook endpoint for {url}: {error.message} (make run allows loopback receivers: "
                "OUTGOING_ALLOW_LOOPBACK=1)"
            )
            return
        _write_private(secret_file, secret + "\n")

    @transaction.atomic
    def _alerts(self, team: Team, owner: User) -> None:
        """A daily cap on the batch-jobs key (it becomes a cap budget by itself) and two health alert rules."""
        key = ApiKey.objects.filter(team=team, name=BATCH_JOBS_KEY).usable().first()
        if key is not None and key.daily_unit_cap is None:
            api_key_update(key=key, actor=owner, daily_unit_cap=BATCH_JOBS_DAILY_CAP)
            self.stdout.write(f"Daily cap of {BATCH_JOBS_DAILY_CAP:,} units on key {key.name}")
        existing = set(AlertRule.objects.filter(team=team).values_list("name", flat=True))
        for spec in DEMO_ALERT_RULES:
            endpoint = Endpoint.objects.filter(team=team, name=spec["endpoint"], deleted_at=None).first()
            if spec["name"] in existing or endpoint is None:
                continue
            alert_rule_create(team=team, actor=owner, **(spec | {"endpoint": endpoint}))
            self.stdout.write(f"Created alert rule {spec['name']}")

    def _settle_ledger(self) -> None:
        """Aggregate what is pending and compact the hours and days, as the worker and beat do (safe beside them):
        the budget below then reads the whole backfill, not the part the worker has got to."""
        run = aggregation.aggregate_pending(time_budget_seconds=120)
        aggregation.compact_rollups()
        if run.records:
            self.stdout.write(f"Aggregated {run.records:,} pending records")

    def _monthly_budget(self, team: Team, owner: User) -> None:
        """The team budget, sized from this month's usage so that ~85 % of it is used (3 significant figures)."""
        fields: dict[str, Any] = {"scope": Budget.Scope.TEAM, "measure": Budget.Measure.UNITS,
                                  "period": Budget.Period.MONTH}  # fmt: skip
        if Budget.objects.filter(team=team, scope=Budget.Scope.TEAM, origin=Budget.Origin.BUDGET).exists():
            return  # ours, or one the team made (or renamed ours to): either way the page has its team budget
        # What a team budget would count (billing's billable units), read the way every budget reads it.
        provisional = Budget(team=team, amount=Decimal(1), **fields)
        used = budgets.standings([provisional])[0].used
        if used <= 0:
            self.stdout.write(
                f"Budget {MONTHLY_BUDGET_NAME}: no usage this month yet; it is created after the simulator's backfill"
            )
            return
        budget = budgets.budget_create(
            team=team,
            actor=owner,
            name=MONTHLY_BUDGET_NAME,
            amount=_three_figures(used / MONTHLY_BUDGET_USED_SHARE),
            thresholds=MONTHLY_BUDGET_THRESHOLDS,
            action=Budget.Action.ALERT,
            forecast=True,
            **fields,
        )
        self.stdout.write(
            f"Created budget {budget.name}: {budget.amount:,.0f} units, {used / budget.amount:.0%} used this month"
        )


def _three_figures(value: Decimal) -> Decimal:
    """value rounded to 3 significant figures, and to whole units at least (12,345,678 → 12,300,000)."""
    exponent = max(value.adjusted() - 2, 0)
    return value.scaleb(-exponent).quantize(Decimal(1), rounding=ROUND_HALF_UP).scaleb(exponent)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, whole or not at all (a reader never sees half a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    partial.chmod(0o600)  # it may have existed with another mode
    partial.replace(path)
