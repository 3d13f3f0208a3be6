"""The meter ledger: closed hours of billable units go to Stripe's Billing Meter once each, add up to the
rated units, survive retries and re-runs without double-billing, and are reconciled nightly."""

from datetime import UTC, datetime, timedelta

import pytest

from billing import rating, selectors, services, stripe_client, tasks
from billing.models import BillingAccount, MeterReport, MeterReportStatus, Plan, Reconciliation
from billing.tests.fixtures import aggregate, epoch, relays

pytestmark = pytest.mark.django_db


@pytest.fixture
def metered(team_a, usage, stripe_fake, stripe_prices):
    """Team A on Pay as you go since four hours ago, with usage in two closed hours (one of them LLM
    tokens worth a fractional number of units) and in the current, open hour."""
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    stripe_fake.add_customer(id="cus_team_a")
    BillingAccount.objects.create(team=team_a, plan=Plan.objects.get(slug="payg"), stripe_customer_id="cus_team_a",
                                  stripe_subscription_id="sub_a", subscription_status="active",
                                  metered_through=hour - timedelta(hours=4))  # fmt: skip
    first, second = hour - timedelta(hours=3, minutes=-10), hour - timedelta(hours=2, minutes=-20)
    relays(usage, 12, at=first)
    llm = {"key": usage.llm_key, "service": "llama-3.1-8b-instruct", "method": "chat.completions"}
    relays(usage, 3, at=second, input_tokens=1_234, output_tokens=567, **llm)  # 3 × 106.06 units: fractional
    relays(usage, 5, at=now - timedelta(minutes=1))  # the open hour: not reported yet
    aggregate()
    return {"now": now, "hours": [first.replace(minute=0), second.replace(minute=0)]}


def exact_units(team, start, end):
    return selectors.billable_units_total(team=team, start=start, end=end)


def test_closed_hours_are_recorded_once_and_add_up_to_the_rated_units(team_a, metered):
    assert services.meter_record(team=team_a, now=metered["now"]) == 2
    reports = list(MeterReport.objects.filter(team=team_a).order_by("hour"))
    assert [r.hour for r in reports] == metered["hours"]
    period_start, _end = rating.period_of(metered["hours"][0])
    through = metered["hours"][-1] + timedelta(hours=1)
    assert sum(r.units for r in reports) == rating.round_units(exact_units(team_a, period_start, through))
    for report in reports:  # each hour is the rounded cumulative total minus the previous one
        before = exact_units(team_a, period_start, report.hour)
        after = exact_units(team_a, period_start, report.hour + timedelta(hours=1))
        assert report.cumulative == after
        assert report.units == rating.round_units(after) - rating.round_units(before)
    assert reports[1].cumulative % 1 != 0  # the LLM hour's exact units are fractional
    assert BillingAccount.objects.get(team=team_a).metered_through == metered["now"].replace(
        minute=0, second=0, microsecond=0
    ) - (timedelta(hours=1) if metered["now"].minute < 5 else timedelta(0))
    assert services.meter_record(team=team_a, now=metered["now"]) == 0  # a re-run adds nothing


def test_reports_are_sent_as_meter_events_with_their_identifier_as_idempotency_key(team_a, metered, stripe_fake):
    services.meter_record(team=team_a, now=metered["now"])
    assert services.meter_send(team=team_a) == (2, 0)
    reports = list(MeterReport.objects.filter(team=team_a).order_by("hour"))
    assert [(c.method, c.path) for c in stripe_fake.calls] == [("POST", "/v1/billing/meter_events")] * 2
    for call, report in zip(stripe_fake.calls, reports, strict=True):
        assert report.identifier == f"testserver-{team_a.pk}-{report.hour:%Y%m%dT%H%M}"  # namespaced per installation
        assert call.idempotency_key == report.identifier
        assert call.params == {
            "event_name": "gatehouse_units",
            "payload[stripe_customer_id]": "cus_team_a",
            "payload[value]": str(report.units),
            "timestamp": str(epoch(report.hour)),
            "identifier": report.identifier,
        }
        assert report.status == MeterReportStatus.SENT
    stripe_fake.reset_calls()
    assert services.meter_send(team=team_a) == (0, 0)
    assert stripe_fake.calls == []


