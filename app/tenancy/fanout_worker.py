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

from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from . import migrations
from .locks import LOCK_NAMESPACE
from .naming import quote_ident

#: SQLSTATEs worth another attempt: lock_not_available (lock_timeout), deadlock, serialization.
RETRYABLE_SQLSTATES = frozenset({"55P03", "40P01", "40001"})

_PREAMBLE = (
    "SELECT set_config('lock_timeout', %(lock_timeout)s, true),"
    " set_config('statement_timeout', %(statement_timeout)s, true),"
    " pg_advisory_xact_lock(%(ns)s, hashtext(%(slug)s))"
)
_TENANT = (
    "SELECT schema_name, to_regclass(quote_ident(schema_name) || '.alembic_version') IS NOT NULL"
    " FROM public.tenants WHERE id = %(id)s"
)
_RECORD_REVISION = "UPDATE public.tenants SET schema_revision = %(rev)s WHERE id = %(id)s"
_RECORD_OUTCOME = (
    "INSERT INTO public.migration_outcomes"
    " (run_id, tenant_id, tenant_slug, from_revision, to_revision, status, attempts, duration_ms)"
    " VALUES (%(run_id)s, %(id)s, %(slug)s, %(from)s, %(to)s, %(status)s, %(attempts)s, %(ms)s)"
)


class SchemaMigrator:
    """Migrates one schema per call on a connection it owns and recycles."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.location: str | None = settings.get("location")
        self.target: str | None = settings["target"]
        self.run_id: int | None = settings.get("run_id")
        self.recycle_after: int = settings.get("recycle_after") or 250
        self.timeouts = {
            "lock_timeout": _ms(settings.get("lock_timeout")),
            "statement_timeout": _ms(settings.get("statement_timeout")),
        }
        self.engine: Engine = create_engine(settings["url"], poolclass=NullPool)
        self.connection: Connection | None = None
        self.served = 0
        self.started = 0.0
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
        started = self.started = time.perf_counter()
        result: dict[str, Any] = {"tenant_id": task["tenant_id"], "slug": task["slug"]}
        try:
            result.update(self._migrate(self._connection(), task))
        except DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            result.update(
                status="failed", error=first_line(exc.orig or exc), sqlstate=sqlstate,
                retryable=sqlstate in RETRYABLE_SQLSTATES,
            )
        except Exception as exc:  # a migration script raised: that schema fails, the run goes on
            result.update(status="failed", error=first_line(exc), sqlstate=None, retryable=False)
        result["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    def _migrate(self, connection: Connection, task: dict[str, Any]) -> dict[str, Any]:
        params = {**self.timeouts, "ns": LOCK_NAMESPACE, "slug": task["slug"], "id": task["tenant_id"]}
        with connection.begin():
            connection.exec_driver_sql(_PREAMBLE, params)
            row = connection.exec_driver_sql(_TENANT, params).first()
            if row is None:
                return {"status": "deleted", "from": None, "to": None}
            schema_name, versioned = row
            current = connection.exec_driver_sql(
                f"SELECT version_num FROM {quote_ident(schema_name)}.alembic_version"
            ).scalar() if versioned else None
            steps = migrations.plan_steps(current, self.target, self.location)
            if not steps:
                self._record(connection, task, current, current, "current")
                return {"status": "current", "from": current, "to": current}
            if all(step.transactional for step in steps):
                reached = migrations.migrate_schema(
                    connection, schema_name, self.target, location=self.location
                )
                self._record(connection, task, current, reached, "migrated")
                return {"status": "migrated", "from": current, "to": reached}
        return self._migrate_in_segments(connection, task, schema_name, current, steps)

    def _migrate_in_segments(
        self, connection: Connection, task: dict[str, Any], schema_name: str,
        current: str | None, steps: list[migrations.Step],
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
                    reached = migrations.migrate_schema(
                        connection, schema_name, stop, location=self.location, outside_transaction=True
                    )
                    connection.exec_driver_sql(_RECORD_REVISION, {"rev": reached, "id": task["tenant_id"]})
                finally:
                    connection.exec_driver_sql("SELECT pg_advisory_unlock(%(ns)s, hashtext(%(slug)s))", params)
                    connection.exec_driver_sql("RESET statement_timeout; RESET lock_timeout; RESET search_path")
            finally:
                connection.rollback()  # end SQLAlchemy's autobegun no-op transaction
                connection.execution_options(isolation_level=connection.default_isolation_level)
        with connection.begin():
            self._record(connection, task, current, reached, "migrated")
        return {"status": "migrated", "from": current, "to": reached}

    def _record(
        self, connection: Connection, task: dict[str, Any], before: str | None, after: str | None, status: str
    ) -> None:
        connection.exec_driver_sql(_RECORD_REVISION, {"rev": after, "id": task["tenant_id"]})
        if self.run_id is None:
            return
        connection.exec_driver_sql(_RECORD_OUTCOME, {
            "run_id": self.run_id, "id": task["tenant_id"], "slug": task["slug"], "from": before,
            "to": after, "status": status, "attempts": task.get("attempt", 1),
            "ms": round((time.perf_counter() - self.started) * 1000, 3),
        })


def _segments(steps: list[migrations.Step]) -> list[tuple[bool, str | None]]:
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

