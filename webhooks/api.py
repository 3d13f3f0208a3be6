"""Team REST API for outgoing webhooks: receiving endpoints (their signing secret shown once, when created or
rotated), their delivery log, test events and resends."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from accounts.api import TeamAPIView
from accounts.requests import TeamAPIRequest
from project.api import ErrorSerializer, get_object_or_404_api
from webhooks import selectors, services
from webhooks.models import EVENT_TYPES, DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookFormat

EVENT_TYPE_CHOICES = list(EVENT_TYPES.items())
URL_HELP = "An https:// URL whose host resolves to public addresses only."


class WebhookOutput(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    description = serializers.CharField()
    event_types = serializers.ListField(child=serializers.CharField(), help_text="Empty: every event type.")
    format = serializers.ChoiceField(choices=WebhookFormat.choices)
    enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField()
    secret_hint = serializers.CharField(help_text="The secret's public start, to tell two apart; never the secret.")
    previous_secret_valid_until = serializers.DateTimeField(
        source="previous_secret_expires_at",
        allow_null=True,
        help_text="After a rotation the previous secret also signs (a second v1 signature) until then.",
    )
    created_at = serializers.DateTimeField()


class WebhookWithSecretOutput(WebhookOutput):
    secret = serializers.CharField(help_text="The signing secret: shown once, in this response only.")


def _with_secret(endpoint: WebhookEndpoint, secret: str, *, status_code: int = status.HTTP_200_OK) -> Response:
    response = Response({**WebhookOutput(endpoint).data, "secret": secret}, status=status_code)
    response["Cache-Control"] = "no-store"  # a secret shown once must not be kept by a cache
    return response


class AttemptOutput(serializers.Serializer):
    number = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    response_status = serializers.IntegerField(allow_null=True)
    response_excerpt = serializers.CharField()
    duration_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()


class EventOutput(serializers.Serializer):
    id = serializers.CharField(source="event_id", help_text="The same on every attempt: receivers drop duplicates.")
    type = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_fields(self) -> dict[str, serializers.Field]:
        # "data", the envelope's name for the payload, is also Serializer.data: it cannot be a class attribute.
        fields = super().get_fields()
        fields["data"] = serializers.DictField(source="payload", help_text="The event's payload, as it is sent.")
        return fields


class DeliveryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    webhook_id = serializers.IntegerField(source="endpoint_id")
    event = EventOutput()
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    response_status = serializers.IntegerField(allow_null=True, help_text="Of the latest attempt.")
    response_excerpt = serializers.CharField()
    duration_ms = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    created_at = serializers.DateTimeField()
    attempt_log = AttemptOutput(many=True)


class DeliveryPageOutput(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = DeliveryOutput(many=True)


class DeliveryPagination(LimitOffsetPagination):
    max_limit = 100


PAGE_PARAMETERS = [
    OpenApiParameter("limit", int, description="Deliveries per page: default 50, at most 100."),
    OpenApiParameter("offset", int, description="How many to skip (newest first)."),
]


def _webhook(request: TeamAPIRequest, webhook_id: int) -> WebhookEndpoint:
    return get_object_or_404_api(lambda: selectors.endpoint_get(team=request.team, endpoint_id=webhook_id))


def _delivery(request: TeamAPIRequest, delivery_id: int) -> WebhookDelivery:
    return get_object_or_404_api(lambda: selectors.delivery_get(team=request.team, delivery_id=delivery_id))


@extend_schema(tags=["webhooks"])
class WebhookListAPI(TeamAPIView):
    required_actions = {"GET": "webhooks.view", "POST": "webhooks.manage"}

    class WebhookCreateInput(serializers.Serializer):
        url = serializers.CharField(help_text=URL_HELP)
        event_types = serializers.ListField(
            child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES),
            required=False,
            default=list,
            help_text="The event types to send; empty or absent: every type, including types added later.",
        )
        format = serializers.ChoiceField(choices=WebhookFormat.choices, default=WebhookFormat.GATEHOUSE)
        description = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)

    @extend_schema(responses=WebhookOutput(many=True), summary="List webhooks")
    def get(self, request: TeamAPIRequest, team_slug: str) -> Response:
        return Response(WebhookOutput(selectors.endpoint_list(team=request.team), many=True).data)

    @extend_schema(
        request=WebhookCreateInput,
        responses={201: WebhookWithSecretOutput, 400: ErrorSerializer},
        summary="Add a webhook",
        description="The response holds the signing secret, shown this once. A URL is refused (400, field `url`) "
        "unless it is https and its host resolves to public addresses only.",
    )
    def post(self, request: TeamAPIRequest, team_slug: str) -> Response:
        data = self.WebhookCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_endpoint_create(
            team=request.team, actor=request.membership.user, **data.validated_data
        )
        return _with_secret(endpoint, secret, status_code=status.HTTP_201_CREATED)


@extend_schema(tags=["webhooks"])
class WebhookDetailAPI(TeamAPIView):
    required_actions = {"GET": "webhooks.view", "PATCH": "webhooks.manage", "DELETE": "webhooks.manage"}

    class WebhookUpdateInput(serializers.Serializer):
        url = serializers.CharField(required=False, help_text=URL_HELP)
        event_types = serializers.ListField(
            child=serializers.ChoiceField(choices=EVENT_TYPE_CHOICES),
            required=False,
            help_text="The event types to send; empty: every type, including types added later.",
        )
        format = serializers.ChoiceField(choices=WebhookFormat.choices, required=False)
        description = serializers.CharField(max_length=200, required=False, allow_blank=True)
        enabled = serializers.BooleanField(
            required=False, help_text="false stops deliveries (open ones fail at their next attempt)."
        )

    @extend_schema(responses=WebhookOutput, summary="Get a webhook")
    def get(self, request: TeamAPIRequest, team_slug: str, webhook_id: int) -> Response:
        return Response(WebhookOutput(_webhook(request, webhook_id)).data)

    @extend_schema(
        request=WebhookUpdateInput,
        responses={200: WebhookOutput, 400: ErrorSerializer},
        summary="Change a webhook",
        description="Only the fields sent change; on any error nothing changes.",
    )
    def patch(self, request: TeamAPIRequest, team_slug: str, webhook_id: int) -> Response:
        endpoint = _webhook(request, webhook_id)
        data = self.WebhookUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = services.webhook_endpoint_update(
            endpoint=endpoint, actor=request.membership.user, **data.validated_data
        )
        return Response(WebhookOutput(endpoint).data)

    @extend_schema(responses={204: None}, summary="Delete a webhook and its delivery log")
    def delete(self, request: TeamAPIRequest, team_slug: str, webhook_id: int) -> Response:
        services.webhook_endpoint_delete(endpoint=_webhook(request, webhook_id), actor=request.membership.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["webhooks"])
class WebhookRotateSecretAPI(TeamAPIView):
    required_actions = {"POST": "webhooks.manage"}

    @extend_schema(
        request=None,
        responses={200: WebhookWithSecretOutput},
        summary="Rotate a webhook's signing secret",
        description="The response holds the new secret, shown this once; the previous one also signs for 24 hours.",
    )
    def post(self, request: TeamAPIRequest, team_slug: str, webhook_id: int) -> Response:
        endpoint, secret = services.webhook_endpoint_rotate_secret(
            endpoint=_webhook(request, webhook_id), actor=request.membership.user
        )
        return _with_secret(endpoint, secret)


@extend_schema(tags=["webhooks"])
class WebhookTestAPI(TeamAPIView):
    required_actions = {"POST": "webhooks.manage"}

    @extend_schema(
        request=None,
        responses={
            201: DeliveryOutput,
            409: OpenApiResponse(ErrorSerializer, description="The webhook is disabled"),
            429: OpenApiResponse(ErrorSerializer, description="Five test events a minute at most"),
        },
        summary="Send a webhook a test event",
        description="A signed `webhook.test` event to this webhook only, retried like any other; the delivery's "
        "status shows how it went.",
    )
    def post(self, request: TeamAPIRequest, team_slug: str, webhook_id: int) -> Response:
        delivery = services.webhook_test_send(endpoint=_webhook(request, webhook_id), actor=request.membership.user)
        return Response(DeliveryOutput(delivery).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["webhooks"])
class DeliveryListAPI(TeamAPIView):
    required_actions = {"GET": "webhooks.view"}

    @extend_schema(
        operation_id="v1_teams_webhooks_deliveries_list",  # paginated: not a list of the default shape
        parameters=PAGE_PARAMETERS,
        responses=DeliveryPageOutput,
        summary="List a webhook's deliveries, newest first",
    )
    def get(self, request: TeamAPIRequest, team_slug: str, webhook_id: int) -> Response:
        endpoint = _webhook(request, webhook_id)
        paginator = DeliveryPagination()
        page = paginator.paginate_queryset(selectors.delivery_list(team=request.team, endpoint=endpoint), request)
        return paginator.get_paginated_response(DeliveryOutput(page, many=True).data)


@extend_schema(tags=["webhooks"])
class DeliveryDetailAPI(TeamAPIView):
    required_actions = {"GET": "webhooks.view"}

    @extend_schema(responses=DeliveryOutput, summary="Get a delivery")
    def get(self, request: TeamAPIRequest, team_slug: str, delivery_id: int) -> Response:
        return Response(DeliveryOutput(_delivery(request, delivery_id)).data)


@extend_schema(tags=["webhooks"])
class DeliveryResendAPI(TeamAPIView):
    required_actions = {"POST": "webhooks.manage"}

    @extend_schema(
        request=None,
        responses={
            200: DeliveryOutput,
            409: OpenApiResponse(
                ErrorSerializer, description="Delivered already, still being retried, or the webhook is disabled"
            ),
        },
        summary="Resend a failed delivery",
        description="The same event, with the same id, sent again now.",
    )
    def post(self, request: TeamAPIRequest, team_slug: str, delivery_id: int) -> Response:
        delivery = services.delivery_resend(delivery=_delivery(request, delivery_id), actor=request.membership.user)
        return Response(DeliveryOutput(delivery).data)
