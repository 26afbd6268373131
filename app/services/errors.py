"""Exceptions raised by the tenant-data services; ``app.api.errors`` maps them to HTTP."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the tenant-data service errors."""

    field_errors: dict[str, list[str]] | None = None


class NotFound(ServiceError):
    """No such row in the caller's tenant (another tenant's rows do not exist from here)."""

    def __init__(self, resource: str, ident: object) -> None:
        super().__init__(f"{resource} {ident} not found")
        self.resource = resource
        self.ident = ident


class Conflict(ServiceError):
    """The change collides with an existing row (a unique field)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field_errors = {field: [message]}
