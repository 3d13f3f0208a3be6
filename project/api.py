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
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False, help_text="Per-field messages."
    )


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
