"""What both fan-out migrators send and report, on the same terms.

The rendered path (:mod:`app.tenancy.fanout_worker`) and the Alembic path
(:mod:`app.tenancy.fanout_online`) open every schema transaction with the same
statement (timeouts, ``application_name``, the tenant's advisory lock), record its
outcome with the same SQL (``public.tenants`` and the ledger) and describe a failure
the same way. It lives below both, so the worker can hand over to the online path
without the two importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import sql

from .errors import connection_failed
from .locks import LOCK_NAMESPACE
from .naming import validate_slug

#: SQLSTATEs worth another attempt: lock_not_available (lock_timeout), deadlock, serialization,
#: too many connections, server starting or shutting down.
RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001", "53300", "57P03", "57P01"})

#: How worker connections show in pg_stat_activity; ``<this>:<slug>`` while a schema is migrated.
APPLICATION_NAME = "tenantry-fanout-worker"


class Literals:
    """``value`` as a SQL literal, quoted by psycopg; revisions and timeouts repeat, so cached."""

    def __init__(self) -> None:
        self._cache: dict[Any, str] = {}

    def __call__(self, value: Any) -> str:
        quoted = self._cache.get(value)
        if quoted is None:
            quoted = self._cache[value] = sql.Literal(value).as_string(None)
        return quoted


def lock_sql(timeouts_sql: tuple[str, str], slug: str) -> str:
    """A schema transaction's first statement: its lock and statement timeouts (SQL literals),
    its name (the tenant, for pg_stat_activity, also while it waits) and the tenant's
    advisory lock. ``slug`` must be validated: it is written into the text."""
    return (
        f"SELECT set_config('lock_timeout', {timeouts_sql[0]}, true),"
        f" set_config('statement_timeout', {timeouts_sql[1]}, true),"
        f" set_config('application_name', '{APPLICATION_NAME}:{slug}', true),"
        f" pg_advisory_xact_lock({LOCK_NAMESPACE}, hashtext('{slug}'))"
    )


def record_sql(
    literal: Callable[[Any], str], run_id: int | None, task: dict[str, Any],
    before: str | None, after: str | None, status: str, elapsed_ms: float | None = None,
) -> list[str]:
    """The revision in public.tenants and the ledger row, as literal SQL for the same round trip.

    ``duration_ms`` is the schema's transaction time on the server (lock wait
    included), or ``elapsed_ms`` when the work spanned several transactions.
    """
    duration = "extract(epoch FROM clock_timestamp() - now()) * 1000" if elapsed_ms is None \
        else f"{float(elapsed_ms):.3f}"
    slug = validate_slug(task["slug"])
    tenant_id = int(task["tenant_id"])
    statements = [f"UPDATE public.tenants SET schema_revision = {literal(after)} WHERE id = {tenant_id}"]
    if run_id is not None:
        statements.append(
            "INSERT INTO public.migration_outcomes (run_id, tenant_id, tenant_slug, from_revision,"
            " to_revision, status, attempts, duration_ms) VALUES"
            f" ({int(run_id)}, {tenant_id}, '{slug}', {literal(before)},"
            f" {literal(after)}, {literal(status)}, {int(task.get('attempt', 1))}, {duration})"
        )
    return statements


def failure(error: BaseException, *, lost: bool = False) -> dict[str, Any]:
    """A failed schema's result: the error's first line, and whether another attempt may succeed."""
    sqlstate = getattr(error, "sqlstate", None)
    return {
        "status": "failed", "error": first_line(error), "sqlstate": sqlstate,
        # a lost or refused connection is worth another attempt too
        "retryable": sqlstate in RETRYABLE_SQLSTATES or lost or connection_failed(error),
    }


def timeout_setting(seconds: float | None) -> str:
    """A PostgreSQL duration setting; 0 disables the timeout."""
    return f"{round((seconds or 0) * 1000)}ms"


def first_line(exc: BaseException | object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
