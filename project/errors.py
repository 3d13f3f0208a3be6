"""The error services raise when a business rule refuses an action.

Views turn it into a message next to the field (forms) or a 4xx JSON body (API):
`{"code": ..., "detail": ..., "field": ...}`.
"""

from __future__ import annotations


class ServiceError(Exception):
    status = 400

    def __init__(self, code: str, message: str, *, field: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        if status is not None:
            self.status = status

    def as_dict(self) -> dict[str, str]:
        body = {"code": self.code, "detail": self.message}
        if self.field:
            body["field"] = self.field
        return body
