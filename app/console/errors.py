"""Errors of console pages: a readable page with the status, never a stack trace.

A database that does not answer is a 503 page with an "unavailable" banner (the
operator's first question during an outage is whether it is the database), an
unknown tenant a 404, a refused change (busy, invalid) the page of its status with
the core's message; anything unexpected is logged with its traceback and shown as a
500 page naming the request id, which the log line carries too.
"""

from __future__ import annotations

import logging

from flask import Blueprint, g, render_template
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from app.pagination import InvalidCursor
from app.services.errors import NotFound as RowNotFound
from app.tenancy.errors import (
    ApiKeyNotFound,
    InvalidTenantChange,
    MigrationRunNotFound,
    TenancyError,
    TenantBusy,
    TenantNotFound,
    UnknownPlan,
)

log = logging.getLogger(__name__)

#: Core errors an operator can act on: status and title of their page (the message is the core's).
KNOWN: dict[type[Exception], tuple[int, str]] = {
    TenantNotFound: (404, "Not found"),
    MigrationRunNotFound: (404, "Not found"),
    ApiKeyNotFound: (404, "Not found"),
    RowNotFound: (404, "Not found"),
    TenantBusy: (409, "Tenant busy"),
    InvalidTenantChange: (422, "Invalid change"),
    UnknownPlan: (422, "Unknown plan"),
    InvalidCursor: (400, "Invalid page link"),
}


def database_unavailable(exc: BaseException) -> bool:
    """A connection that could not be made, was lost, or could not be had from the pool in time."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | PoolTimeout)


def handle_http_exception(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    return _page(status, exc.name, exc.description or exc.name)


def handle_exception(exc: Exception) -> ResponseReturnValue:
    if database_unavailable(exc):
        log.error("console: database unavailable (request %s): %s", g.get("request_id", "-"), exc)
        return _page(503, "Database unavailable",
                     "The database does not answer. Pages come back by themselves when it does.", unavailable=True)
    for cls in type(exc).__mro__:
        if cls in KNOWN:
            status, title = KNOWN[cls]
            return _page(status, title, str(exc))
    if isinstance(exc, TenancyError):
        log.warning("console: %s (request %s): %s", type(exc).__name__, g.get("request_id", "-"), exc)
        return _page(409, "Refused", str(exc))
    log.error("console: internal error (request %s)", g.get("request_id", "-"), exc_info=exc)
    return _page(500, "Internal error", "Something went wrong on our side; the log has the details.")


def _page(status: int, title: str, message: str, *, unavailable: bool = False) -> ResponseReturnValue:
    return render_template("console/error.html", status=status, title=title, message=message,
                           unavailable=unavailable, request_id=g.get("request_id")), status


def register(blueprint: Blueprint) -> None:
    """Handlers on the blueprint: for console requests they come before the app's problem+json ones."""
    blueprint.register_error_handler(HTTPException, handle_http_exception)
    blueprint.register_error_handler(Exception, handle_exception)
