"""Exceptions of the tenancy core: one base, each subclass carrying what a client needs.

They know nothing of HTTP; ``app.api.errors`` maps each class to a status and a
problem type in one table.
"""

from __future__ import annotations

import psycopg


class TenancyError(Exception):
    """Base of every error raised by :mod:`app.tenancy`."""

    #: Field-level messages, ``{"field": ["message", ...]}``, for validation-type errors.
    field_errors: dict[str, list[str]] | None = None


class InvalidSlug(TenancyError):
    """The slug cannot name a tenant (format, length or a reserved word)."""

    def __init__(self, slug: object, reason: str) -> None:
        super().__init__(f"invalid tenant slug {slug!r}: {reason}")
        self.slug = slug
        self.reason = reason
        self.field_errors = {"slug": [reason]}


class UnknownPlan(TenancyError):
    """The plan named for a tenant does not exist."""

    def __init__(self, plan: str) -> None:
        super().__init__(f"unknown plan {plan!r}")
        self.plan = plan
        self.field_errors = {"plan": [f"Unknown plan {plan!r}."]}


class TenantAlreadyExists(TenancyError):
    """A tenant with this slug (or a schema with its name) exists already."""

    def __init__(self, slug: str, message: str | None = None) -> None:
        super().__init__(message or f"a tenant with slug {slug!r} already exists")
        self.slug = slug


class TenantNotFound(TenancyError):
    """No tenant has this slug."""

    def __init__(self, slug: str) -> None:
        super().__init__(f"no tenant with slug {slug!r}")
        self.slug = slug


class TenantSuspended(TenancyError):
    """The tenant exists but is suspended: its data is kept and not served."""

    def __init__(self, slug: str) -> None:
        super().__init__(f"tenant {slug!r} is suspended")
        self.slug = slug


class TenantPending(TenancyError):
    """The tenant exists (installed from GitHub) but an operator has not activated it yet."""

    def __init__(self, slug: str) -> None:
        super().__init__(f"tenant {slug!r} is pending: it is not activated yet, so its credentials are refused")
        self.slug = slug


class InvalidApiKey(TenancyError):
    """The API key is malformed, unknown, revoked or does not match its hash."""

    def __init__(self, reason: str = "invalid API key") -> None:
        super().__init__(reason)
        self.reason = reason


class TenantContextError(TenancyError):
    """Tenant data was touched without a tenant bound, or with two tenants in one transaction.

    This is always a programming error. It is raised instead of running the query,
    because the alternative is an empty result that hides the bug, or another
    tenant's rows.
    """


class ProvisioningFailed(TenancyError):
    """Provisioning failed after validation (a migration raised, the connection was lost).

    Nothing was left behind: the row, the schema and the key were rolled back together.
    """

    def __init__(self, slug: str, cause: BaseException) -> None:
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        super().__init__(f"provisioning tenant {slug!r} failed and was rolled back: {first_line}")
        self.slug = slug
        self.cause = cause


class ProvisioningInterrupted(ProvisioningFailed):
    """Provisioning lost its database connection: nothing was created, and trying again may work."""


class UnknownRevision(TenancyError):
    """The tenant migration stream has no such revision."""

    def __init__(self, revision: str) -> None:
        super().__init__(f"unknown tenant schema revision {revision!r}")
        self.revision = revision
        self.field_errors = {"revision": [f"Unknown revision {revision!r}."]}


class FanoutLocked(TenancyError):
    """Another migration fan-out holds the fan-out lock on this database."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"another tenant migration run holds the fan-out lock: {holder}")
        self.holder = holder


class MigrationRunNotFound(TenancyError):
    """The migration ledger has no run with this id."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"no migration run with id {run_id}")
        self.run_id = run_id


class TenantBusy(TenancyError):
    """The tenant is held by a migration or a provisioning, or its tables are in use: try again."""

    def __init__(self, slug: str, reason: str) -> None:
        super().__init__(f"tenant {slug!r} is busy: {reason}")
        self.slug = slug


