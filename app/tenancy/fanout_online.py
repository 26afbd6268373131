"""The fan-out's general path: Alembic online, per schema, for what cannot be pre-rendered.

The worker (:mod:`app.tenancy.fanout_worker`) applies pre-rendered SQL with psycopg
alone. This migrator takes over for the rest: a schema without ``alembic_version``, a
schema at a revision the coordinator did not render a path for (drift), revisions that
declare ``render_as_sql = False`` (they read data or branch on it) and revisions that
declare ``run_in_transaction = False`` (``CREATE INDEX CONCURRENTLY``), which run in
autocommit mode between two ordinary transactions, under a session-level lock on the
tenant. It costs the worker SQLAlchemy and Alembic (about half a second to import), so
it is loaded only when a schema needs it.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from . import migrations, pipeline, roles
from .fanout_sql import APPLICATION_NAME, Literals, failure, lock_sql, record_sql, timeout_setting
from .locks import LOCK_NAMESPACE
from .naming import quote_ident, schema_name_for, validate_slug

_PREAMBLE = (
    "SELECT set_config('lock_timeout', %(lock_timeout)s, true),"
    " set_config('statement_timeout', %(statement_timeout)s, true),"
    " pg_advisory_xact_lock(%(ns)s, hashtext(%(slug)s))"
)
_RECORD_REVISION = "UPDATE public.tenants SET schema_revision = %(rev)s WHERE id = %(id)s"


class OnlineMigrator:
    """Migrates one schema per call through Alembic, on a connection it owns and recycles."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.location: str | None = settings.get("location")
        self.target: str | None = settings["target"]
        self.run_id: int | None = settings.get("run_id")
        self.recycle_after: int = settings.get("recycle_after") or 250
        self.timeouts = {
            "lock_timeout": timeout_setting(settings.get("lock_timeout")),
            "statement_timeout": timeout_setting(settings.get("statement_timeout")),
        }
        self.literal = Literals()
        self.pipelined: bool = bool(settings.get("citus"))  # see app.tenancy.pipeline
        self.timeouts_sql = (
            self.literal(self.timeouts["lock_timeout"]), self.literal(self.timeouts["statement_timeout"]),
        )
        self.engine: Engine = create_engine(
            settings["url"], poolclass=NullPool, connect_args={"application_name": APPLICATION_NAME}
        )
        self.connection: Connection | None = None
        self.served = 0
        migrations.tenant_script(self.location)  # load the scripts once, before the first task

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
        result: dict[str, Any] = {"tenant_id": task["tenant_id"], "slug": task["slug"]}
        try:
            result.update(self._migrate(self._connection(), task))
        except (DBAPIError, psycopg.Error) as exc:
            # psycopg errors come straight from the driver cursor, SQLAlchemy's wrap the rest.
            error = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
            lost = getattr(exc, "connection_invalidated", False)
            if not lost and self.connection is not None and not self.connection.invalidated \
                    and pipeline.driver_of(self.connection).broken:
                self.connection.invalidate()
            result.update(failure(error, lost=lost))
        except Exception as exc:  # a migration script raised: that schema fails, the run goes on
            result.update(failure(exc))
        return result

    def _migrate(self, connection: Connection, task: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        slug = validate_slug(task["slug"])  # the literals below rely on it
        schema_name = schema_name_for(slug)
        quoted = quote_ident(schema_name)
        with connection.begin():
            # Straight on the driver (SQLAlchemy's per-statement work is a third of a
            # schema's client time here); the transaction is still the one begun above.
            driver = pipeline.driver_of(connection)
            # One round trip: timeouts, the tenant lock, then (after the lock, in a new
            # snapshot) whether the tenant still exists, its version table, its search_path.
            exists, versioned, _ = pipeline.execute(driver, [
                lock_sql(self.timeouts_sql, slug),
                f"SELECT EXISTS (SELECT 1 FROM public.tenants WHERE id = {int(task['tenant_id'])}),"
                f" to_regclass('{quoted}.alembic_version') IS NOT NULL,"
                f" set_config('search_path', '{quoted}', true)",
            ], rows=[-1], pipelined=self.pipelined)[-1]
            if not exists:
                return {"status": "deleted", "from": None, "to": None}
            current = None
            if versioned:
                row = driver.execute(f"SELECT version_num FROM {quoted}.alembic_version").fetchone()
                current = row[0] if row else None
            steps = migrations.plan_steps(current, self.target, self.location)
            if not steps:
                pipeline.execute(driver, self._record_sql(task, current, current, "current"), pipelined=self.pipelined)
                return {"status": "current", "from": current, "to": current}
            if all(step.transactional for step in steps):
                # From base (an empty or absent alembic_version), Alembic online knows whether to
                # create the version table; the rendered text always would.
                rendered = migrations.rendered_path(current, self.target, self.location) if current else None
                record = self._record_sql(task, current, self.target, "migrated")
                role = task.get("role")
                roles.become(connection, role)  # what the DDL creates belongs to the tenant's role
                if rendered is not None:  # the path's SQL and the ledger, in one round trip
                    unbecome = ["SELECT set_config('role', 'none', true)"] if role else []
                    pipeline.execute(driver, [*rendered, *unbecome, *record], pipelined=self.pipelined)
                else:
                    migrations.migrate_schema(
                        connection, schema_name, self.target, location=self.location,
                        known=migrations.SchemaState(current, bool(versioned)),
                    )
                    roles.become(connection, None)
                    pipeline.execute(driver, record, pipelined=self.pipelined)
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
                    roles.become(connection, task.get("role"))
                    reached = migrations.migrate_schema(connection, schema_name, stop, location=self.location)
                    roles.become(connection, None)
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
                    if task.get("role"):  # session level here (autocommit): reset in the finally below
                        connection.exec_driver_sql(
                            "SELECT set_config('role', %(r)s, false)", {"r": task["role"]})
                    reached = migrations.migrate_schema(
                        connection, schema_name, stop, location=self.location, outside_transaction=True
                    )
                    connection.exec_driver_sql("RESET ROLE")
                    _refuse_invalid_indexes(connection, schema_name, before)
                    connection.exec_driver_sql(_RECORD_REVISION, {"rev": reached, "id": task["tenant_id"]})
                finally:
                    connection.exec_driver_sql("SELECT pg_advisory_unlock(%(ns)s, hashtext(%(slug)s))", params)
                    connection.exec_driver_sql(
                        "RESET ROLE; RESET statement_timeout; RESET lock_timeout; RESET search_path")
            finally:
                connection.rollback()  # end SQLAlchemy's autobegun no-op transaction
                connection.execution_options(isolation_level=connection.default_isolation_level)
        elapsed_ms = (time.perf_counter() - started) * 1000
        with connection.begin():
            record = self._record_sql(task, current, reached, "migrated", elapsed_ms)
            pipeline.execute(pipeline.driver_of(connection), record, pipelined=self.pipelined)
        return {"status": "migrated", "from": current, "to": reached}

    def _record_sql(
        self, task: dict[str, Any], before: str | None, after: str | None, status: str,
        elapsed_ms: float | None = None,
    ) -> list[str]:
        return record_sql(self.literal, self.run_id, task, before, after, status, elapsed_ms)


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
            "drop them (DROP INDEX CONCURRENTLY IF EXISTS: on Citus the worker has none) and run the migration again"
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
