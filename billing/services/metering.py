"""The meter ledger: closed usage hours to Stripe's Billing Meter, once each, and their reconciliation with
Stripe's meter and with the invoices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Team
from billing import rating, selectors, stripe_client
from billing.models import (
    BillingAccount,
    Invoice,
    MeterReport,
    MeterReportStatus,
    Reconciliation,
)

logger = logging.getLogger(__name__)

# An hour is reported once compaction has written it: closed hours are compacted at once, every 15 s.
SETTLE = timedelta(minutes=5)
# Stripe finalizes a subscription's invoice about an hour after its period ends; usage reported until then is on it.
STRIPE_FINALIZATION_GRACE = timedelta(hours=1)
MAX_SEND_ATTEMPTS = 8
# Stripe accepts meter events timestamped within the past 35 days (and at most 5 minutes ahead). A row older than
# this margin is never sent — Stripe would refuse it — but set aside, visible to the operator.
METER_EVENT_MAX_AGE = timedelta(days=35) - timedelta(hours=1)
# Consecutive failures Stripe may answer again (outage, rate limit) that end a run: the rest waits for the next one.
MAX_TRANSIENT_FAILURES = 2


def _open_spans(*, team: Team, first: datetime, last: datetime, now: datetime) -> list[selectors.Span]:
    """The paid segments the ledger still writes to: those with hours at or after `first`, and the one that ended
    with the last period while Stripe has not finalized its invoice (late records for it still count). A segment a
    plan switch ended is closed: Stripe billed it at the switch."""
    boundary = rating.period_of(first)[0]
    spans = selectors.paid_segments(team=team, start=min(first, boundary - timedelta(seconds=1)), end=max(last, first))
    finalized = Invoice.objects.filter(team=team, period_end=boundary, finalized_at__isnull=False).exists()
    grace = now < boundary + STRIPE_FINALIZATION_GRACE and not finalized
    return [span for span in spans if span.usage_end > first or (span.end == boundary and grace)]


def meter_record(*, team: Team, now: datetime | None = None) -> int:
    """Add the team's closed, unreported hours on paid plans to the meter ledger (a row per hour with usage). Each
    row's units are the rounded cumulative units of its segment through that hour minus what the segment's earlier
    rows carry, so a segment's rows add up to exactly its rated units. Records that arrive late for hours already
    reported are carried when the next hour closes by the segment's next row (or one for that hour) — and in the
    hour after a period's end, every run, by a row of their own a second after the closed segment's last one, while
    Stripe has not finalized its invoice. Hours on Free (before a subscription, after it ends) are never metered.
    Returns how many rows were added."""
    now = now or timezone.now()
    account = selectors.account_of(team=team)
    if account is None or not account.stripe_customer_id or account.metered_through is None:
        return 0
    last = max((now - SETTLE).replace(minute=0, second=0, microsecond=0), account.metered_through)
    first = account.metered_through
    closing = first == rating.period_of(first)[0] and now < first + STRIPE_FINALIZATION_GRACE
    if last == first and not closing:
        return 0  # no hour closed since the last run; late records wait for the next one (a period's end, not)
    spans = _open_spans(team=team, first=first, last=last, now=now)
    if not spans:
        if last > first:
            BillingAccount.objects.filter(pk=account.pk, metered_through=first).update(metered_through=last)
        return 0
    rows: dict[datetime, list[dict[str, Any]]] = {}
    for span in spans:  # only the paid segments' hours: a long spell on Free in between is never read
        low, high = max(span.usage_start, first), min(span.usage_end, last)
        if low < high:
            rows |= selectors.usage_rows_by_hour(team=team, start=low, end=high)
    services = selectors.service_catalog()
    catch_up = {  # each segment's exact units before `first` as the rollups have them now (late records included)
        span.start: selectors.billable_units_total(
            team=team, start=span.usage_start, end=min(first, span.usage_end), services=services
        )
        for span in spans
    }
    added = []
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().get(pk=account.pk)
        if locked.metered_through != first:
            return 0  # another run recorded these hours meanwhile
        for span in spans:
            previous = MeterReport.objects.filter(team=team, segment_start=span.start).order_by("-timestamp").first()
            reported = previous.cumulative if previous else Decimal(0)
            cumulative = catch_up[span.start]
            closed = list(_hours(max(span.usage_start, first), min(span.usage_end, last)))
            stamps = [max(hour, span.start) for hour in closed if hour in rows]
            # Late records, and no row to carry them:
            if not stamps and rating.round_units(cumulative) > rating.round_units(reported):
                if closed:
                    stamps = [max(closed[-1], span.start)]
                else:
                    stamps = [previous.timestamp + timedelta(seconds=1) if previous else span.start]
            for stamp in stamps:
                hour = stamp.replace(minute=0, second=0, microsecond=0)
                cumulative += sum(rating.exact_units_of(rows.get(hour, []), services).values(), Decimal(0))
                units = rating.round_units(cumulative) - rating.round_units(reported)
                added.append(
                    MeterReport(
                        team=team,
                        hour=hour,
                        timestamp=stamp,
                        segment_start=span.start,
                        cumulative=cumulative,
                        units=units,
                        identifier=_meter_identifier(team, stamp),
                        stripe_customer_id=locked.stripe_customer_id,
                        status=MeterReportStatus.PENDING if units > 0 else MeterReportStatus.SKIPPED,
                    )
                )
                reported = cumulative
        MeterReport.objects.bulk_create(added)
        locked.metered_through = last
        locked.save(update_fields=["metered_through"])
    return len(added)


def _hours(start: datetime, end: datetime) -> list[datetime]:
    hours = []
    while start < end:
        hours.append(start)
        start += timedelta(hours=1)
    return hours


def _meter_identifier(team: Team, timestamp: datetime) -> str:
    stamp = f"{timestamp:%Y%m%dT%H%M}" + (f"{timestamp:%S}" if timestamp.second else "")
    return stripe_client.namespaced(f"{team.pk}-{stamp}")


def meter_send(*, team: Team, now: datetime | None = None) -> tuple[int, int]:
    """Send the team's unsent ledger rows to Stripe, oldest first (each once: the identifier is the idempotency
    key). Returns (sent, failed).

    Stripe sums meter events by timestamp, so their order does not matter and one row never holds back another:
    a row Stripe refuses as it stands (a 4xx) is marked failed for good, for the operator, and the others go on;
    a row older than Stripe accepts is never sent but set aside (expired); only repeated answers worth retrying
    (no answer, 409, 429, 5xx: Stripe is struggling) end the run, and the next one picks up from there."""
    now = now or timezone.now()
    sent = failed = transient_in_a_row = 0
    MeterReport.objects.filter(
        team=team,
        status__in=(MeterReportStatus.PENDING, MeterReportStatus.FAILED),
        timestamp__lt=now - METER_EVENT_MAX_AGE,
    ).update(
        status=MeterReportStatus.EXPIRED, error="Older than the 35 days Stripe's meter accepts: settle it by hand."
    )
    pending = MeterReport.objects.filter(
        team=team, status__in=(MeterReportStatus.PENDING, MeterReportStatus.FAILED), attempts__lt=MAX_SEND_ATTEMPTS
    ).order_by("hour")
    for report in pending:
        MeterReport.objects.filter(pk=report.pk).update(attempts=F("attempts") + 1)
        try:
            stripe_client.meter_event_create(
                customer=report.stripe_customer_id, value=report.units, timestamp=report.timestamp,
                identifier=report.identifier,
            )  # fmt: skip
        except stripe_client.StripeCallError as error:
            if error.identifier_already_used:  # Stripe has it already (sent by a run that died before marking it)
                MeterReport.objects.filter(pk=report.pk).update(status=MeterReportStatus.SENT, sent_at=timezone.now())
                sent += 1
                transient_in_a_row = 0
                continue
            failed += 1
            if error.transient:
                MeterReport.objects.filter(pk=report.pk).update(status=MeterReportStatus.FAILED, error=str(error)[:500])
                transient_in_a_row += 1
                if transient_in_a_row >= MAX_TRANSIENT_FAILURES:
                    break
                continue
            MeterReport.objects.filter(pk=report.pk).update(
                status=MeterReportStatus.FAILED, attempts=MAX_SEND_ATTEMPTS, error=str(error)[:500]
            )
            transient_in_a_row = 0
            continue
        MeterReport.objects.filter(pk=report.pk).update(status=MeterReportStatus.SENT, sent_at=timezone.now(), error="")
        sent += 1
        transient_in_a_row = 0
    return sent, failed


@dataclass
class ReconcileResult:
    checked: int = 0
    differences: int = 0
    missed_invoices: int = 0


def reconcile_day(*, team: Team, day: datetime) -> Reconciliation | None:
    """Compare one whole UTC day of the team's billable units — ours from the rollups now, what the ledger sent, and
    what Stripe's meter summed — and store the result (the operator page lists differences). None while the day
    is not fully reported yet: Stripe sums whole days only (its day windows start and end at UTC midnight)."""
    start = day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    account = selectors.account_of(team=team)
    if account is None or account.metered_through is None or account.metered_through < end:
        return None
    ours = sum(units for _span, units in selectors.metered_units(team=team, start=start, end=end))
    reported = selectors.units_sent(team=team, timestamp__gte=start, timestamp__lt=end)
    stripe_total, error = None, ""
    try:
        if account is None or not account.stripe_customer_id:
            raise stripe_client.NotConfiguredError("The team has no Stripe customer.")
        summaries = stripe_client.meter_event_summaries(customer=account.stripe_customer_id, start=start, end=end)
        stripe_total = sum(int(Decimal(str(s.get("aggregated_value") or 0))) for s in summaries)
    except (stripe_client.StripeCallError, stripe_client.NotConfiguredError) as failure:
        error = str(failure)[:300]
    result, _created = Reconciliation.objects.update_or_create(
        team=team,
        day=start.date(),
        defaults={"ours": ours, "reported": reported, "stripe": stripe_total, "error": error},
    )
    return result


def invoice_check(*, invoice: Invoice) -> int | None:
    """How many units of the usage a finalized invoice bills did not reach Stripe's meter in time — before the
    invoice finalized, or for a segment a plan switch ended, before the switch (when Stripe billed that segment) —
    stored on the invoice for the operator (and None for an invoice that bills no usage period or is a draft)."""
    if invoice.finalized_at is None or invoice.period_start >= invoice.period_end:
        return None
    missed = 0
    for span, units in selectors.metered_units(team=invoice.team, start=invoice.period_start, end=invoice.period_end):
        closes = invoice.finalized_at if span.end >= invoice.period_end else min(span.end, invoice.finalized_at)
        billed = selectors.units_sent(
            team=invoice.team,
            segment_start=span.start,
            hour__gte=max(invoice.period_start, span.usage_start),
            hour__lt=min(invoice.period_end, span.usage_end),
            sent_at__lte=closes,
        )
        missed += max(units - billed, 0)
    Invoice.objects.filter(pk=invoice.pk).update(missed_units=missed, missed_checked_at=timezone.now())
    if missed:
        logger.warning("usage missed invoice %s of team %s", invoice.stripe_id, invoice.team_id,
                       extra={"missed_units": missed})  # fmt: skip
    return missed


# Records are accepted up to 35 days late, so an invoice is checked again every night for that long.
INVOICE_CHECK_DAYS = 36


def reconcile(*, day: datetime | None = None) -> ReconcileResult:
    """Reconcile yesterday (or `day`) for every metered team, and check that the usage of every invoice finalized in
    the last INVOICE_CHECK_DAYS reached Stripe before it finalized."""
    day = day or timezone.now() - timedelta(days=1)
    result = ReconcileResult()
    for invoice in selectors.usage_invoices_finalized_since(timezone.now() - timedelta(days=INVOICE_CHECK_DAYS)):
        try:
            result.missed_invoices += 1 if invoice_check(invoice=invoice) else 0
        except Exception:
            logger.exception("invoice check failed for %s", invoice.stripe_id)
    for team in selectors.metered_teams():
        row = reconcile_day(team=team, day=day)
        if row is None:
            continue
        result.checked += 1
        result.differences += 0 if row.matches else 1
        if not row.matches:
            logger.warning("meter reconciliation differs for team %s on %s", team.pk, row.day,
                           extra={"ours": row.ours, "reported": row.reported, "stripe": row.stripe})  # fmt: skip
    return result
