"""Every error is ``application/problem+json`` (RFC 9457): one table, one handler per family.

The table maps exception classes to a status, a stable ``type`` URI and a title;
lookups walk the class's MRO, so a subclass is covered by its base's entry. Routing
404/405, webargs' 422, oversized bodies and unexpected exceptions come out in the same
shape. Internal details (tracebacks, SQL) are logged, never sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, json
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from app.pagination import InvalidCursor
from app.schemas.problems import PROBLEM_BASE
from app.services.errors import (
    Conflict,
    InvitationExpired,
    InvitationUsed,
    LastOwner,
    NotAllowed,
    NotFound,
    QuotaExceeded,
)
from app.services.github import DeliveryFailed
from app.services.github_sync import SyncUnavailable
from app.tenancy.errors import (
    ApiKeyAlreadyRevoked,
    ApiKeyNotFound,
    InvalidApiKey,
    InvalidEmail,
    InvalidPeriod,
    InvalidSlug,
    InvalidTenantChange,
    LastAdminKey,
    MigrationRunNotFound,
    MonthlyQuotaExceeded,
    MoveFailed,
    PeriodStillOpen,
    PlacementRefused,
    ProvisioningFailed,
    ProvisioningInterrupted,
    TenantAlreadyExists,
    TenantBusy,
    TenantContextError,
    TenantNotFound,
    TenantPending,
    TenantSuspended,
    UnknownPlan,
    public_table_missing,
)
from app.tenancy.jwt_tokens import KeysUnavailable

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    status: int
    slug: str
    title: str
    #: Send the exception's message as ``detail``; False for errors whose text is internal.
    public_detail: bool = True

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug


VALIDATION = ProblemType(422, "validation-error", "Request validation failed")
INTERNAL = ProblemType(500, "internal-error", "Internal server error", public_detail=False)
DATABASE_UNAVAILABLE = ProblemType(503, "database-unavailable", "Database unavailable", public_detail=False)
NOT_MIGRATED = ProblemType(503, "database-not-migrated", "Database not migrated")


ERRORS: dict[type[BaseException], ProblemType] = {
    InvalidSlug: VALIDATION,
    UnknownPlan: VALIDATION,
    InvalidTenantChange: VALIDATION,
    InvalidCursor: VALIDATION,
    InvalidEmail: VALIDATION,
    TenantAlreadyExists: ProblemType(409, "tenant-exists", "Tenant already exists"),
    TenantNotFound: ProblemType(404, "not-found", "Not found"),
    TenantBusy: ProblemType(409, "tenant-busy", "Tenant busy"),
    MigrationRunNotFound: ProblemType(404, "not-found", "Not found"),
    NotFound: ProblemType(404, "not-found", "Not found"),
    Conflict: ProblemType(409, "conflict", "Conflict"),
    QuotaExceeded: ProblemType(403, "quota-exceeded", "Quota exceeded"),
    # The same type as a plan's repository quota; 429 with Retry-After: it resets by itself.
    MonthlyQuotaExceeded: ProblemType(429, "quota-exceeded", "Quota exceeded"),
    InvalidPeriod: VALIDATION,
    PeriodStillOpen: ProblemType(409, "period-open", "Period still open"),
    InvalidApiKey: ProblemType(401, "unauthorized", "Unauthorized"),
    TenantSuspended: ProblemType(403, "tenant-suspended", "Tenant suspended"),
    TenantPending: ProblemType(403, "tenant-pending", "Tenant pending activation"),
    ApiKeyNotFound: ProblemType(404, "not-found", "Not found"),
    ApiKeyAlreadyRevoked: ProblemType(409, "api-key-revoked", "API key already revoked"),
    LastAdminKey: ProblemType(409, "last-admin-key", "Last active admin key"),
    ProvisioningFailed: ProblemType(
        500, "provisioning-failed", "Provisioning failed; nothing was created", public_detail=False
    ),
    ProvisioningInterrupted: ProblemType(
        503, "database-unavailable", "Database connection lost; nothing was created, try again",
        public_detail=False,
    ),
    PlacementRefused: ProblemType(409, "placement-refused", "Placement refused"),
    MoveFailed: ProblemType(503, "move-failed", "Move failed; the tenant stays where it was"),
    DeliveryFailed: ProblemType(
        500, "webhook-failed", "The delivery could not be applied; it is recorded as failed", public_detail=False
    ),
    SyncUnavailable: ProblemType(409, "github-sync-unavailable", "GitHub sync unavailable"),
    NotAllowed: ProblemType(403, "forbidden", "Forbidden"),
    LastOwner: ProblemType(409, "last-owner", "Last active owner"),
    InvitationUsed: ProblemType(409, "invitation-used", "Invitation already used"),
    InvitationExpired: ProblemType(410, "invitation-expired", "Invitation expired"),
    KeysUnavailable: ProblemType(503, "service-unavailable", "The identity provider's keys are unavailable; "
                                 "try again", public_detail=False),
    TenantContextError: INTERNAL,
    OperationalError: DATABASE_UNAVAILABLE,
    PoolTimeout: DATABASE_UNAVAILABLE,
}

#: Problem types of plain HTTP errors, by status.
HTTP_TYPES: dict[int, str] = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "too-many-requests",
    503: "service-unavailable",
}


def problem(
    status: int,
    type_slug: str,
    title: str,
    detail: str | None = None,
    *,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    """The problem document; ``extensions`` are extra members (RFC 9457), e.g. a quota's limit."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + type_slug, "title": title, "status": status}
    body["detail"] = detail or title
    if errors:
        body["errors"] = errors
    for name, value in (extensions or {}).items():
        body.setdefault(name, value)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tenantry"'
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def lookup(exc: BaseException) -> ProblemType | None:
    # A lost connection is not always an OperationalError: psycopg raises InterfaceError
    # ("the connection is closed") on a connection the server dropped; SQLAlchemy flags
    # every error it recognises as a disconnect.
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return DATABASE_UNAVAILABLE
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return None


