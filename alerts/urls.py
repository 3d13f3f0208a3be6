from django.urls import path

from alerts import health_views, views

team = "t/<slug:team_slug>/budgets/"

urlpatterns = [
    path(team, views.budgets, name="budgets"),
    path(team + "meters", views.budget_meters, name="budget_meters"),
    path(team + "<int:budget_id>/update", views.budget_update, name="budget_update"),
    path(team + "<int:budget_id>/delete", views.budget_delete, name="budget_delete"),
]

rules = "t/<slug:team_slug>/alerts/"

urlpatterns += [
    path(rules, health_views.alert_rules, name="alert_rules"),
    path(rules + "<int:alert_rule_id>/update", health_views.alert_rule_update, name="alert_rule_update"),
    path(rules + "<int:alert_rule_id>/delete", health_views.alert_rule_delete, name="alert_rule_delete"),
]
