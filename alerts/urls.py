from django.urls import path

from alerts import views

team = "t/<slug:team_slug>/budgets/"

urlpatterns = [
    path(team, views.budgets, name="budgets"),
    path(team + "<int:budget_id>/update", views.budget_update, name="budget_update"),
    path(team + "<int:budget_id>/delete", views.budget_delete, name="budget_delete"),
]
