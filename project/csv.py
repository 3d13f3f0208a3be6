"""The one CSV writer every export uses: streamed row by row, and safe to open in a spreadsheet.

A cell that starts with =, +, -, @, a tab or a carriage return is read by Excel, LibreOffice and Google Sheets as a
formula (CSV injection: endpoint names, user agents, relay methods and ids all come from outside). Such text cells
get a leading apostrophe, which spreadsheets show as plain text (OWASP's advice). Numbers are written as numbers,
so a negative amount stays a number.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any

from django.http import StreamingHttpResponse

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """A text cell a spreadsheet would evaluate, made inert; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


class _Echo:
    """A file-like object whose write() returns the line, so csv.writer can feed a streaming response."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[Sequence[Any]]) -> Iterable[str]:
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow([neutralise(cell) for cell in row])


def csv_response(filename: str, rows: Iterable[Sequence[Any]]) -> StreamingHttpResponse:
    """A streamed CSV download named `filename`.csv."""
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response
