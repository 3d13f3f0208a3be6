"""Team REST API for health alert rules: each with its state and latest figure, and the same create / change / delete
the Health alerts page offers, through the same services (alerts.health)."""

from __future__ import annotations

from typing import Any

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts.api import TeamAPIView
from accounts.models import Role
from accounts.requests import TeamAPIRequest
from alerts import health, selectors
from alerts.api import invalid_body, members_of
from alerts.health import MAX_MIN_RELAYS, MAX_WINDOW_MINUTES, AlertRuleError
from alerts.models import AlertRule
from endpoints import selectors as endpoint_selectors
from endpoints.models import Endpoint
from project.api import ErrorSerializer, get_object_or_404_api

ENDPOINT_HELP = "The endpoint's id (ep_…) whose traffic the rule watches; null or absent: every endpoint."
SERVICE_HELP = "A catalog service id (e.g. eth-mainnet) whose traffic the rule watches; empty: every service."
MEMBERS_HELP = (
    "Members emailed besides the roles: each an email address or a member id (as the members API lists them)."
)
THRESHOLD_HELP = "Percent (below 100) for error_rate, milliseconds for p95_latency. The rule fires above it."


class AlertRuleOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    metric = serializers.ChoiceField(choices=AlertRule.Metric.choices)
    threshold = serializers.DecimalField(max_digits=12, decimal_places=2, help_text=THRESHOLD_HELP)
    window_minutes = serializers.IntegerField()
    endpoint_id = serializers.CharField(source="endpoint.public_id", allow_null=True, default=None)
    service = serializers.CharField(help_text="Empty: every service.")
    min_relays = serializers.IntegerField(help_text="Fewer relays in the window never fire.")
    enabled = serializers.BooleanField()
    notify_roles = serializers.ListField(child=serializers.ChoiceField(choices=Role.choices))
    notify_members = serializers.SerializerMethodField()
    state = serializers.ChoiceField(choices=AlertRule.State.choices)
    state_since = serializers.DateTimeField()
    last_value = serializers.DecimalField(
        max_digits=14, decimal_places=2, allow_null=True, help_text="The latest figure; null: nothing to measure."
    )
    last_relays = serializers.IntegerField(help_text="The relays the latest figure is over.")
    evaluated_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()

    @extend_schema_field(serializers.ListField(child=serializers.EmailField()))
    def get_notify_members(self, rule: AlertRule) -> list[str]:
        return sorted(user.email for user in rule.notify_members.all())


class AlertRuleFieldsInput(serializers.Serializer):
    """What a rule's create and change share; a field left out keeps its value (or takes the service's default)."""

    name = serializers.CharField(max_length=80, required=False)
    metric = serializers.ChoiceField(choices=AlertRule.Metric.choices, required=False)
    threshold = serializers.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, required=False, help_text=THRESHOLD_HELP
    )
    window_minutes = serializers.IntegerField(min_value=1, max_value=MAX_WINDOW_MINUTES, required=False)
    endpoint = serializers.CharField(required=False, allow_null=True, allow_blank=True, help_text=ENDPOINT_HELP)
    service = serializers.CharField(max_length=64, required=False, allow_blank=True, help_text=SERVICE_HELP)
    min_relays = serializers.IntegerField(min_value=1, max_value=MAX_MIN_RELAYS, required=False)
    enabled = serializers.BooleanField(required=False)
    notify_roles = serializers.ListField(
        child=serializers.ChoiceField(choices=Role.choices),
        required=False,
        help_text="Members holding these roles are emailed (default owner, admin, developer).",
    )
    notify_members = serializers.ListField(
        child=serializers.CharField(max_length=254), required=False, help_text=MEMBERS_HELP
    )


def _rule(request: TeamAPIRequest, alert_rule_id: int) -> AlertRule:
    return get_object_or_404_api(lambda: selectors.alert_rule_get(team=request.team, alert_rule_id=alert_rule_id))


def _endpoint(request: TeamAPIRequest, public_id: str | None) -> Endpoint | None:
    """The team's live endpoint with this id; another team's is refused like a missing one (400, field endpoint)."""
    if not public_id:
        return None
    try:
        return endpoint_selectors.endpoint_get(team=request.team, public_id=public_id)
    except Endpoint.DoesNotExist:
        raise serializers.ValidationError({"endpoint": ["The team has no such endpoint."]}) from None


