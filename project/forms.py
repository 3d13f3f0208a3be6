"""Form fields shared by the apps."""

from __future__ import annotations

from datetime import date
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from project.errors import ServiceError
from project.params import EARLIEST_YEAR, LATEST_YEAR, in_range


class BoundedDateField(forms.DateField):
    """A date a query can use: 9999-12-31 plus a day, or year 1 in a time zone, would overflow (a 500 before)."""

    def validate(self, value: Any) -> None:
        super().validate(value)
        if isinstance(value, date) and not in_range(value):
            raise ValidationError(f"Choose a date between {EARLIEST_YEAR}-01-01 and {LATEST_YEAR}-12-31.")


class ServiceErrorMixin(forms.Form):
    """A form that shows a service's ServiceError next to its field (or at the top when it names none), so a form and
    the API report the same validation the same way."""

    def add_service_error(self, error: ServiceError) -> None:
        field = error.field if error.field in self.fields else None
        self.add_error(field, error.message)
