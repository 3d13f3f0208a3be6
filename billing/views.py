"""Billing pages (owners, admins, finance), the Stripe webhook and the operator's billing page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.forms import DeleteTeamForm
from accounts.permissions import allows, team_view
from accounts.requests import TeamRequest, UserRequest
from billing import selectors, services, stripe_client
from billing.forms import InvoiceFilterForm
from billing.models import EventStatus, Invoice
from billing.rating import dollars
from project.csv import csv_response
from project.errors import ServiceError
from project.http import staff_only
from project.params import parse_int

INVOICE_PAGE_SIZE = 25
OPERATOR_PAGE_SIZE = 50
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
def billing_home(request: TeamRequest) -> HttpResponse:
    team = request.team
    checkout = request.GET.get("checkout")
    if checkout == "success":
        messages.success(request, "Thank you! Your plan changes as soon as Stripe confirms the payment (seconds).")
    elif checkout == "cancelled":
        messages.info(request, "Checkout was cancelled; nothing changed.")
    return render(
        request,
        "billing/home.html",
        {
            "account": selectors.account_of(team=team),
            "cost": selectors.cost_to_date(team=team),
            "invoices": selectors.invoice_list(team=team)[:5],
            "overdue": selectors.overdue_of(team=team),
            "connected": stripe_client.configured(),
            "can_manage": allows(request.membership, "billing.manage"),
            "can_payment_method": allows(request.membership, "billing.payment_method"),
        },
    )


@team_view(GET="team.delete", POST="team.delete")
def team_delete(request: TeamRequest) -> HttpResponse:
    """Delete the team, after a page that says what happens (and what refuses it: an unpaid or draft invoice)."""
    team = request.team
    form = DeleteTeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.team_delete(team=team, actor=request.user, confirmation=form.cleaned_data["confirmation"])
        except ServiceError as error:
            form.add_service_error(error)
        else:
            request.session.pop("current_team", None)
            messages.success(request, f"Deleted {team.name}.")
            return redirect("home")
    context = {
        "form": form,
        "deletion_blocker": (selectors.team_deletion_blocker(team=team) or (None, None))[1],
        "has_subscription": selectors.has_live_subscription(selectors.account_of(team=team)),
    }
    return render(request, "billing/team_delete.html", context, status=400 if form.errors else 200)


@team_view(GET="billing.view")
def cost_card(request: TeamRequest) -> HttpResponse:
    """The dashboard's "Cost this month" card: the billing page's own figure, so they never disagree."""
    return render(request, "billing/_cost_card.html", {"cost": selectors.cost_to_date(team=request.team)})


@team_view(GET="billing.view")
def billing_plans(request: TeamRequest) -> HttpResponse:
    team = request.team
    account = selectors.account_of(team=team)
    return render(
        request,
        "billing/plans.html",
        {
            "plans": selectors.plans_with_prices(team=team, at=datetime.now(UTC)),
            "current": selectors.plan_of(team=team, account=account),
            "subscribed": selectors.has_live_subscription(account),
            "connected": stripe_client.configured(),
            "can_manage": allows(request.membership, "billing.manage"),
        },
    )


def _to_stripe(request: TeamRequest, start: Callable[[], str], *, back: str, stripe_failed: str) -> HttpResponse:
    """Send the user to the Stripe page the service started; if it refuses, or Stripe fails, back to `back` with why
    (`stripe_failed` names Stripe's error as {error})."""
    try:
        url = start()
    except ServiceError as error:
        messages.error(request, error.message)
    except stripe_client.StripeCallError as error:
        messages.error(request, stripe_failed.format(error=error))
    else:
        return redirect(url)
    return redirect(back, team_slug=request.team.slug)


@team_view(POST="billing.manage")
def billing_checkout(request: TeamRequest) -> HttpResponse:
    team = request.team
    return _to_stripe(
        request,
        lambda: services.checkout_start(
            team=team,
            plan_slug=request.POST.get("plan", ""),
            actor=request.user,
            success_url=_absolute(request, "billing_home", team_slug=team.slug) + "?checkout=success",
            cancel_url=_absolute(request, "billing_plans", team_slug=team.slug) + "?checkout=cancelled",
        ),
        back="billing_plans",
        stripe_failed="Stripe could not start the checkout ({error}). Nothing was charged; try again.",
    )


@team_view(POST="billing.payment_method")
def billing_portal(request: TeamRequest) -> HttpResponse:
    team = request.team
    return _to_stripe(
        request,
        lambda: services.portal_start(
            team=team, actor=request.user, return_url=_absolute(request, "billing_home", team_slug=team.slug)
        ),
        back="billing_home",
        stripe_failed="Stripe could not open the billing portal ({error}). Try again in a moment.",
    )


# --- invoices ------------------------------------------------------------------------------------


def _filtered_invoices(request: TeamRequest, **more: Any) -> tuple[InvoiceFilterForm, QuerySet[Invoice]]:
    form = InvoiceFilterForm(request.GET or None)
    filters: dict[str, Any] = {}
    if form.is_valid():
        since, until = form.cleaned_data["since"], form.cleaned_data["until"]
        filters = {
            "status": form.cleaned_data["status"] or None,
            "start": datetime.combine(since, time.min, tzinfo=UTC) if since else None,
            "end": datetime.combine(until, time.min, tzinfo=UTC) + timedelta(days=1) if until else None,
        }
    return form, selectors.invoice_list(team=request.team, **filters, **more)


def _date(moment: datetime | None) -> str:
    return moment.astimezone(UTC).date().isoformat() if moment else ""


@team_view(GET="billing.view")
def invoice_list(request: TeamRequest) -> HttpResponseBase:
    team = request.team
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
                       dollars(invoice.subtotal), dollars(invoice.tax), dollars(invoice.total),
                       dollars(invoice.amount_paid), dollars(invoice.amount_remaining), invoice.stripe_id,
                       invoice.hosted_invoice_url]  # fmt: skip

        return csv_response(f"{team.slug}-invoices", rows())
    page = Paginator(invoices, INVOICE_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "billing/invoices.html",
        {"form": form, "page": page, "query": query.urlencode(), "connected": stripe_client.configured()},
    )


