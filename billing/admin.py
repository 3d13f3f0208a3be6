"""Operator admin: plans and their price versions are data the operator edits; Stripe mirrors are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from accounts.models import User
from billing.models import (
    BillingAccount,
    Invoice,
    InvoiceLine,
    MeterReport,
    Plan,
    PlanSpan,
    PlanVersion,
    Reconciliation,
    StripeEvent,
)


class PlanVersionInline(admin.TabularInline):
    model = PlanVersion
    extra = 0
    fields = ("effective_from", "team", "monthly_fee", "included_units", "tiers", "stripe_fee_price_id",
              "stripe_usage_price_id")  # fmt: skip
    raw_id_fields = ("team",)
    ordering = ("team", "-effective_from")


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "self_serve", "requires_payment", "hard_cap", "invoiced", "rate_limit_rps",
                    "sort_order")  # fmt: skip
    inlines = [PlanVersionInline]

    def save_model(self, request: HttpRequest, obj: Plan, form: Any, change: bool) -> None:
        """A new rate limit reaches every team on the plan (and, for Free, teams on no plan) through the feed."""
        from billing.services import plan_limits_everywhere

        super().save_model(request, obj, form, change)
        if "rate_limit_rps" in form.changed_data:
            plan_limits_everywhere(plan=obj)


@admin.register(PlanVersion)
class PlanVersionAdmin(admin.ModelAdmin):
    """A new price is a new version from a future date: past periods keep the version they started with."""

    list_display = ("plan", "team", "effective_from", "monthly_fee", "included_units", "stripe_usage_price_id")
    list_filter = ("plan",)
    raw_id_fields = ("team",)
    search_fields = ("team__name", "stripe_fee_price_id", "stripe_usage_price_id")


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(BillingAccount)
class BillingAccountAdmin(admin.ModelAdmin):
    list_display = ("team", "plan", "subscription_status", "stripe_customer_id", "card_last4", "metered_through")
    list_filter = ("plan", "subscription_status")
    search_fields = ("team__name", "stripe_customer_id", "stripe_subscription_id")
    raw_id_fields = ("team",)
    readonly_fields = ("subscription_synced_at", "metered_through", "created_at")

    def save_model(self, request: HttpRequest, obj: BillingAccount, form: Any, change: bool) -> None:
        """An operator's plan assignment (Enterprise, say) starts a plan segment now, like a switch in the Portal."""
        from billing.services import plan_assign

        plan = obj.plan
        if change and "plan" in form.changed_data:
            obj.plan = BillingAccount.objects.select_related("plan").get(pk=obj.pk).plan
            super().save_model(request, obj, form, change)
            actor = request.user if isinstance(request.user, User) else None  # the admin signs staff in: always one
            plan_assign(team=obj.team, plan=plan, actor=actor, source="admin")
            return
        super().save_model(request, obj, form, change)


@admin.register(PlanSpan)
class PlanSpanAdmin(admin.ModelAdmin):
    list_display = ("team", "plan", "starts_at", "subscription_id", "source")
    list_filter = ("plan",)
    search_fields = ("team__name", "subscription_id", "source")
    raw_id_fields = ("team",)
    readonly_fields = ("created_at",)


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    readonly_fields = ("stripe_id", "description", "amount", "quantity", "period_start", "period_end", "price_id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(ReadOnly):
    list_display = ("__str__", "team", "status", "total", "period_start", "due_date", "paid_at", "payment_failed_at",
                    "missed_units")  # fmt: skip
    list_filter = ("status",)
    search_fields = ("stripe_id", "number", "team__name")
    inlines = [InvoiceLineInline]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnly):
    list_display = ("stripe_id", "type", "status", "attempts", "received_at", "processed_at")
    list_filter = ("status", "type")
    search_fields = ("stripe_id",)


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnly):
    list_display = ("team", "timestamp", "segment_start", "units", "status", "attempts", "sent_at")
    list_filter = ("status",)


@admin.register(Reconciliation)
class ReconciliationAdmin(ReadOnly):
    list_display = ("team", "day", "ours", "reported", "stripe", "error")
