"""Shared REST API pieces: one error shape for every 4xx, and the exception handler that produces it.

Every error body is `{"code": "<machine-readable>", "detail": "<human-readable>"}`, plus
`"errors": {field: [messages]}` for invalid input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ObjectDoesNotExist
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from project.errors import ServiceError

T = TypeVar("T")


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable reason, e.g. `not_found`, `role_above_own`.")
    detail = serializers.CharField(help_text="Human-readable explanation.")
    field = serializers.CharField(required=False, help_text="The input field the error is about, if any.")

    def get_fields(self) -> dict[str, serializers.Field]:
        # "errors" is also the name of Serializer.errors, so it cannot be declared as a class attribute.
        fields = super().get_fields()
        fields["errors"] = serializers.DictField(
            required=False,
            help_text="Per-field messages: {field: [messages]}; for lists and nested objects the value nests the same "
            "way (e.g. {services: {0: [messages]}}); for query parameters {query: [messages]}.",
        )
        return fields


def get_object_or_404_api(fetch: Callable[[], T]) -> T:
    try:
        return fetch()
    except ObjectDoesNotExist:
        raise exceptions.NotFound("Not found.") from None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response(exc.as_dict(), status=exc.status)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = {"code": "invalid", "detail": "The request body is not valid.", "errors": errors}
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = {"code": codes if isinstance(codes, str) else exc.default_code, "detail": str(exc.detail)}
    return response


# What any team API operation may answer besides its own documented outcomes (drf-spectacular postprocessing):
# bad input, no or bad credentials, a role or scope that does not allow it, another team's (or no) object, and the
# rate limit. The gateway API is not throttled. Every error body is the one shape above.
COMMON_ERRORS = {
    "400": "The request is not valid (a parameter, the body, or a NUL character anywhere).",
    "401": "No credentials, or an invalid, expired or revoked token.",
    "403": "Your role or the token's scope does not allow this.",
    "404": "No such team or object (another team's objects are 404 too).",
    "429": "Too many requests: see Retry-After.",
    "503": "The database is unavailable for a moment; nothing was done. Retry after Retry-After seconds.",
}
GATEWAY_ERRORS = ("400", "401", "503")


def add_common_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Document the error answers every operation can give, so clients (and schema checks) can rely on them."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path, operations in result.get("paths", {}).items():
        codes = GATEWAY_ERRORS if path.startswith("/api/gateway/") else tuple(COMMON_ERRORS)
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {**error, "description": COMMON_ERRORS[code]})
    return result