class InvalidTenantChange(TenancyError):
    """A change to a tenant that breaks a rule (an unknown status, a blank name)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field_errors = {field: [message]}


class ApiKeyNotFound(TenancyError):
    """The tenant has no API key with this id (another tenant's keys do not exist from here)."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"API key {key_id} not found")
        self.key_id = key_id


class ApiKeyAlreadyRevoked(TenancyError):
    """The key was revoked before; revocation is not repeated (its ``revoked_at`` stays)."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"API key {key_id} is already revoked")
        self.key_id = key_id


class LastAdminKey(TenancyError):
    """Revoking this key would leave the tenant without an active admin key.

    Nobody could then manage the tenant's keys through the API; issue another admin
    key first.
    """

    def __init__(self, key_id: int) -> None:
        super().__init__(
            f"API key {key_id} is the tenant's last active admin key; issue another admin key first"
        )
        self.key_id = key_id


class PlacementRefused(TenancyError):
    """A tenant move or cluster operation that cannot be done as asked: not Citus, an unknown
    node, the node the tenant is on already, a schema not distributed yet."""


class MoveFailed(TenancyError):
    """Citus gave up moving a tenant's schema; it stays where it was (retry later)."""

    def __init__(self, slug: str, error: str) -> None:
        super().__init__(f"moving tenant {slug!r} failed; it stays where it was: {error}")
        self.slug = slug


class InvalidEmail(TenancyError):
    """An email address that cannot name a member (shape, length, characters)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field_errors = {field: [reason]}


class InvalidPeriod(TenancyError):
    """A usage period is not a month written ``YYYY-MM`` (or a range runs backwards)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field_errors = {field: [reason]}


class MonthlyQuotaExceeded(TenancyError):
    """The tenant used its plan's monthly allowance of a metric; it resets at ``resets_at``.

    ``problem_extensions`` go into the problem document (the limit, the usage and the
    reset time, ISO 8601 UTC); ``retry_after`` is the seconds until then.
    """

    def __init__(self, metric: str, limit: int, usage: int, resets_at: str, retry_after: int) -> None:
        super().__init__(
            f"The plan allows {limit} {metric} per month and this tenant has used {usage}; "
            f"the count starts again at {resets_at}, or move to a larger plan."
        )
        self.metric = metric
        self.limit = limit
        self.usage = usage
        self.resets_at = resets_at
        self.retry_after = retry_after
        self.problem_extensions = {"quota": metric, "limit": limit, "usage": usage, "resets_at": resets_at}


class PeriodStillOpen(TenancyError):
    """A month cannot be closed before it ended, plus the grace that lets the last counts arrive."""

    def __init__(self, period: str, closable_at: str) -> None:
        super().__init__(f"{period} cannot be closed before {closable_at}: it has not ended, or its last "
                         "usage counts may still be on their way (USAGE_CLOSE_GRACE_SECONDS).")
        self.period = period
        self.closable_at = closable_at


_UNDEFINED_TABLE = "42P01"


def public_table_missing(exc: BaseException) -> str | None:
    """When ``exc`` is a missing public table: why, and the command that fixes it.

    Before ``flask db upgrade`` every request and command fails on a missing public
    table; that is an operator's step left out (the API answers 503 naming it, a command
    exits 1 naming it), not a bug. Public tables are always named with their schema
    (``public.api_keys``), tenant tables never are, so the message tells them apart: no
    query here, on a path where the request's own connection is still held (a second one
    could wait forever behind a pooler of one connection).
    """
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) != _UNDEFINED_TABLE:
        return None
    message = getattr(getattr(orig, "diag", None), "message_primary", None) or str(orig)
    if '"public.' not in message:
        return None  # a tenant table: a bug or a tenant schema behind, not this
    return f"The database is not migrated ({message}): run `flask db upgrade`."


def connection_failed(exc: BaseException) -> bool:
    """A failure on the client's side of the connection: connecting was refused or timed
    out, the host name did not resolve, authentication failed, or the connection dropped.

    psycopg reports these as an OperationalError without a SQLSTATE (no server statement
    failed); ``exc`` may be psycopg's own or SQLAlchemy's wrapper of it.
    """
    error = getattr(exc, "orig", exc)
    return isinstance(error, psycopg.OperationalError) and getattr(error, "sqlstate", None) is None
