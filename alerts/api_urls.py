from django.urls import path

from alerts import api

team = "teams/<slug:team_slug>/"

urlpatterns = [
    path(team + "budgets/", api.BudgetListAPI.as_view(), name="api_budget_list"),
    path(team + "budgets/<int:budget_id>/", api.BudgetDetailAPI.as_view(), name="api_budget_detail"),
]