@team_view(GET="billing.view")
def invoice_lines_csv(request: TeamRequest) -> StreamingHttpResponse:
    """Every line of the invoices the filters select (or of one invoice: ?invoice=<id>)."""
    one = request.GET.get("invoice", "")
    invoice_id = parse_int(one, minimum=1, maximum=2**62) if one else None
    if one and invoice_id is None:
        raise Http404("No such invoice")
    _form, invoices = _filtered_invoices(request, invoice_id=invoice_id)
    lines = selectors.invoice_line_list(team=request.team, invoices=invoices[:CSV_LIMIT])

    def rows() -> Iterator[list[Any]]:
        yield LINE_COLUMNS
        for line in lines.iterator():
            yield [line.invoice.number, line.invoice.status, line.description, line.quantity or "",
                   dollars(line.amount), line.invoice.currency, _date(line.period_start), _date(line.period_end),
                   line.price_id, line.invoice.stripe_id]  # fmt: skip

    return csv_response(f"{request.team.slug}-invoice-lines", rows())


@team_view(GET="billing.view")
def invoice_detail(request: TeamRequest, invoice_id: int) -> HttpResponse:
    team = request.team
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

# The page lists two things page by page, each with its own page parameter (a page of one keeps the other's).
EVENTS_PAGE, DIFFERENCES_PAGE = "page", "differences_page"


def _page(request: HttpRequest, items: QuerySet[Any], param: str) -> Page[Any]:
    return Paginator(items, OPERATOR_PAGE_SIZE).get_page(request.GET.get(param))


@staff_only
@require_GET
def operator_billing(request: UserRequest) -> HttpResponse:
    """Failed webhook events (with retry), meter reports Stripe refused, and reconciliation differences."""
    events = _page(request, selectors.failed_events(), EVENTS_PAGE)
    differences = _page(request, selectors.reconciliation_differences(), DIFFERENCES_PAGE)
    return render(
        request,
        "billing/operator.html",
        {
            "page": events,
            "query": urlencode({DIFFERENCES_PAGE: differences.number}),
            "differences": differences,
            "differences_param": DIFFERENCES_PAGE,
            "differences_query": urlencode({EVENTS_PAGE: events.number}),
            "meter_failures": selectors.meter_failures(),
            "missed": selectors.missed_invoices(),
            "check_days": services.INVOICE_CHECK_DAYS,
            "deleted_teams": selectors.deleted_teams(),
            "connected": stripe_client.configured(),
        },
    )


@staff_only
@require_POST
def operator_event_retry(request: UserRequest, event_id: int) -> HttpResponse:
    try:
        event = services.event_retry(event_id=event_id, actor=request.user)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        if event and event.status == EventStatus.PROCESSED:
            messages.success(request, f"{event.type} {event.stripe_id} processed.")
        elif event:
            messages.error(request, f"{event.type} {event.stripe_id} failed again: {event.error}")
    return redirect("operator_billing")
