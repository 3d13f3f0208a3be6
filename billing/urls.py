from django.urls import path

from billing import views

team = "t/<slug:team_slug>/billing/"

urlpatterns = [
    path("t/<slug:team_slug>/settings/delete", views.team_delete, name="team_delete"),
    path(team, views.billing_home, name="billing_home"),
    path(team + "cost-card", views.cost_card, name="billing_cost_card"),
    path(team + "plans/", views.billing_plans, name="billing_plans"),
    path(team + "checkout", views.billing_checkout, name="billing_checkout"),
    path(team + "portal", views.billing_portal, name="billing_portal"),
    path(team + "invoices/", views.invoice_list, name="invoice_list"),
    path(team + "invoices/lines.csv", views.invoice_lines_csv, name="invoice_lines_csv"),
    path(team + "invoices/<int:invoice_id>/", views.invoice_detail, name="invoice_detail"),
    path("billing/stripe/webhook", views.stripe_webhook, name="stripe_webhook"),
    path("operator/billing/", views.operator_billing, name="operator_billing"),
    path("operator/billing/events/<int:event_id>/retry", views.operator_event_retry, name="operator_event_retry"),
]
