"""Team REST API for budgets: each with where it stands this period (and whether its stop is in force), its recent
firings, and the same create / change / delete the Budgets page offers, through the same services."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import ROUND_DOWN
from typing import Any, TypeVar

from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts.api import TeamAPIView
from accounts.models import Role
from accounts.requests import TeamAPIRequest
from alerts import selectors, services
from alerts.models import Budget, BudgetFiring
from alerts.services import BudgetError
from endpoints import selectors as endpoint_selectors
from project.api import ErrorSerializer, get_object_or_404_api

T = TypeVar("T")

MEMBERS_HELP = (
    "Members emailed besides the roles: each an email address or a member id (as the members API lists them)."
)
THRESHOLDS_HELP = "Percentages of the amount that alert, each once per period (default 50, 80, 100)."
ONLY_FOR_ITS_SCOPE = {
    "endpoint": "Name an endpoint only for a budget with scope endpoint.",
    "key": "Name a key only for a budget with scope key.",
}
CAP_CONFLICT = OpenApiResponse(
    ErrorSerializer,
    description="`budget_is_a_cap`: the budget is a key's daily cap or an endpoint's monthly cap; change the cap.",
)


class StandingOutput(serializers.Serializer):
    used = serializers.DecimalField(
        max_digits=30, decimal_places=6, help_text="Used in the current period: billable units, or charges (money)."
    )
    percent = serializers.DecimalField(
        max_digits=32, decimal_places=2, rounding=ROUND_DOWN, help_text="Of the amount, rounded down."
    )
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    forecast_at = serializers.DateTimeField(
        allow_null=True, help_text="When this period's pace would use the amount up, if before the period ends."
    )
    traffic_stopped = serializers.BooleanField(
        help_text="This budget's stop is in force: its scope's traffic is refused until the next period, a higher "
        "amount, or the budget's deletion."
    )


class FiringOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=BudgetFiring.Kind.choices)
    threshold = serializers.IntegerField(help_text="Percent of the amount.")
    used = serializers.DecimalField(max_digits=24, decimal_places=6, help_text="What was used when it fired.")
    amount = serializers.DecimalField(max_digits=20, decimal_places=2, help_text="The amount when it fired.")
    period_start = serializers.DateTimeField()
    fired_at = serializers.DateTimeField()
    forecast_at = serializers.DateTimeField(allow_null=True, help_text="A forecast's: when the pace uses it up.")


class BudgetOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    scope = serializers.ChoiceField(choices=Budget.Scope.choices)
    endpoint_id = serializers.CharField(
        source="endpoint.public_id", allow_null=True, default=None, help_text="Also set for a key's budget."
    )
    key_id = serializers.CharField(source="key.key_id", allow_null=True, default=None)
    measure = serializers.ChoiceField(choices=Budget.Measure.choices)
    period = serializers.ChoiceField(choices=Budget.Period.choices)
    amount = serializers.DecimalField(max_digits=20, decimal_places=2)
    thresholds = serializers.ListField(child=serializers.IntegerField())
    action = serializers.ChoiceField(choices=Budget.Action.choices)
    forecast = serializers.BooleanField()
    notify_roles = serializers.ListField(child=serializers.ChoiceField(choices=Role.choices))
    notify_members = serializers.SerializerMethodField()
    origin = serializers.ChoiceField(
        choices=Budget.Origin.choices, help_text="key_cap and endpoint_cap budgets change with their cap, not here."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    standing = serializers.SerializerMethodField()

    @extend_schema_field(serializers.ListField(child=serializers.EmailField()))
    def get_notify_members(self, budget: Budget) -> list[str]:
        return sorted(user.email for user in budget.notify_members.all())

    @extend_schema_field(StandingOutput)
    def get_standing(self, budget: Budget) -> dict[str, Any]:
        standing = self.context["standings"][budget.pk]
        return dict(
            StandingOutput(
                {
                    "used": standing.used,
                    "percent": standing.percent,
                    "period_start": standing.period_start,
                    "period_end": standing.period_end,
                    "forecast_at": standing.forecast_at,
                    "traffic_stopped": budget.pk in self.context["stopped"],
                }
            ).data
        )


class BudgetDetailOutput(BudgetOutput):
    firings = serializers.SerializerMethodField(help_text="The latest 20, newest first.")

    @extend_schema_field(FiringOutput(many=True))
    def get_firings(self, budget: Budget) -> list[dict[str, Any]]:
        return list(FiringOutput(self.context["firings"], many=True).data)


def _context(request: TeamAPIRequest, budgets: Iterable[Budget]) -> dict[str, Any]:
    """What BudgetOutput needs besides the budgets: their standings and the stops in force, read once for all."""
    return {
        "standings": {standing.budget.pk: standing for standing in services.standings(budgets)},
        "stopped": selectors.stopped_budget_ids(team=request.team),
    }


def _budget(request: TeamAPIRequest, budget_id: int) -> Budget:
    return get_object_or_404_api(lambda: selectors.budget_get(team=request.team, budget_id=budget_id))


def _detail(request: TeamAPIRequest, budget_id: int) -> dict[str, Any]:
    budget = get_object_or_404_api(lambda: selectors.budget_get_with_recipients(team=request.team, budget_id=budget_id))
    firings = list(selectors.budget_firing_list(team=request.team, budget=budget))
    return dict(BudgetDetailOutput(budget, context=_context(request, [budget]) | {"firings": firings}).data)


def invalid_body(error: BudgetError) -> serializers.ValidationError:
    """The service's errors by field, in the shape of any invalid body: {field: [message]}."""
    return serializers.ValidationError({field: [message] for field, message in error.errors.items()})


