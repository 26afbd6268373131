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


def check_id(resource: str, row_id: int) -> None:
    """Ids are bigint: one beyond that range names no row (and must not reach the server as one)."""
    if not 0 < row_id < 2**63:
        raise NotFound(resource, row_id)


class Conflict(ServiceError):
    """The change collides with an existing row (a unique field)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field_errors = {field: [message]}


class QuotaExceeded(ServiceError):
    """The tenant's plan allows no more of this resource: its usage is at (or over) the limit.

    ``problem_extensions`` go into the problem document as members of their own, so a
    client can show the limit without parsing ``detail``.
    """

    def __init__(self, quota: str, limit: int, usage: int) -> None:
        super().__init__(
            f"The plan allows {limit} {quota} and this tenant has {usage}; "
            f"delete some or move to a larger plan."
        )
        self.quota = quota
        self.limit = limit
        self.usage = usage
        self.problem_extensions = {"quota": quota, "limit": limit, "usage": usage}


class NotAllowed(ServiceError):
    """The caller's role may not make this change (403 ``forbidden``): e.g. an admin touching an owner."""


class LastOwner(ServiceError):
    """The change would leave the tenant without an active owner (409 ``last-owner``)."""

    def __init__(self, member_id: int) -> None:
        super().__init__(
            f"member {member_id} is the tenant's last active owner; make another member owner first"
        )
        self.member_id = member_id


class InvitationUsed(ServiceError):
    """The invitation token was accepted before: it is good once (409 ``invitation-used``)."""


class InvitationExpired(ServiceError):
    """The invitation token's time is up (410 ``invitation-expired``); invite the member again."""
