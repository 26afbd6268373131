"""One fan-out worker: a process that migrates the tenant schemas it is handed, one at a time.

Workers are processes, not threads, because Alembic's ``op`` and ``context`` are
process-global. The coordinator (:mod:`app.tenancy.fanout`) starts them with
``python -m app.tenancy.fanout_worker`` and talks JSON lines over the pipes:

- stdin, first line: the settings (database URL, target, timeouts, run id), never argv,
  so the URL's password does not show in ``ps``; then one task per line.
- stdout: ``{"ready": true}``, then one result per task.

When the coordinator dies, stdin reaches EOF and the worker exits after the schema it
is on (whose transaction commits or rolls back whole).

Per schema, one transaction: ``lock_timeout``, ``statement_timeout`` and the advisory
lock on the tenant in one round trip; the revision actually in the schema; the
Alembic steps; ``tenants.schema_revision``; the outcome row of the ledger; COMMIT.
Revisions that declare ``run_in_transaction = False`` are applied between two such
transactions in autocommit mode, under a session-level lock on the tenant.

The worker keeps one connection and replaces it every ``recycle_after`` schemas: a
PostgreSQL backend caches the catalog of every schema it touches and never frees it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from . import migrations
from .locks import LOCK_NAMESPACE
from .naming import quote_ident, schema_name_for, validate_slug

#: SQLSTATEs worth another attempt: lock_not_available (lock_timeout), deadlock, serialization,
#: too many connections, server starting or shutting down.
RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001", "53300", "57P03", "57P01"})

_PREAMBLE = (
    "SELECT set_config('lock_timeout', %(lock_timeout)s, true),"
    " set_config('statement_timeout', %(statement_timeout)s, true),"
    " pg_advisory_xact_lock(%(ns)s, hashtext(%(slug)s))"
)
_RECORD_REVISION = "UPDATE public.tenants SET schema_revision = %(rev)s WHERE id = %(id)s"


class SchemaMigrator:
    """Migrates one schema per call on a connection it owns and recycles."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.location: str | None = settings.get("location")
        self.target: str | None = settings["target"]
        self.run_id: int | None = settings.get("run_id")
        self.recycle_after: int = settings.get("recycle_after") or 250
        self.timeouts = {
            "lock_timeout": _ms(settings.get("lock_timeout")),
            "statement_timeout": _ms(settings.get("statement_timeout")),
        }
        self._literals: dict[Any, str] = {}
        self.timeouts_sql = tuple(self.literal(self.timeouts[name]) for name in ("lock_timeout", "statement_timeout"))
        self.engine: Engine = create_engine(settings["url"], poolclass=NullPool)
        self.connection: Connection | None = None
        self.served = 0
        migrations.tenant_script(self.location)  # load the scripts once, before the first task

    def literal(self, value: Any) -> str:
        """``value`` as a SQL literal, quoted by psycopg (revisions and timeouts repeat: cached)."""
        quoted = self._literals.get(value)
        if quoted is None:
            quoted = self._literals[value] = sql.Literal(value).as_string(None)
        return quoted

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        self.engine.dispose()

    def _connection(self) -> Connection:
        if self.connection is not None and (
            self.connection.invalidated or self.served >= self.recycle_after
        ):
            self.connection.close()
            self.connection = None
        if self.connection is None:
            self.connection = self.engine.connect()
            self.served = 0
        self.served += 1
        return self.connection

    def migrate(self, task: dict[str, Any]) -> dict[str, Any]:
        """Move one tenant's schema to the target; never raises for a database error."""
        started = time.perf_counter()
        result: dict[str, Any] = {"tenant_id": task["tenant_id"], "slug": task["slug"]}
        try:
            result.update(self._migrate(self._connection(), task))
        except (DBAPIError, psycopg.Error) as exc:
            # psycopg errors come straight from the driver cursor, SQLAlchemy's wrap the rest.
            error = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
            lost = getattr(exc, "connection_invalidated", False)
            if not lost and self.connection is not None and not self.connection.invalidated \
                    and self.connection.connection.driver_connection.broken:
                self.connection.invalidate()
            sqlstate = getattr(error, "sqlstate", None)
            result.update(
                status="failed", error=first_line(error), sqlstate=sqlstate,
                # a lost or refused connection (no SQLSTATE) is worth another attempt too
                retryable=sqlstate in RETRYABLE_SQLSTATES or lost or (
                    sqlstate is None and isinstance(error, psycopg.OperationalError)
                ),
            )
        except Exception as exc:  # a migration script raised: that schema fails, the run goes on
            result.update(status="failed", error=first_line(exc), sqlstate=None, retryable=False)
        result["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    def _migrate(self, connection: Connection, task: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        slug = validate_slug(task["slug"])  # the literals below rely on it
        schema_name = schema_name_for(slug)
        quoted = quote_ident(schema_name)
        with connection.begin():
            # Straight on the driver (SQLAlchemy's per-statement work is a third of a
            # schema's client time here); the transaction is still the one begun above.
            cursor = connection.connection.driver_connection.cursor()
            # One round trip: timeouts, the tenant lock, then (after the lock, in a new
            # snapshot) whether the tenant still exists, its version table, its search_path.
            exists, versioned, _ = _last_row(cursor.execute(
                f"SELECT set_config('lock_timeout', {self.timeouts_sql[0]}, true),"
                f" set_config('statement_timeout', {self.timeouts_sql[1]}, true),"
                f" pg_advisory_xact_lock({LOCK_NAMESPACE}, hashtext('{slug}'));"
                f" SELECT EXISTS (SELECT 1 FROM public.tenants WHERE id = {int(task['tenant_id'])}),"
                f" to_regclass('{quoted}.alembic_version') IS NOT NULL,"
                f" set_config('search_path', '{quoted}', true)"
            ))
            if not exists:
                return {"status": "deleted", "from": None, "to": None}
            current = None
            if versioned:
                row = cursor.execute(f"SELECT version_num FROM {quoted}.alembic_version").fetchone()
                current = row[0] if row else None
            steps = migrations.plan_steps(current, self.target, self.location)
            if not steps:
                cursor.execute(self._record_sql(task, current, current, "current"))
                return {"status": "current", "from": current, "to": current}
            if all(step.transactional for step in steps):
                # From base (an empty or absent alembic_version), Alembic online knows whether to
                # create the version table; the rendered text always would.
                rendered = migrations.rendered_path(current, self.target, self.location) if current else None
                record = self._record_sql(task, current, self.target, "migrated")
                if rendered is not None:  # the path's SQL and the ledger, in one round trip
                    cursor.execute(rendered + record)
                else:
                    migrations.migrate_schema(
                        connection, schema_name, self.target, location=self.location,
                        known=migrations.SchemaState(current, bool(versioned)),
                    )
                    cursor.execute(record)
                return {"status": "migrated", "from": current, "to": self.target}
        return self._migrate_in_segments(connection, task, schema_name, current, steps, started)

    def _migrate_in_segments(
        self, connection: Connection, task: dict[str, Any], schema_name: str,
        current: str | None, steps: tuple[migrations.Step, ...], started: float,
    ) -> dict[str, Any]:
        """A path with a ``run_in_transaction = False`` revision: transactions around it.

        Each segment commits on its own and records the revision it reached, so a crash
        leaves the schema fully at some revision of the path; the non-transactional
        revision itself must be safe to run again (``IF NOT EXISTS`` …).
        """
        params = {**self.timeouts, "ns": LOCK_NAMESPACE, "slug": task["slug"], "id": task["tenant_id"]}
        reached = current
        for transactional, stop in _segments(steps):
            if transactional:
                with connection.begin():
                    connection.exec_driver_sql(_PREAMBLE, params)
                    reached = migrations.migrate_schema(connection, schema_name, stop, location=self.location)
                    connection.exec_driver_sql(_RECORD_REVISION, {"rev": reached, "id": task["tenant_id"]})
                continue
            connection.execution_options(isolation_level="AUTOCOMMIT")
            try:
                connection.exec_driver_sql(
                    "SELECT set_config('statement_timeout', %(statement_timeout)s, false),"
                    " set_config('lock_timeout', %(lock_timeout)s, false),"
                    " pg_advisory_lock(%(ns)s, hashtext(%(slug)s))", params,
                )
                try:
                    before = reached
                    reached = migrations.migrate_schema(
                        connection, schema_name, stop, location=self.location, outside_transaction=True
                    )
                    _refuse_invalid_indexes(connection, schema_name, before)
                    connection.exec_driver_sql(_RECORD_REVISION, {"rev": reached, "id": task["tenant_id"]})
                finally:
                    connection.exec_driver_sql("SELECT pg_advisory_unlock(%(ns)s, hashtext(%(slug)s))", params)
                    connection.exec_driver_sql("RESET statement_timeout; RESET lock_timeout; RESET search_path")
            finally:
                connection.rollback()  # end SQLAlchemy's autobegun no-op transaction
                connection.execution_options(isolation_level=connection.default_isolation_level)
        elapsed_ms = (time.perf_counter() - started) * 1000
        with connection.begin():
            connection.exec_driver_sql(
                self._record_sql(task, current, reached, "migrated", elapsed_ms)
            )
        return {"status": "migrated", "from": current, "to": reached}

    def _record_sql(
        self, task: dict[str, Any], before: str | None, after: str | None, status: str,
        elapsed_ms: float | None = None,
    ) -> str:
        """The revision in public.tenants and the ledger row, as literal SQL for the same round trip.

        ``duration_ms`` is the schema's transaction time on the server (lock wait
        included), or ``elapsed_ms`` when the work spanned several transactions.
        """
        duration = "extract(epoch FROM clock_timestamp() - now()) * 1000" if elapsed_ms is None \
            else f"{float(elapsed_ms):.3f}"
        literal = self.literal
        slug = validate_slug(task["slug"])
        tenant_id = int(task["tenant_id"])
        sql = f";UPDATE public.tenants SET schema_revision = {literal(after)} WHERE id = {tenant_id}"
        if self.run_id is not None:
            sql += (
                ";INSERT INTO public.migration_outcomes (run_id, tenant_id, tenant_slug, from_revision,"
                " to_revision, status, attempts, duration_ms) VALUES"
                f" ({int(self.run_id)}, {tenant_id}, '{slug}', {literal(before)},"
                f" {literal(after)}, {literal(status)}, {int(task.get('attempt', 1))}, {duration})"
            )
        return sql


def _last_row(cursor: Any) -> Any:
    """The first row of the last result of a multi-statement query."""
    row = cursor.fetchone()
    while cursor.nextset():
        row = cursor.fetchone()
    return row


def _refuse_invalid_indexes(connection: Connection, schema_name: str, before: str | None) -> None:
    """A failed ``CREATE INDEX CONCURRENTLY`` leaves an INVALID index that ``IF NOT EXISTS``
    would then skip: never record a revision over one. Alembic has already moved
    ``alembic_version`` (autocommit), so it is put back to ``before``."""
    invalid = connection.exec_driver_sql(
        "SELECT string_agg(i.relname, ', ') FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE i.relnamespace = %(s)s::regnamespace AND NOT x.indisvalid",
        {"s": quote_ident(schema_name)},
    ).scalar()
    if invalid:
        version_table = f"{quote_ident(schema_name)}.alembic_version"
        if before is None:
            connection.exec_driver_sql(f"DELETE FROM {version_table}")
        else:
            connection.exec_driver_sql(f"UPDATE {version_table} SET version_num = %(v)s", {"v": before})
        raise RuntimeError(
            f"INVALID index(es) {invalid} in {schema_name} (a concurrent build failed): "
            "drop them (DROP INDEX CONCURRENTLY) and run the migration again"
        )


def _segments(steps: tuple[migrations.Step, ...]) -> list[tuple[bool, str | None]]:
    """Split a path into runs of transactional steps and single non-transactional ones."""
    segments: list[tuple[bool, str | None]] = []
    for step in steps:
        if step.transactional and segments and segments[-1][0]:
            segments[-1] = (True, step.revision)
        else:
            segments.append((step.transactional, step.revision))
    return segments


def _ms(seconds: float | None) -> str:
    """A PostgreSQL duration setting; 0 disables the timeout."""
    return f"{round((seconds or 0) * 1000)}ms"


def first_line(exc: BaseException | object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main() -> int:
    settings = json.loads(sys.stdin.readline())
    migrator = SchemaMigrator(settings)
    out = sys.stdout
    try:
        out.write(json.dumps({"ready": True}) + "\n")
        out.flush()
        for line in sys.stdin:
            if not line.strip():
                continue
            result = migrator.migrate(json.loads(line))
            out.write(json.dumps(result) + "\n")
            out.flush()
    except (BrokenPipeError, KeyboardInterrupt):
        return 1  # the coordinator is gone or interrupted: the current schema rolled back or committed whole
    finally:
        migrator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

