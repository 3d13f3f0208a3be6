"""Billing pages (owners, admins, finance), the Stripe webhook and the operator's billing page."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.forms import DeleteTeamForm
from accounts.models import Team
from accounts.permissions import allows, team_view
from billing import selectors, services, stripe_client
from billing.forms import InvoiceFilterForm
from billing.models import (
    EventStatus,
    Invoice,
    InvoiceLine,
    MeterReport,
    MeterReportStatus,
    Plan,
    Reconciliation,
    StripeEvent,
)
from project.csv import csv_response
from project.errors import ServiceError
from project.http import staff_only
from project.params import parse_int

INVOICE_PAGE_SIZE = 25
CSV_LIMIT = 10_000
INVOICE_COLUMNS = [
    "number",
    "status",
    "period_start",
    "period_end",
    "created",
    "due_date",
    "paid_at",
    "currency",
    "subtotal",
    "tax",
    "total",
    "amount_paid",
    "amount_remaining",
    "stripe_id",
    "hosted_invoice_url",
]
LINE_COLUMNS = ["invoice_number", "invoice_status", "line_description", "quantity", "amount", "currency",
                "line_period_start", "line_period_end", "price_id", "invoice_stripe_id"]  # fmt: skip


def _absolute(request: HttpRequest, name: str, **kwargs: Any) -> str:
    return request.build_absolute_uri(reverse(name, kwargs=kwargs))


@team_view(GET="billing.view")
def billing_home(request: HttpRequest) -> HttpResponse:
    team = request.team  # type: ignore[attr-defined]
    account = selectors.account_of(team=team)
    cost = selectors.cost_to_date(team=team)
    checkout = request.GET.get("checkout")
    if checkout == "success":
        messages.success(request, "Thank you! Your plan changes as soon as Stripe confirms the payment (seconds).")
    elif checkout == "cancelled":
        messages.info(request, "Checkout was cancelled; nothing changed.")
    return render(
        request,
        "billing/home.html",
        {
            "account": account,
            "cost": cost,
            "invoices": selectors.invoice_list(team=team)[:5],
            "overdue": selectors.overdue_of(team=team),
            "connected": stripe_client.configured(),
            "can_manage": allows(request.membership, "billing.manage"),  # type: ignore[attr-defined]
            "can_payment_method": allows(request.membership, "billing.payment_method"),  # type: ignore[attr-defined]
        },
    )


@team_view(GET="team.delete", POST="team.delete")
def team_delete(request: HttpRequest) -> HttpResponse:
    """Delete the team, after a page that says what happens (and what refuses it: an unpaid or draft invoice)."""
    team = request.team  # type: ignore[attr-defined]
    form = DeleteTeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.team_delete(team=team, actor=request.user, confirmation=form.cleaned_data["confirmation"])  # type: ignore[arg-type]  # fmt: skip
        except ServiceError as error:
            form.add_service_error(error)
        else:
            request.session.pop("current_team", None)
            messages.success(request, f"Deleted {team.name}.")
            return redirect("home")
    context = {
        "form": form,
        "deletion_blocker": (selectors.team_deletion_blocker(team=team) or (None, None))[1],
        "has_subscription": services.has_live_subscription(selectors.account_of(team=team)),
    }
    return render(request, "billing/team_delete.html", context, status=400 if form.errors else 200)


@team_view(GET="billing.view")
def cost_card(request: HttpRequest) -> HttpResponse:
    """The dashboard's "Cost this month" card: the billing page's own figure, so they never disagree."""
    return render(request, "billing/_cost_card.html", {"cost": selectors.cost_to_date(team=request.team)})  # type: ignore[attr-defined]


@team_view(GET="billing.view")
def billing_plans(request: HttpRequest) -> HttpResponse:
    team = request.team  # type: ignore[attr-defined]
    account = selectors.account_of(team=team)
    current = selectors.plan_of(team=team, account=account)
    now = datetime.now(UTC)
    plans = [(plan, selectors.version_for(team=team, plan=plan, at=now)) for plan in Plan.objects.all()]
    return render(
        request,
        "billing/plans.html",
        {
            "plans": plans,
            "current": current,
            "subscribed": services.has_live_subscription(account),
            "connected": stripe_client.configured(),
            "can_manage": allows(request.membership, "billing.manage"),  # type: ignore[attr-defined]
        },
    )


@team_view(POST="billing.manage")
def billing_checkout(request: HttpRequest) -> HttpResponse:
    team = request.team  # type: ignore[attr-defined]
    try:
        url = services.checkout_start(
            team=team,
            plan_slug=request.POST.get("plan", ""),
            actor=request.user,  # type: ignore[arg-type]
            success_url=_absolute(request, "billing_home", team_slug=team.slug) + "?checkout=success",
            cancel_url=_absolute(request, "billing_plans", team_slug=team.slug) + "?checkout=cancelled",
        )
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("billing_plans", team_slug=team.slug)
    except stripe_client.StripeCallError as error:
        messages.error(request, f"Stripe could not start the checkout ({error}). Nothing was charged; try again.")
        return redirect("billing_plans", team_slug=team.slug)
    return redirect(url)


@team_view(POST="billing.payment_method")
def billing_portal(request: HttpRequest) -> HttpResponse:
    team = request.team  # type: ignore[attr-defined]
    try:
        url = services.portal_start(
            team=team,
            actor=request.user,  # type: ignore[arg-type]
            return_url=_absolute(request, "billing_home", team_slug=team.slug),
        )
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("billing_home", team_slug=team.slug)
    except stripe_client.StripeCallError as error:
        messages.error(request, f"Stripe could not open the billing portal ({error}). Try again in a moment.")
        return redirect("billing_home", team_slug=team.slug)
    return redirect(url)


# --- invoices ------------------------------------------------------------------------------------


def _filtered_invoices(request: HttpRequest) -> tuple[InvoiceFilterForm, Any]:
    team = request.team  # type: ignore[attr-defined]
    form = InvoiceFilterForm(request.GET or None)
    filters: dict[str, Any] = {}
    if form.is_valid():
        since, until = form.cleaned_data["since"], form.cleaned_data["until"]
        filters = {
            "status": form.cleaned_data["status"] or None,
            "start": datetime.combine(since, time.min, tzinfo=UTC) if since else None,
            "end": datetime.combine(until, time.min, tzinfo=UTC) + timedelta(days=1) if until else None,
        }
    return form, selectors.invoice_list(team=team, **filters)


def _date(moment: datetime | None) -> str:
    return moment.astimezone(UTC).date().isoformat() if moment else ""


def _money(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))  # a number, so a credit (negative) stays a number


@team_view(GET="billing.view")
def invoice_list(request: HttpRequest) -> HttpResponse:
    team = request.team  # type: ignore[attr-defined]
    form, invoices = _filtered_invoices(request)
    query = request.GET.copy()
    query.pop("page", None)
    query.pop("format", None)
    if request.GET.get("format") == "csv":

        def rows() -> Iterator[list[Any]]:
            yield INVOICE_COLUMNS
            for invoice in invoices[:CSV_LIMIT].iterator():
                yield [invoice.number, invoice.status, _date(invoice.period_start), _date(invoice.period_end),
                       _date(invoice.created), _date(invoice.due_date), _date(invoice.paid_at), invoice.currency,
                       _money(invoice.subtotal), _money(invoice.tax), _money(invoice.total),
                       _money(invoice.amount_paid), _money(invoice.amount_remaining), invoice.stripe_id,
                       invoice.hosted_invoice_url]  # fmt: skip

        return csv_response(f"{team.slug}-invoices", rows())
    page = Paginator(invoices, INVOICE_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "billing/invoices.html",
        {"form": form, "page": page, "query": query.urlencode(), "connected": stripe_client.configured()},
    )


@team_view(GET="billing.view")
def invoice_lines_csv(request: HttpRequest) -> StreamingHttpResponse:
    """Every line of the invoices the filters select (or of one invoice: ?invoice=<id>)."""
    team = request.team  # type: ignore[attr-defined]
    _form, invoices = _filtered_invoices(request)
    one = request.GET.get("invoice", "")
    if one:
        invoice_id = parse_int(one, minimum=1, maximum=2**62)
        if invoice_id is None:
            raise Http404("No such invoice")
        invoices = invoices.filter(pk=invoice_id)
    lines = (
        InvoiceLine.objects.filter(invoice__in=invoices[:CSV_LIMIT].values("pk"))
        .select_related("invoice")
        .order_by("-invoice__created", "invoice_id", "id")
    )

    def rows() -> Iterator[list[Any]]:
        yield LINE_COLUMNS
        for line in lines.iterator():
            yield [line.invoice.number, line.invoice.status, line.description, line.quantity or "",
                   _money(line.amount), line.invoice.currency, _date(line.period_start), _date(line.period_end),
                   line.price_id, line.invoice.stripe_id]  # fmt: skip

    return csv_response(f"{team.slug}-invoice-lines", rows())


@team_view(GET="billing.view")
def invoice_detail(request: HttpRequest, invoice_id: int) -> HttpResponse:
    team = request.team  # type: ignore[attr-defined]
    try:
        invoice = selectors.invoice_get(team=team, invoice_id=invoice_id)
    except Invoice.DoesNotExist:
        raise Http404("No such invoice") from None
    breakdown = selectors.invoice_breakdown(team=team, invoice=invoice)
    return render(request, "billing/invoice.html", {"invoice": invoice, "breakdown": breakdown})


# --- Stripe's webhook ----------------------------------------------------------------------------


@csrf_exempt  # Stripe cannot send a CSRF token; the signature on the raw body authenticates it instead
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    try:
        event, created = services.event_receive(payload=request.body, signature=request.headers.get("Stripe-Signature"))
    except stripe_client.BadSignatureError as error:
        return JsonResponse({"code": "bad_signature", "detail": str(error)}, status=400)
    return JsonResponse({"received": event.stripe_id, "duplicate": not created, "status": event.status})


# --- operator ------------------------------------------------------------------------------------


@staff_only
@require_GET
def operator_billing(request: HttpRequest) -> HttpResponse:
    """Failed webhook events (with retry), meter reports Stripe refused, and reconciliation differences."""
    failed = StripeEvent.objects.filter(status=EventStatus.FAILED).order_by("-received_at")
    page = Paginator(failed, 50).get_page(request.GET.get("page"))
    reconciliations = [r for r in Reconciliation.objects.select_related("team")[:500] if not r.matches][:100]
    meter_failures = MeterReport.objects.filter(
        status__in=(MeterReportStatus.FAILED, MeterReportStatus.EXPIRED)
    ).select_related("team")[:100]
    missed = Invoice.objects.filter(missed_units__gt=0).select_related("team").order_by("-period_end")[:100]
    deleted_teams = (
        Team.objects.filter(deleted_at__isnull=False)
        .select_related("billing")
        .annotate(
            invoice_count=Count("invoices"),
            unpaid_count=Count(
                "invoices", filter=Q(invoices__status__in=selectors.UNPAID, invoices__amount_remaining__gt=0)
            ),
        )
        .order_by("-deleted_at")[:100]
    )
    return render(
        request,
        "billing/operator.html",
        {
            "page": page,
            "reconciliations": reconciliations,
            "meter_failures": meter_failures,
            "missed": missed,
            "check_days": services.INVOICE_CHECK_DAYS,
            "deleted_teams": deleted_teams,
            "connected": stripe_client.configured(),
        },
    )


@staff_only
@require_POST
def operator_event_retry(request: HttpRequest, event_id: int) -> HttpResponse:
    try:
        event = services.event_retry(event_id=event_id, actor=request.user)  # type: ignore[arg-type]
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        if event and event.status == EventStatus.PROCESSED:
            messages.success(request, f"{event.type} {event.stripe_id} processed.")
        elif event:
            messages.error(request, f"{event.type} {event.stripe_id} failed again: {event.error}")
    return redirect("operator_billing")