def _fields(request: TeamAPIRequest, data: dict[str, Any]) -> dict[str, Any]:
    """The validated body as alerts.health's services take it: the endpoint and the members resolved."""
    fields = dict(data)
    if "endpoint" in fields:
        fields["endpoint"] = _endpoint(request, fields["endpoint"])
    if "notify_members" in fields:
        fields["notify_members"] = members_of(request, fields["notify_members"])
    return fields


def _output(request: TeamAPIRequest, rule: AlertRule) -> dict[str, Any]:
    return dict(AlertRuleOutput(selectors.alert_rule_get(team=request.team, alert_rule_id=rule.pk)).data)


@extend_schema(tags=["alert rules"])
class AlertRuleListAPI(TeamAPIView):
    required_actions = {"GET": "alerts.view", "POST": "alerts.manage"}

    class AlertRuleCreateInput(AlertRuleFieldsInput):
        name = serializers.CharField(max_length=80)
        metric = serializers.ChoiceField(choices=AlertRule.Metric.choices)
        threshold = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, help_text=THRESHOLD_HELP)

    @extend_schema(responses=AlertRuleOutput(many=True), summary="List health alert rules, with their state")
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        return Response(AlertRuleOutput(selectors.alert_rule_list(team=request.team), many=True).data)

    @extend_schema(
        request=AlertRuleCreateInput,
        responses={201: AlertRuleOutput, 400: ErrorSerializer},
        summary="Add a health alert rule",
        description="The rule is evaluated at once: set during an incident, it fires now. Every invalid field is "
        "named in `errors`; an endpoint the team does not have is refused like any invalid value.",
    )
    def post(self, request: TeamAPIRequest, team_slug: str) -> Response:
        data = self.AlertRuleCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            rule = health.alert_rule_create(
                team=request.team, actor=request.membership.user, **_fields(request, data.validated_data)
            )
        except AlertRuleError as error:
            raise invalid_body(error) from None
        return Response(_output(request, rule), status=status.HTTP_201_CREATED)


@extend_schema(tags=["alert rules"])
class AlertRuleDetailAPI(TeamAPIView):
    required_actions = {"GET": "alerts.view", "PATCH": "alerts.manage", "DELETE": "alerts.manage"}

    class AlertRuleUpdateInput(AlertRuleFieldsInput):
        pass  # every editable field (alerts.health.EDITABLE_FIELDS), none required

    @extend_schema(responses=AlertRuleOutput, summary="Get a health alert rule")
    def get(self, request: TeamAPIRequest, team_slug: str, alert_rule_id: int) -> Response:
        return Response(AlertRuleOutput(_rule(request, alert_rule_id)).data)

    @extend_schema(
        request=AlertRuleUpdateInput,
        responses={200: AlertRuleOutput, 400: ErrorSerializer},
        summary="Change a health alert rule",
        description="Only the fields sent change; on any error nothing changes. The rule is evaluated again with its "
        "new settings; disabling a firing rule resolves it (notified once).",
    )
    def patch(self, request: TeamAPIRequest, team_slug: str, alert_rule_id: int) -> Response:
        rule = _rule(request, alert_rule_id)
        data = self.AlertRuleUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            health.alert_rule_update(rule=rule, actor=request.membership.user, **_fields(request, data.validated_data))
        except AlertRuleError as error:
            raise invalid_body(error) from None
        return Response(_output(request, rule))

    @extend_schema(responses={204: None}, summary="Delete a health alert rule and its history")
    def delete(self, request: TeamAPIRequest, team_slug: str, alert_rule_id: int) -> Response:
        health.alert_rule_delete(rule=_rule(request, alert_rule_id), actor=request.membership.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


team = "teams/<slug:team_slug>/"

urlpatterns = [
    path(team + "alert-rules/", AlertRuleListAPI.as_view(), name="api_alert_rule_list"),
    path(team + "alert-rules/<int:alert_rule_id>/", AlertRuleDetailAPI.as_view(), name="api_alert_rule_detail"),
]