def test_a_run_that_died_after_sending_never_bills_twice(team_a, metered, stripe_fake):
    services.meter_record(team=team_a, now=metered["now"])
    services.meter_send(team=team_a)
    MeterReport.objects.update(status=MeterReportStatus.PENDING)  # as if the run died before marking them sent
    assert services.meter_send(team=team_a) == (2, 0)
    assert len(stripe_fake.meter_events) == 2  # Stripe replayed the idempotent requests: still two events


def test_an_outage_ends_the_run_and_the_next_run_sends_everything(team_a, metered, stripe_fake):
    services.meter_record(team=team_a, now=metered["now"])
    stripe_fake.fail_next("POST", "/v1/billing/meter_events", status=500)  # one blip: retried at once
    stripe_fake.fail_next("POST", "/v1/billing/meter_events", status=500, times=6)  # then an outage
    assert services.meter_send(team=team_a) == (0, 2)
    first, second = MeterReport.objects.filter(team=team_a).order_by("hour")
    assert [(r.status, r.attempts) for r in (first, second)] == [(MeterReportStatus.FAILED, 1)] * 2
    assert first.error
    calls = stripe_fake.calls_to("POST", "/v1/billing/meter_events")
    assert len(calls) == 6  # each row: the first try and stripe-python's two retries, same idempotency key
    assert {c.idempotency_key for c in calls[:3]} == {first.identifier}
    assert services.meter_send(team=team_a) == (2, 0)  # Stripe is back
    assert len(stripe_fake.meter_events) == 2


def test_a_row_stripe_refuses_does_not_hold_back_the_others(team_a, metered, stripe_fake):
    services.meter_record(team=team_a, now=metered["now"])
    stripe_fake.fail_next("POST", "/v1/billing/meter_events", status=400, body={"error": {
        "type": "invalid_request_error", "message": "No such customer: 'cus_team_a'"}})  # fmt: skip
    assert services.meter_send(team=team_a) == (1, 1)
    first, second = MeterReport.objects.filter(team=team_a).order_by("hour")
    assert (first.status, first.attempts) == (MeterReportStatus.FAILED, services.MAX_SEND_ATTEMPTS)  # for good
    assert "No such customer" in first.error
    assert second.status == MeterReportStatus.SENT
    stripe_fake.reset_calls()
    assert services.meter_send(team=team_a) == (0, 0)  # not retried: Stripe would refuse it again
    assert stripe_fake.calls == []


def test_an_identifier_stripe_already_holds_counts_as_sent(team_a, metered, stripe_fake):
    """After the 24-hour idempotency window Stripe answers a resent identifier with a 400 and no error code."""
    services.meter_record(team=team_a, now=metered["now"])
    first = MeterReport.objects.filter(team=team_a).order_by("hour").first()
    stripe_client.meter_event_create(customer="cus_team_a", value=first.units, timestamp=first.hour,
                                     identifier=first.identifier)  # fmt: skip
    stripe_fake._idempotent.clear()  # the idempotency key has expired at Stripe; the identifier has not
    assert services.meter_send(team=team_a) == (2, 0)
    assert set(MeterReport.objects.filter(team=team_a).values_list("status", flat=True)) == {MeterReportStatus.SENT}
    assert len(stripe_fake.meter_events) == 2  # counted once


def test_rows_older_than_stripe_accepts_are_set_aside_not_sent(team_a, metered, stripe_fake):
    services.meter_record(team=team_a, now=metered["now"])
    later = metered["now"] + timedelta(days=35)  # both hours are past Stripe's 35-day window by then
    assert services.meter_send(team=team_a, now=later) == (0, 0)
    assert stripe_fake.calls == []
    assert set(MeterReport.objects.filter(team=team_a).values_list("status", flat=True)) == {MeterReportStatus.EXPIRED}


def test_the_hourly_task_records_and_sends_for_every_metered_team(team_a, metered, stripe_fake, settings):
    totals = tasks.report_usage()
    assert totals == {"recorded": 2, "sent": 2, "failed": 0}
    settings.STRIPE_SECRET_KEY = ""  # payments not connected: nothing to do, nothing sent
    stripe_fake.reset_calls()
    assert tasks.report_usage() == {"recorded": 0, "sent": 0, "failed": 0}
    assert stripe_fake.calls == []


