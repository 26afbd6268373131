"""One fan-out worker: migrates the tenant schemas it is handed, one at a time.

The coordinator (:mod:`app.tenancy.fanout`) runs one :class:`Worker` per thread, each
with its own connection.

Per schema, one transaction: ``lock_timeout``, ``statement_timeout`` and the advisory
lock on the tenant, a check that the schema is at the revision the plan expects, the
path's SQL, ``tenants.schema_revision`` and the ledger's outcome row, COMMIT: one
round trip (:mod:`app.tenancy.pipeline`). When the check fails (the schema is not
where ``public.tenants`` says, or the tenant is gone), that transaction rolls back and
a second one reads the revision actually in the schema first (two round trips) or
hands the schema to Alembic.

The hot path needs psycopg alone: the coordinator renders each path's SQL once (tenant
migrations name their tables unqualified, so the text fits every schema) and hands it
over in the settings, so no SQLAlchemy or Alembic work is done per schema. A schema
the shipped SQL does not fit (see :mod:`app.tenancy.fanout_online`) hands the worker
over to Alembic for good.

The worker keeps one connection and replaces it every ``recycle_after`` schemas: a
PostgreSQL backend caches the catalog of every schema it touches and never frees it.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from . import pipeline
from .fanout_sql import APPLICATION_NAME, Literals, failure, lock_sql, record_sql, timeout_setting
from .naming import quote_ident, schema_name_for, validate_role, validate_slug

#: Errors of the one-round-trip path's check that send the schema down the slower path
#: instead of failing it: division_by_zero (the check's own way to refuse, cheaper than
#: a DO block), undefined_table and invalid_schema_name (no alembic_version, no schema).
#: The same error from the migration itself only costs a second attempt on the slower
#: path, which then reports it.
_UNPLANNED = frozenset({"22012", "42P01", "3F000"})


class RenderedMigrator:
    """Applies the coordinator's pre-rendered SQL, on a psycopg connection it owns and recycles."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.dsn: str = settings["dsn"]
        self.target: str | None = settings["target"]
        self.run_id: int | None = settings.get("run_id")
        self.recycle_after: int = settings.get("recycle_after") or 250
        #: from-revision -> the SQL of the path to the target, for every schema at that revision.
        self.paths: dict[str, tuple[str, ...]] = settings.get("paths") or {}
        #: On Citus, statements go one a message (pipelined): see app.tenancy.pipeline.
        self.pipelined: bool = bool(settings.get("citus"))
        self.literal = Literals()
        self.timeouts_sql = (
            self.literal(timeout_setting(settings.get("lock_timeout"))),
            self.literal(timeout_setting(settings.get("statement_timeout"))),
        )
        self.connection: psycopg.Connection[Any] | None = None
        self.served = 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self.connection is not None and (self.connection.broken or self.served >= self.recycle_after):
            self.connection.close()
            self.connection = None
        if self.connection is None:
            # Autocommit: each schema's BEGIN ... COMMIT travels in the statements themselves,
            # not in a round trip of its own.
            self.connection = psycopg.connect(self.dsn, application_name=APPLICATION_NAME, autocommit=True)
            self.served = 0
        self.served += 1
        return self.connection

    def migrate(self, task: dict[str, Any]) -> dict[str, Any] | None:
        """Move one tenant's schema to the target; None when only Alembic can (nothing changed).

        Never raises for a database error: the result says failed, and whether to retry.
        """
        result: dict[str, Any] = {"tenant_id": task["tenant_id"], "slug": task["slug"]}
        connection = None
        try:
            connection = self._connection()
            outcome = self._migrate(connection, task)
        except psycopg.Error as exc:
            if connection is not None and not connection.broken:
                connection.rollback()
            result.update(failure(exc))
            return result
        if outcome is None:
            return None
        result.update(outcome)
        return result

    def _migrate(self, connection: psycopg.Connection[Any], task: dict[str, Any]) -> dict[str, Any] | None:
        slug = validate_slug(task["slug"])  # the literals below rely on it
        quoted = quote_ident(schema_name_for(slug))
        role = task.get("role")
        # The DDL runs as the tenant's role, so what it creates belongs to it; the ledger
        # writes go back to the worker's own user (app.tenancy.roles).
        become = [f"SELECT set_config('role', {self.literal(validate_role(role))}, true)"] if role else []
        unbecome = ["SELECT set_config('role', 'none', true)"] if role else []
        planned = task.get("revision")
        rendered = self.paths.get(planned) if planned else None
        if rendered is not None:
            # The usual case, in one round trip: the schema is where public.tenants says.
            # The check runs after the lock, in a new snapshot (READ COMMITTED); if it
            # fails, nothing ran and the slower path below looks at what is there.
            try:
                pipeline.execute(connection, [
                    "BEGIN", lock_sql(self.timeouts_sql, slug),
                    f"SELECT 1 / CASE WHEN EXISTS (SELECT 1 FROM public.tenants WHERE id = {int(task['tenant_id'])})"
                    f" AND (SELECT max(version_num) FROM {quoted}.alembic_version) = {self.literal(planned)}"
                    " THEN 1 ELSE 0 END",
                    f"SELECT set_config('search_path', '{quoted}', true)", *become,
                    *rendered, *unbecome,
                    *record_sql(self.literal, self.run_id, task, planned, self.target, "migrated"),
                    "COMMIT",
                ], pipelined=self.pipelined)
                return {"status": "migrated", "from": planned, "to": self.target}
            except psycopg.Error as exc:
                if exc.sqlstate not in _UNPLANNED:
                    raise
                connection.rollback()
        # Two round trips: timeouts, the tenant lock, then, after the lock and in a new
        # snapshot, whether the tenant still exists, its search_path and the revision in
        # its schema; then the path from that revision.
        try:
            found = pipeline.execute(connection, [
                "BEGIN", lock_sql(self.timeouts_sql, slug),
                f"SELECT EXISTS (SELECT 1 FROM public.tenants WHERE id = {int(task['tenant_id'])}),"
                f" set_config('search_path', '{quoted}', true)",
                f"SELECT max(version_num) FROM {quoted}.alembic_version", *become,
            ], rows=(2, 3), pipelined=self.pipelined)
        except psycopg.errors.UndefinedTable:  # no version table (or no schema): Alembic's case
            connection.rollback()
            return None
        (exists, _), (current,) = found[2], found[3]
        if not exists:
            connection.rollback()
            return {"status": "deleted", "from": None, "to": None}
        if current == self.target:
            status, rendered = "current", ()
        else:
            status, rendered = "migrated", self.paths.get(current) if current else None
            if rendered is None:  # no alembic_version, or a revision the coordinator did not foresee
                connection.rollback()
                return None
        # The second and last round trip: the SQL, the ledger, COMMIT. If a statement fails,
        # the server skips the rest (COMMIT included) and migrate() rolls back.
        pipeline.execute(connection, [
            *rendered, *unbecome, *record_sql(self.literal, self.run_id, task, current, self.target, status),
            "COMMIT",
        ], pipelined=self.pipelined)
        return {"status": status, "from": current, "to": self.target}


class Worker:
    """The rendered path first; Alembic online from the first schema that needs it on."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.rendered: RenderedMigrator | None = RenderedMigrator(settings)
        self.online: Any = None

    def migrate(self, task: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        result = self.rendered.migrate(task) if self.rendered is not None else None
        if result is None:
            if self.online is None:
                if self.rendered is not None:  # one connection per worker: hand over
                    self.rendered.close()
                    self.rendered = None
                from .fanout_online import OnlineMigrator

                self.online = OnlineMigrator(self.settings)
            result = self.online.migrate(task)
        result["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    def close(self) -> None:
        if self.rendered is not None:
            self.rendered.close()
        if self.online is not None:
            self.online.close()
