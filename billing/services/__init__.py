"""Billing services, one module per job; this is their public surface (what views, tasks, the admin and other apps
call). Stripe calls (billing.stripe_client) always happen outside database transactions: read what is needed, call
Stripe, then write the result in a short transaction. Reads (the meter ledger's units, events due, a team's
subscription) are billing.selectors'.

- checkout: billing accounts, Stripe customers, Checkout and the Customer Portal
- plans: a team's plan over time (plan spans), operator assignment, the limits a plan gives the gateway
- webhooks: Stripe's events, stored once and processed from a fresh read (subscriptions, invoices)
- dunning: keys suspended for an overdue invoice or a used-up Free allowance, and restored
- metering: the meter ledger to Stripe's Billing Meter, and reconciliation
- teams: closing a team (its subscription first)
"""

from billing.services.checkout import account_ensure, checkout_start, customer_ensure, portal_start
from billing.services.dunning import FREE_ALLOWANCE_USED, PAYMENT_OVERDUE, enforce_all, enforce_team
from billing.services.metering import (
    INVOICE_CHECK_DAYS,
    MAX_SEND_ATTEMPTS,
    invoice_check,
    meter_record,
    meter_send,
    reconcile,
    reconcile_day,
)
from billing.services.plans import (
    HISTORY_START,
    plan_assign,
    plan_limits_everywhere,
    plan_limits_publish,
    plan_span_record,
)
from billing.services.teams import team_delete
from billing.services.webhooks import (
    event_process,
    event_receive,
    event_retry,
    invoice_sync,
    subscription_sync,
)

__all__ = [
    "FREE_ALLOWANCE_USED",
    "HISTORY_START",
    "INVOICE_CHECK_DAYS",
    "MAX_SEND_ATTEMPTS",
    "PAYMENT_OVERDUE",
    "account_ensure",
    "checkout_start",
    "customer_ensure",
    "enforce_all",
    "enforce_team",
    "event_process",
    "event_receive",
    "event_retry",
    "invoice_check",
    "invoice_sync",
    "meter_record",
    "meter_send",
    "plan_assign",
    "plan_limits_everywhere",
    "plan_limits_publish",
    "plan_span_record",
    "portal_start",
    "reconcile",
    "reconcile_day",
    "subscription_sync",
    "team_delete",
]