def test_teams_without_a_subscription_are_not_metered(team_a, team_b, usage, stripe_fake):
    relays(usage, 3, at=datetime.now(UTC) - timedelta(hours=2))
    aggregate()
    assert services.meter_record(team=team_a) == 0
    assert selectors.metered_teams() == []


# --- reconciliation -------------------------------------------------------------------------------


def test_reconciliation_matches_and_flags_late_usage_and_stripe_differences(
    team_a, metered, usage, stripe_fake, client_for, admin_user
):
    # Stripe sums whole UTC days only: reconcile once every hour through the next midnight is reported.
    days = [datetime.combine(d, datetime.min.time(), tzinfo=UTC) for d in sorted({h.date() for h in metered["hours"]})]
    assert services.reconcile_day(team=team_a, day=days[0]) is None  # not fully reported yet
    services.meter_record(team=team_a, now=days[-1] + timedelta(days=1, minutes=10))
    services.meter_send(team=team_a)
    rows = [services.reconcile_day(team=team_a, day=day) for day in days]
    assert all(row.matches for row in rows), [(r.ours, r.reported, r.stripe, r.error) for r in rows]
    summaries = stripe_fake.calls_to("GET", "/v1/billing/meters/mtr_test_gatehouse/event_summaries")
    assert summaries[0].params["customer"] == "cus_team_a"
    assert summaries[0].params["value_grouping_window"] == "day"
    assert int(summaries[0].params["start_time"]) % 86_400 == int(summaries[0].params["end_time"]) % 86_400 == 0
    assert client_for(admin_user).get("/operator/billing/").content.decode().count("usage arrived after") == 0

    # Relays arrive late for an hour already reported: our units grow, what Stripe has does not.
    relays(usage, 4, at=metered["hours"][0] + timedelta(minutes=30))
    aggregate()
    late_day = datetime.combine(metered["hours"][0].date(), datetime.min.time(), tzinfo=UTC)
    row = services.reconcile_day(team=team_a, day=late_day)
    assert not row.matches
    assert row.ours > row.reported == row.stripe
    page = client_for(admin_user).get("/operator/billing/").content.decode()
    assert "usage arrived after the hour was reported" in page

    # Stripe counting something we did not send is flagged too.
    stripe_client.meter_event_create(customer="cus_team_a", value=7, timestamp=metered["hours"][-1],
                                     identifier="someone-else")  # fmt: skip
    last_day = datetime.combine(metered["hours"][-1].date(), datetime.min.time(), tzinfo=UTC)
    row = services.reconcile_day(team=team_a, day=last_day)
    assert row.stripe == row.reported + 7
    assert not row.matches
    assert Reconciliation.objects.filter(team=team_a).count() == len(days)


def test_reconciliation_without_a_meter_id_records_why(team_a, metered, stripe_fake, settings):
    settings.STRIPE_METER_ID = ""
    day = metered["hours"][0].replace(hour=0)
    services.meter_record(team=team_a, now=day + timedelta(days=1, minutes=10))
    row = services.reconcile_day(team=team_a, day=metered["hours"][0])
    assert row.stripe is None
    assert "STRIPE_METER_ID" in row.error
    assert not row.matches


def test_the_operator_sees_rows_stripe_refused_or_that_expired(team_a, metered, stripe_fake, client_for, admin_user):
    services.meter_record(team=team_a, now=metered["now"])
    services.meter_send(team=team_a, now=metered["now"] + timedelta(days=35))
    page = client_for(admin_user).get("/operator/billing/").content.decode()
    assert page.count("Too old for Stripe&#x27;s meter") == 2
    assert "settle it by hand" in page


def test_a_customer_without_an_owner_gets_no_empty_email(team_a, owner_a, stripe_fake):
    from accounts.models import Membership

    Membership.objects.filter(team=team_a).delete()  # a closed team keeps no owner
    services.customer_ensure(team=team_a)
    (call,) = stripe_fake.calls_to("POST", "/v1/customers")
    assert "email" not in call.params