def _found(fetch: Callable[[], T]) -> T | None:
    try:
        return fetch()
    except ObjectDoesNotExist:
        return None


def _targets(request: TeamAPIRequest, *, endpoint_id: str | None, key_id: str | None) -> dict[str, Any]:
    """The endpoint and key a new budget names, by their ids. One the team does not have becomes None, which the
    service refuses like a missing one (field endpoint / key): another team's is not told apart from none."""
    team = request.team
    targets: dict[str, Any] = {}
    if endpoint_id:
        targets["endpoint"] = _found(lambda: endpoint_selectors.endpoint_get(team=team, public_id=endpoint_id))
    if key_id:
        targets["key"] = _found(lambda: endpoint_selectors.key_get(team=team, key_id=key_id))
    return targets


def members_of(request: TeamAPIRequest, members: list[str]) -> list[Any]:
    """Members as the service takes them: email addresses as sent, member ids as their users. An id no member of
    the team has, and anything neither an id nor an address, is refused here (the service knows users, not ids)."""
    ids = [int(member) for member in members if member.isascii() and member.isdigit() and len(member) <= 18]
    found = selectors.member_users(team=request.team, membership_ids=ids) if ids else {}
    chosen: list[Any] = []
    for member in members:
        if member.isascii() and member.isdigit():
            if len(member) > 18 or int(member) not in found:
                raise serializers.ValidationError({"notify_members": [f"No member of the team has the id {member}."]})
            chosen.append(found[int(member)])
        elif "@" in member:
            chosen.append(member)
        else:
            raise serializers.ValidationError({"notify_members": ["Give each member as an email address or an id."]})
    return chosen


class BudgetFieldsInput(serializers.Serializer):
    """What a budget's create and change share; a field left out keeps its value (or takes the service's default)."""

    name = serializers.CharField(max_length=80, required=False)
    amount = serializers.DecimalField(
        max_digits=20,
        decimal_places=2,
        required=False,
        help_text="Billable units, or US dollars of usage charges (measure money).",
    )
    period = serializers.ChoiceField(
        choices=Budget.Period.choices, required=False, help_text="Daily budgets are for keys (default month)."
    )
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000), required=False, help_text=THRESHOLDS_HELP
    )
    action = serializers.ChoiceField(
        choices=Budget.Action.choices, required=False, help_text="What happens at 100 % (default alert)."
    )
    forecast = serializers.BooleanField(
        required=False, help_text="Also alert once a period when the pace would use the amount before it ends."
    )
    notify_roles = serializers.ListField(
        child=serializers.ChoiceField(choices=Role.choices),
        required=False,
        help_text="Members holding these roles are emailed (default owner, admin, finance).",
    )
    notify_members = serializers.ListField(
        child=serializers.CharField(max_length=254), required=False, help_text=MEMBERS_HELP
    )