def _flatten_webargs(messages: Any) -> dict[str, Any]:
    """webargs nests messages by location (``{"json": {"name": [...]}}``); clients want fields."""
    if not isinstance(messages, dict):
        return {"_schema": messages if isinstance(messages, list) else [str(messages)]}
    flat: dict[str, Any] = {}
    for location, fields in messages.items():
        if isinstance(fields, dict):
            flat.update(_dotted(fields))
        else:
            flat["_" + str(location)] = fields
    return flat


def _dotted(fields: dict[Any, Any], prefix: str = "") -> dict[str, list[str]]:
    """Nested messages (a list's items, a nested object) as dotted names: ``{"ids.0": [...]}``."""
    flat: dict[str, list[str]] = {}
    for name, messages in fields.items():
        if isinstance(messages, dict):
            flat.update(_dotted(messages, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = messages if isinstance(messages, list) else [str(messages)]
    return flat


def handle_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    errors = _flatten_webargs(data["messages"]) if "messages" in data else None
    detail: str | None
    if status == 400 and errors and list(errors) == ["_json"]:
        detail = "The request body is not valid JSON."
        errors = None
    elif status == 422:
        detail = "One or more fields are invalid; see errors."
    else:
        detail = exc.description
    headers = {k: v for k, v in exc.get_headers() if k.lower() not in {"content-type", "content-length"}}
    return problem(
        status,
        HTTP_TYPES.get(status, "bad-request" if status < 500 else "internal-error"),
        VALIDATION.title if status == 422 else exc.name,
        detail,
        errors=errors,
        headers=headers,
    )


def handle_exception(exc: Exception) -> Response:
    missing = public_table_missing(exc)
    if missing is not None:
        log.warning("request %s: %s", g.get("request_id", "-"), missing, extra={"event": "db.not_migrated"})
        return problem(NOT_MIGRATED.status, NOT_MIGRATED.slug, NOT_MIGRATED.title, missing)
    kind = lookup(exc) or INTERNAL
    if isinstance(exc, TenantContextError):  # the runtime guard refused: fail closed, and say where
        log.error("tenant guard refused request %s: %s", g.get("request_id", "-"), exc, exc_info=exc)
    elif kind.status >= 500:
        log.error("%s (request %s): %s", kind.slug, g.get("request_id", "-"), exc, exc_info=exc)
    if not kind.public_detail:
        return problem(kind.status, kind.slug, kind.title)
    return problem(
        kind.status, kind.slug, kind.title, str(exc), errors=getattr(exc, "field_errors", None),
        extensions=getattr(exc, "problem_extensions", None), headers=_retry_after(exc),
    )


def _retry_after(exc: Exception) -> dict[str, str] | None:
    seconds = getattr(exc, "retry_after", None)
    return {"Retry-After": str(seconds)} if isinstance(seconds, int) else None


def register(app: Flask) -> None:
    """Install the handlers; call after flask-smorest's ``Api.init_app`` so ours win."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_exception)
