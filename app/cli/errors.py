"""Errors as one line on stderr and exit status 1: a known domain error, a database that is
not migrated or does not answer. Anything else keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
from flask.cli import AppGroup
from sqlalchemy.exc import DBAPIError

from ..tenancy.errors import TenancyError, TenantContextError, connection_failed, public_table_missing


def domain_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a known TenancyError into one line on stderr and exit status 1.

    TenantContextError is a programming error, not a domain outcome: it keeps its traceback.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TenantContextError:
            raise
        except TenancyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


class CommandGroup(AppGroup):
    """A command group whose commands, every one, end in one line and exit status 1 when
    the database is the problem: not migrated (run ``flask db upgrade``), or not reachable.

    Those are an operator's setup, not a bug, and the API answers them with a 503 naming
    the cause; a command printed a SQLAlchemy traceback. Caught here, around the
    subcommand, so no command has to remember it.
    """

    def invoke(self, ctx: click.Context) -> Any:  # noqa: ANN401 - whatever the command returns
        try:
            return super().invoke(ctx)
        except DBAPIError as exc:
            message = database_failure(exc)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            ctx.exit(1)


def database_failure(exc: DBAPIError) -> str | None:
    """Why a command failed, when the database is missing its public tables or did not answer."""
    missing = public_table_missing(exc)
    if missing is not None:
        return missing
    # libpq's text names host, port and user, never the password.
    if connection_failed(exc):
        text = " ".join(str(exc.orig).split())
        return f"The database connection failed ({text}). Check DATABASE_URL and that the server is up."
    return None
