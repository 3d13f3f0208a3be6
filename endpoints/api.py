"""Team REST API for endpoints and API keys, and the public service catalog."""

from __future__ import annotations

from functools import partial
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import TeamAPIView
from accounts.requests import TeamAPIRequest
from endpoints import keys as key_format
from endpoints import selectors, services
from endpoints.feed import allowlists_of
from endpoints.models import MAX_UNIT_CAP, ApiKey, Endpoint, Environment
from endpoints.selectors import service_list
from endpoints.services import ROTATION_OVERLAPS, AllowlistError
from project.api import ErrorSerializer, get_object_or_404_api
from project.errors import ServiceError


class ServiceOutput(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.CharField()
    chain_family = serializers.CharField()
    chain_id = serializers.IntegerField(allow_null=True)
    compute_units = serializers.IntegerField()
    method_compute_units = serializers.DictField(child=serializers.IntegerField())
    input_price_per_million = serializers.DecimalField(max_digits=12, decimal_places=6, allow_null=True)
    output_price_per_million = serializers.DecimalField(max_digits=12, decimal_places=6, allow_null=True)
    context_window = serializers.IntegerField(allow_null=True)


class ServiceListAPI(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ServiceOutput(many=True), summary="List the service catalog", tags=["catalog"])
    def get(self, request: Request) -> Response:
        return Response(ServiceOutput(service_list(), many=True).data)


class AllowlistsField(serializers.Serializer):
    origins = serializers.ListField(child=serializers.CharField(), required=False)
    user_agents = serializers.ListField(child=serializers.CharField(), required=False)
    ips = serializers.ListField(child=serializers.CharField(), required=False)
    contracts = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)
    methods = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


class EndpointOutput(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    name = serializers.CharField()
    description = serializers.CharField()
    environment = serializers.CharField()
    status = serializers.CharField()
    suspended_reason = serializers.CharField()
    services = serializers.SerializerMethodField()
    rate_limit_rps = serializers.IntegerField(allow_null=True)
    monthly_unit_cap = serializers.IntegerField(allow_null=True)
    secret_key_required = serializers.BooleanField()
    allowlists = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_services(self, endpoint: Endpoint) -> list[str]:
        return [s.id for s in endpoint.services.all()]

    def get_allowlists(self, endpoint: Endpoint) -> dict[str, Any]:
        return allowlists_of(partial(getattr, endpoint))


def _endpoint(request: TeamAPIRequest, endpoint_id: str) -> Endpoint:
    return get_object_or_404_api(lambda: selectors.endpoint_get(team=request.team, public_id=endpoint_id))


def _allowlist_errors(error: AllowlistError) -> dict[str, list[str]]:
    """The service's errors by list as this API names them: origins, …, contracts.<service id>, methods.<service id>."""
    errors: dict[str, list[str]] = {}
    for each in error.errors:
        errors.setdefault((each.field or "allowlists").removeprefix("allowed_"), []).append(each.message)
    return errors


@extend_schema(tags=["endpoints"])
class EndpointListAPI(TeamAPIView):
    required_actions = {"GET": "endpoints.view", "POST": "endpoints.manage"}

    class EndpointCreateInput(serializers.Serializer):
        name = serializers.CharField(max_length=80)
        description = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)
        environment = serializers.ChoiceField(choices=Environment.choices, default=Environment.PRODUCTION)
        services = serializers.ListField(child=serializers.CharField(), min_length=1)

    @extend_schema(responses=EndpointOutput(many=True), summary="List endpoints")
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        return Response(EndpointOutput(selectors.endpoint_list(team=request.team), many=True).data)

    @extend_schema(
        request=EndpointCreateInput, responses={201: EndpointOutput, 400: ErrorSerializer}, summary="Create an endpoint"
    )
    def post(self, request: TeamAPIRequest, team_slug: str) -> Response:
        data = self.EndpointCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = services.endpoint_create(team=request.team, actor=request.membership.user, **data.validated_data)
        return Response(EndpointOutput(endpoint).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["endpoints"])