@extend_schema(tags=["budgets"])
class BudgetListAPI(TeamAPIView):
    required_actions = {"GET": "budgets.view", "POST": "budgets.manage"}

    class BudgetCreateInput(BudgetFieldsInput):
        name = serializers.CharField(max_length=80)
        scope = serializers.ChoiceField(choices=Budget.Scope.choices)
        endpoint = serializers.CharField(
            required=False, allow_null=True, default=None, help_text="The endpoint's id (ep_…), for scope endpoint."
        )
        key = serializers.CharField(
            required=False, allow_null=True, default=None, help_text="The key's id (key_…), for scope key."
        )
        measure = serializers.ChoiceField(choices=Budget.Measure.choices, default=Budget.Measure.UNITS)
        amount = serializers.DecimalField(
            max_digits=20, decimal_places=2, help_text="Billable units, or US dollars of usage charges (money)."
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            for target, message in ONLY_FOR_ITS_SCOPE.items():
                if attrs.get(target) and attrs["scope"] != target:
                    raise serializers.ValidationError({target: [message]})
            return attrs

    @extend_schema(responses=BudgetOutput(many=True), summary="List budgets, with where each stands this period")
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        budgets = list(selectors.budget_list_with_recipients(team=request.team))
        return Response(BudgetOutput(budgets, many=True, context=_context(request, budgets)).data)

    @extend_schema(
        request=BudgetCreateInput,
        responses={201: BudgetDetailOutput, 400: ErrorSerializer},
        summary="Set a budget",
        description="Thresholds already crossed this period fire at once (once each). Every invalid field is named "
        "in `errors`; an endpoint or key the team does not have is refused like any invalid value.",
    )
    def post(self, request: TeamAPIRequest, team_slug: str) -> Response:
        data = self.BudgetCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        fields |= _targets(request, endpoint_id=fields.pop("endpoint"), key_id=fields.pop("key"))
        if "notify_members" in fields:
            fields["notify_members"] = members_of(request, fields["notify_members"])
        try:
            budget = services.budget_create(team=request.team, actor=request.membership.user, **fields)
        except BudgetError as error:
            raise invalid_body(error) from None
        return Response(_detail(request, budget.pk), status=status.HTTP_201_CREATED)


@extend_schema(tags=["budgets"])
class BudgetDetailAPI(TeamAPIView):
    required_actions = {"GET": "budgets.view", "PATCH": "budgets.manage", "DELETE": "budgets.manage"}

    class BudgetUpdateInput(BudgetFieldsInput):
        pass  # every editable field (alerts.services.EDITABLE_FIELDS), none required

    @extend_schema(responses=BudgetDetailOutput, summary="Get a budget, with its recent firings")
    def get(self, request: TeamAPIRequest, team_slug: str, budget_id: int) -> Response:
        return Response(_detail(request, budget_id))

    @extend_schema(
        request=BudgetUpdateInput,
        responses={200: BudgetDetailOutput, 400: ErrorSerializer, 409: CAP_CONFLICT},
        summary="Change a budget",
        description="Only the fields sent change; on any error nothing changes. Lowering the amount below what is "
        "used fires the thresholds now crossed, once each; raising it above (or making it alert only) resumes the "
        "traffic it stopped.",
    )
    def patch(self, request: TeamAPIRequest, team_slug: str, budget_id: int) -> Response:
        budget = _budget(request, budget_id)
        data = self.BudgetUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "notify_members" in changes:
            changes["notify_members"] = members_of(request, changes["notify_members"])
        try:
            services.budget_update(budget=budget, actor=request.membership.user, **changes)
        except BudgetError as error:
            raise invalid_body(error) from None
        return Response(_detail(request, budget.pk))

    @extend_schema(
        responses={204: None, 409: CAP_CONFLICT}, summary="Delete a budget (traffic it stopped resumes at once)"
    )
    def delete(self, request: TeamAPIRequest, team_slug: str, budget_id: int) -> Response:
        services.budget_delete(budget=_budget(request, budget_id), actor=request.membership.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