class EndpointDetailAPI(TeamAPIView):
    required_actions = {"GET": "endpoints.view", "PATCH": "endpoints.manage", "DELETE": "endpoints.manage"}

    class EndpointUpdateInput(serializers.Serializer):
        name = serializers.CharField(max_length=80, required=False)
        description = serializers.CharField(max_length=500, required=False, allow_blank=True)
        services = serializers.ListField(child=serializers.CharField(), min_length=1, required=False)
        paused = serializers.BooleanField(required=False, help_text="Pause (true) or resume (false) the endpoint.")
        rate_limit_rps = serializers.IntegerField(min_value=1, max_value=100_000, required=False, allow_null=True)
        monthly_unit_cap = serializers.IntegerField(
            min_value=1, max_value=MAX_UNIT_CAP, required=False, allow_null=True
        )
        secret_key_required = serializers.BooleanField(required=False)
        allowlists = AllowlistsField(required=False)

    @extend_schema(responses=EndpointOutput, summary="Get an endpoint")
    def get(self, request: TeamAPIRequest, team_slug: str, endpoint_id: str) -> Response:
        return Response(EndpointOutput(_endpoint(request, endpoint_id)).data)

    @extend_schema(
        request=EndpointUpdateInput,
        responses={200: EndpointOutput, 400: ErrorSerializer},
        summary="Change an endpoint",
        description="Only the fields sent change. Allowlists are checked entry by entry; on any error nothing changes.",
    )
    def patch(self, request: TeamAPIRequest, team_slug: str, endpoint_id: str) -> Response:
        endpoint = _endpoint(request, endpoint_id)
        data = self.EndpointUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        paused = changes.pop("paused", None)
        changes |= {f"allowed_{name}": entries for name, entries in changes.pop("allowlists", {}).items()}
        actor = request.membership.user
        try:
            endpoint = services.endpoint_update(endpoint=endpoint, actor=actor, **changes)
        except AllowlistError as error:  # every bad entry, in the shape of any invalid body
            raise serializers.ValidationError(_allowlist_errors(error)) from None
        if paused is not None and (paused != (endpoint.status == "paused")):
            endpoint = services.endpoint_set_paused(endpoint=endpoint, paused=paused, actor=actor)
        return Response(EndpointOutput(selectors.endpoint_get(team=request.team, public_id=endpoint.public_id)).data)

    @extend_schema(responses={204: None}, summary="Delete an endpoint (its keys stop working at once)")
    def delete(self, request: TeamAPIRequest, team_slug: str, endpoint_id: str) -> Response:
        services.endpoint_delete(endpoint=_endpoint(request, endpoint_id), actor=request.membership.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class KeyOutput(serializers.Serializer):
    key_id = serializers.CharField()
    endpoint_id = serializers.CharField(source="endpoint.public_id")
    name = serializers.CharField()
    secret_hint = serializers.CharField(help_text="The secret's start and end, to recognise it; never the secret.")
    status = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    valid_until = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    daily_unit_cap = serializers.IntegerField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    replaced_by = serializers.CharField(source="replaced_by.key_id", allow_null=True, default=None)

    def get_status(self, key: ApiKey) -> str:
        context = self.context
        return selectors.key_effective_status(
            key, team_suspension=context.get("team_suspension"), stops=context.get("stops")
        ).status


class KeyWithSecretOutput(KeyOutput):
    secret = serializers.CharField(help_text="Shown once, in this response only. Stored only as SHA-256.")


def _key_context(request: TeamAPIRequest) -> dict[str, Any]:
    """What KeyOutput needs to say a key's status: the team's suspension, read once for any number of keys."""
    return {"team_suspension": selectors.team_suspension_reason(team=request.team),
            "stops": selectors.team_stops(team=request.team)}  # fmt: skip


def _key_output(request: TeamAPIRequest, key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    body = dict(KeyOutput(key, context=_key_context(request)).data)
    if secret is not None:
        body["secret"] = secret
    return body


@extend_schema(tags=["keys"])
class KeyListAPI(TeamAPIView):
    required_actions = {"GET": "keys.view", "POST": "keys.manage"}

    class KeyCreateInput(serializers.Serializer):
        name = serializers.CharField(max_length=80)
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
        daily_unit_cap = serializers.IntegerField(
            min_value=1, max_value=MAX_UNIT_CAP, required=False, allow_null=True, default=None
        )

    @extend_schema(responses=KeyOutput(many=True), summary="List an endpoint's keys")
    def get(self, request: TeamAPIRequest, team_slug: str, endpoint_id: str) -> Response:
        endpoint = _endpoint(request, endpoint_id)
        keys = selectors.key_list(team=request.team, endpoint=endpoint)
        return Response(KeyOutput(keys, many=True, context=_key_context(request)).data)

    @extend_schema(
        request=KeyCreateInput, responses={201: KeyWithSecretOutput, 403: ErrorSerializer}, summary="Create a key"
    )
    def post(self, request: TeamAPIRequest, team_slug: str, endpoint_id: str) -> Response:
        endpoint = _endpoint(request, endpoint_id)
        data = self.KeyCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        key, secret = services.api_key_create(endpoint=endpoint, actor=request.membership.user, **data.validated_data)
        return Response(_key_output(request, key, secret), status=status.HTTP_201_CREATED)


def _key(request: TeamAPIRequest, key_id: str) -> ApiKey:
    return get_object_or_404_api(lambda: selectors.key_get(team=request.team, key_id=key_id))


@extend_schema(tags=["keys"])
class KeyDetailAPI(TeamAPIView):
    required_actions = {"GET": "keys.view", "PATCH": "keys.manage"}

    class KeyUpdateInput(serializers.Serializer):
        name = serializers.CharField(max_length=80, required=False)
        expires_at = serializers.DateTimeField(required=False, allow_null=True)
        daily_unit_cap = serializers.IntegerField(min_value=1, max_value=MAX_UNIT_CAP, required=False, allow_null=True)

    @extend_schema(responses=KeyOutput, summary="Get a key")
    def get(self, request: TeamAPIRequest, team_slug: str, key_id: str) -> Response:
        return Response(_key_output(request, _key(request, key_id)))

    @extend_schema(
        request=KeyUpdateInput,
        responses={200: KeyOutput, 409: ErrorSerializer},
        summary="Rename a key or change its expiry or cap",
    )
    def patch(self, request: TeamAPIRequest, team_slug: str, key_id: str) -> Response:
        key = _key(request, key_id)
        data = self.KeyUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        key = services.api_key_update(key=key, actor=request.membership.user, **data.validated_data)
        return Response(_key_output(request, key))


@extend_schema(tags=["keys"])
class KeyRotateAPI(TeamAPIView):
    required_actions = {"POST": "keys.manage"}

    class KeyRotateInput(serializers.Serializer):
        overlap = serializers.ChoiceField(
            choices=list(ROTATION_OVERLAPS), help_text="How long the old key keeps working."
        )

    @extend_schema(
        request=KeyRotateInput, responses={201: KeyWithSecretOutput, 409: ErrorSerializer}, summary="Rotate a key"
    )
    def post(self, request: TeamAPIRequest, team_slug: str, key_id: str) -> Response:
        key = _key(request, key_id)  # another team's key is 404 before any input is looked at
        data = self.KeyRotateInput(data=request.data)
        data.is_valid(raise_exception=True)
        new, secret = services.api_key_rotate(
            key=key, overlap=data.validated_data["overlap"], actor=request.membership.user
        )
        return Response(_key_output(request, new, secret), status=status.HTTP_201_CREATED)


@extend_schema(tags=["keys"])
class KeyRevokeAPI(TeamAPIView):
    required_actions = {"POST": "keys.manage"}

    @extend_schema(request=None, responses={200: KeyOutput}, summary="Revoke a key now")
    def post(self, request: TeamAPIRequest, team_slug: str, key_id: str) -> Response:
        key = services.api_key_revoke(key=_key(request, key_id), actor=request.membership.user)
        return Response(_key_output(request, key))


@extend_schema(tags=["keys"])
class KeyIdentifyAPI(TeamAPIView):
    """Which of our keys is this secret? Malformed secrets are refused by their checksum, before any lookup."""

    required_actions = {"POST": "keys.view"}

    class KeyIdentifyInput(serializers.Serializer):
        secret = serializers.CharField(max_length=100)

    @extend_schema(
        request=KeyIdentifyInput,
        responses={200: KeyOutput, 400: ErrorSerializer, 404: ErrorSerializer},
        summary="Identify a key from its secret",
    )
    def post(self, request: TeamAPIRequest, team_slug: str) -> Response:
        data = self.KeyIdentifyInput(data=request.data)
        data.is_valid(raise_exception=True)
        secret = data.validated_data["secret"]
        if not key_format.is_well_formed(secret):
            raise ServiceError(
                "malformed_key", "This is not a Gatehouse key: its format or checksum is wrong.", field="secret"
            )
        key = selectors.key_by_secret(team=request.team, secret=secret)
        if key is None:
            raise ServiceError("not_found", "No key of this team has this secret.", status=404)
        return Response(_key_output(request, key))
