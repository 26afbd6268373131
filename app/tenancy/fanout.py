"""Migrate many tenant schemas: plan, run them on parallel worker threads, record each outcome.

The coordinator (this module) holds one connection for the whole run. On it:

- a session-level advisory lock that a second fan-out cannot take (it fails at once
  with :class:`FanoutLocked`, naming the run that holds the lock);
- the plan: every selected tenant whose recorded ``schema_revision`` is not the target;
- the ledger: one ``migration_runs`` row, kept up to date while the run goes, and a
  ``migration_outcomes`` row for each schema that failed.

The schemas themselves are migrated by ``--jobs`` worker threads
(:mod:`app.tenancy.fanout_worker`), one transaction per schema, each worker with its
own connection. A worker writes a successful schema's outcome row in that schema's
transaction, so the ledger never claims a change that did not commit. Lock timeouts
are retried later with exponential backoff, after the worker has moved on to other
schemas, so one blocked tenant holds nobody up. Tenants provisioned while the run goes
are picked up before it ends.

Threads, not processes: a worker's time is spent waiting on PostgreSQL (psycopg
releases the GIL), and the usual path is psycopg and pre-rendered SQL, so a thread
costs neither an interpreter start nor message encoding. The rare schema that needs
Alembic online runs under :mod:`app.tenancy.migrations`' lock, one at a time, because
Alembic's ``op`` and ``context`` are process-global.

Killing the coordinator at any moment is safe: each schema's transaction commits or
rolls back whole, the worker connections close with the process, the lock goes with
the coordinator's connection, and the next run marks this one ``aborted`` and converges.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import queue
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sqlalchemy import create_engine, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from . import audit, cluster, fanout_sql, fanout_worker, locks, migrations
from .errors import FanoutLocked, TenantNotFound
from .naming import schema_name_for

log = logging.getLogger(__name__)


def default_jobs() -> int:
    """Parallel workers when not told: schema DDL is mostly waiting on the server."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class FanoutOptions:
    target: str = "head"
    slugs: tuple[str, ...] = ()
    batch: int | None = None
    jobs: int = field(default_factory=default_jobs)
    fail_fast: bool = False
    lock_timeout: float = 3.0
    statement_timeout: float = 0.0  # 0: no limit
    retries: int = 3
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    recycle_after: int = 250  # schemas per worker connection
    location: str | None = None


@dataclass(frozen=True)
class PlannedTenant:
    tenant_id: int
    slug: str
    revision: str | None  # as recorded in public.tenants
    role: str | None = None  # the tenant's database role: its schema's objects belong to it


@dataclass(frozen=True)
class Plan:
    target: str | None
    pending: list[PlannedTenant]  # this run migrates these
    current: list[PlannedTenant]  # already at the target
    deferred: list[PlannedTenant]  # behind, but beyond --batch: a later run takes them

    @property
    def selected(self) -> int:
        return len(self.pending) + len(self.current) + len(self.deferred)


@dataclass(frozen=True)
class TenantOutcome:
    slug: str
    tenant_id: int
    status: str  # migrated | current | failed | deleted
    from_revision: str | None
    to_revision: str | None
    attempts: int
    duration_ms: float
    error: str | None = None


@dataclass
class Counts:
    selected: int = 0  # tenants the run looked at
    total: int = 0  # schemas it works on (grows when tenants are provisioned meanwhile)
    processed: int = 0  # of those, how many have an outcome
    migrated: int = 0
    current: int = 0  # at the target already (from the plan, or found so by a worker)
    failed: int = 0
    deleted: int = 0  # deleted while the run went on
    skipped: int = 0  # not attempted: --fail-fast stopped the run
    remaining: int = 0  # left behind for a later run by --batch


@dataclass
class RunReport:
    run_id: int
    target: str | None
    counts: Counts
    failures: list[TenantOutcome]
    elapsed_s: float
    status: str  # succeeded | failed | aborted

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "succeeded" else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "target": self.target, "status": self.status,
            "elapsed_s": round(self.elapsed_s, 3), **asdict(self.counts),
            "failures": [asdict(f) for f in self.failures],
        }


class Progress(Protocol):
    """What a fan-out reports while it runs; the CLI draws a bar or writes log lines."""

    def started(self, run_id: int, counts: Counts) -> None: ...
    def outcome(self, outcome: TenantOutcome, counts: Counts) -> None: ...
    def retrying(self, slug: str, attempt: int, delay: float, error: str) -> None: ...
    def grew(self, added: int, counts: Counts) -> None: ...


class NoProgress:
    def started(self, run_id: int, counts: Counts) -> None: pass
    def outcome(self, outcome: TenantOutcome, counts: Counts) -> None: pass
    def retrying(self, slug: str, attempt: int, delay: float, error: str) -> None: pass
    def grew(self, added: int, counts: Counts) -> None: pass


# --- planning ---------------------------------------------------------------


def plan(connection: Connection, options: FanoutOptions) -> Plan:
    """Which tenants this run would migrate, from the revisions recorded in ``public.tenants``.

    :raise UnknownRevision: ``options.target`` names no revision.
    :raise TenantNotFound: a slug given in ``options.slugs`` has no tenant.
    """
    target = migrations.resolve_target(options.target, options.location)
    rows = _tenants(connection, options.slugs)
    if options.slugs:
        missing = sorted(set(options.slugs) - {row.slug for row in rows})
        if missing:
            raise TenantNotFound(missing[0])
    pending = [row for row in rows if row.revision != target]
    current = [row for row in rows if row.revision == target]
    deferred: list[PlannedTenant] = []
    if options.batch is not None:
        pending, deferred = pending[: options.batch], pending[options.batch :]
    return Plan(target=target, pending=pending, current=current, deferred=deferred)


def _tenants(connection: Connection, slugs: tuple[str, ...] = ()) -> list[PlannedTenant]:
    sql = "SELECT id, slug, schema_revision, db_role FROM public.tenants"
    params: dict[str, Any] = {}
    if slugs:
        sql += " WHERE slug = ANY(%(slugs)s)"
        params["slugs"] = list(slugs)
    rows = connection.exec_driver_sql(sql + " ORDER BY slug", params).all()
    return [PlannedTenant(*row) for row in rows]


def render_plan_sql(
    connection: Connection, the_plan: Plan, location: str | None = None
) -> Iterator[tuple[PlannedTenant, str | None, str]]:
    """The SQL each pending schema would run: ``(tenant, revision it is at now, sql)``.

    The starting revision is read from each schema's own ``alembic_version``, not the
    ledger, because the SQL has to fit the schema as it is.
    """
    for tenant in the_plan.pending:
        schema = schema_name_for(tenant.slug)
        current = migrations.current_revision(connection, schema)
        yield tenant, current, migrations.render_sql(schema, current, the_plan.target, location=location)


# --- running ----------------------------------------------------------------


def run(url: str, options: FanoutOptions, progress: Progress | None = None) -> RunReport:
    """Migrate the planned schemas; return the report (also kept in the ledger).

    ``url`` is a SQLAlchemy URL string with its password (the workers connect with it).

    :raise FanoutLocked: another run holds the fan-out lock.
    :raise UnknownRevision, TenantNotFound: see :func:`plan`.
    """
    engine = create_engine(url, poolclass=NullPool, connect_args={"application_name": "tenantry-fanout"})
    try:
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            if not locks.try_lock_fanout(connection):
                raise FanoutLocked(describe_holder(connection))
            try:
                return _Run(connection, url, options, progress or NoProgress()).execute()
            finally:
                if not connection.invalidated:
                    locks.unlock_fanout(connection)
    finally:
        engine.dispose()


def describe_holder(connection: Connection) -> str:
    """A sentence naming the run that holds the fan-out lock, for the refused one."""
    pid = locks.fanout_lock_holder(connection)
    if pid is None:
        return "it was released meanwhile; try again"
    row = connection.exec_driver_sql(
        "SELECT id, started_by, hostname, pid, started_at FROM public.migration_runs"
        " WHERE backend_pid = %(pid)s AND status = 'running' ORDER BY id DESC LIMIT 1",
        {"pid": pid},
    ).first()
    if row is None:
        return f"PostgreSQL backend {pid} (no run recorded yet)"
    run_id, started_by, hostname, os_pid, started_at = row
    return f"run {run_id} started by {started_by} on {hostname} (pid {os_pid}) at {started_at:%Y-%m-%d %H:%M:%S%z}"


class _Worker:
    """A worker thread, its inbox, and the tasks handed to it and not answered yet.

    The thread runs :class:`fanout_worker.Worker` on a connection of its own and puts
    ``(self, result)`` on the run's results queue for each task, then ``(self, None)``
    when it stops. A worker spends its time waiting on PostgreSQL, with the GIL
    released, so threads parallelise it as well as processes would, without an
    interpreter to start and messages to encode per worker.
    """

    def __init__(self, number: int, settings: dict[str, Any], results: queue.SimpleQueue[Any]) -> None:
        self.inbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        #: Tasks sent and not answered yet, in order; the first is the one being worked on.
        self.tasks: deque[dict[str, Any]] = deque()
        #: Why the thread stopped early (a bug, not a database error: those are results).
        self.error: str | None = None
        self._aborted = threading.Event()
        # A daemon: if the coordinator dies, its threads die with it and PostgreSQL rolls
        # back whatever transaction they had open.
        self.thread = threading.Thread(
            target=self._serve, args=(settings, results), name=f"tenantry-fanout-{number}", daemon=True
        )
        self.thread.start()

    def _serve(self, settings: dict[str, Any], results: queue.SimpleQueue[Any]) -> None:
        worker = fanout_worker.Worker(settings)
        try:
            while not self._aborted.is_set():
                task = self.inbox.get()
                if task is None or self._aborted.is_set():
                    break
                results.put((self, worker.migrate(task)))
        except BaseException as exc:  # reported as this worker's failure; the run goes on
            log.exception("fan-out worker %s stopped", self.thread.name)
            self.error = fanout_sql.first_line(exc)
        finally:
            try:
                worker.close()
            finally:
                results.put((self, None))

    def send(self, task: dict[str, Any]) -> None:
        self.tasks.append(task)
        self.inbox.put(task)

    def close_input(self, *, abort: bool = False) -> None:
        """No more tasks: the thread stops after the one it is on (``abort``: and skips the rest)."""
        if abort:
            self._aborted.set()
        self.inbox.put(None)


class _Run:
    """One run: the ledger row, the queue, the workers, the retries."""

    def __init__(self, connection: Connection, url: str, options: FanoutOptions, progress: Progress) -> None:
        self.connection = connection
        self.url = url
        self.options = options
        self.progress = progress
        self.counts = Counts()
        self.failures: list[TenantOutcome] = []
        self.queue: deque[dict[str, Any]] = deque()
        self.delayed: list[tuple[float, int, dict[str, Any]]] = []
        self.seen: set[int] = set()
        self.workers: list[_Worker] = []
        self.results: queue.SimpleQueue[tuple[_Worker, dict[str, Any] | None]] = queue.SimpleQueue()
        self._started_workers = 0
        self.stopping = False  # --fail-fast tripped: schedule nothing new
        self.spawn_budget = max(2, options.jobs * 3)
        # Each worker gets its next schema before it finishes the current one, so it never
        # waits for the coordinator; --fail-fast keeps one, to start nothing after a failure.
        self.depth = 1 if options.fail_fast else 2
        self._sequence = 0
        self._flushed = 0.0

    def execute(self) -> RunReport:
        started = time.monotonic()
        self._abort_stale_runs()
        the_plan = plan(self.connection, self.options)
        self.target = the_plan.target
        self.paths = _render_paths(the_plan, self.options.location)
        self.citus = cluster.detect(self.connection) is not None
        self.run_id = self._insert_run(the_plan)
        self.counts.selected = the_plan.selected
        self.counts.total = len(the_plan.pending)
        self.counts.current = len(the_plan.current)
        self.counts.remaining = len(the_plan.deferred)
        self.seen.update(t.tenant_id for t in (*the_plan.pending, *the_plan.current, *the_plan.deferred))
        self.queue.extend(self._task(t) for t in the_plan.pending)
        log.info(
            "fanout.started: run %s, %s schemas to %s", self.run_id, self.counts.total, self.target,
            extra={"event": "fanout.started", "run_id": self.run_id, "target": self.target,
                   "total": self.counts.total, "current": self.counts.current, "deferred": self.counts.remaining},
        )
        self.progress.started(self.run_id, self.counts)
        status = "aborted"
        try:
            self._loop()
            self.counts.skipped = len(self.queue) + len(self.delayed)
            status = "succeeded" if not (self.counts.failed or self.counts.skipped) else "failed"
        finally:
            for worker in self.workers:  # all at once: each finishes the schema it is on
                worker.close_input(abort=status == "aborted")
            deadline = time.monotonic() + (5.0 if status == "aborted" else 60.0)
            for worker in self.workers:
                worker.thread.join(max(0.0, deadline - time.monotonic()))
            if not self.connection.invalidated:
                self._update_run(status)
            c = self.counts
            log.log(
                logging.INFO if status == "succeeded" else logging.WARNING,
                "fanout.finished: run %s %s (%s migrated, %s failed)", self.run_id, status, c.migrated, c.failed,
                extra={"event": "fanout.finished", "run_id": self.run_id, "run_status": status, "target": self.target,
                       "migrated": c.migrated, "current": c.current, "failed": c.failed, "skipped": c.skipped,
                       "deleted": c.deleted, "remaining": c.remaining,
                       "duration_ms": round((time.monotonic() - started) * 1000, 1)},
            )
        return RunReport(
            run_id=self.run_id, target=self.target, counts=self.counts, failures=self.failures,
            elapsed_s=time.monotonic() - started, status=status,
        )

    # -- the loop

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            while self.delayed and self.delayed[0][0] <= now:
                self.queue.append(heapq.heappop(self.delayed)[2])
            self._spawn_workers()
            for worker in self.workers:
                while len(worker.tasks) < self.depth and self.queue and not self.stopping:
                    worker.send(self.queue.popleft())
            busy = any(worker.tasks for worker in self.workers)
            if not busy and (self.stopping or (not self.queue and not self.delayed)):
                if self.stopping or not self._take_newcomers():
                    return
                continue
            timeout = 0.5
            if self.delayed:
                timeout = max(0.0, min(timeout, self.delayed[0][0] - now))
            try:
                self._receive(*self.results.get(timeout=timeout))
                while True:  # everything else that arrived meanwhile, before scheduling more
                    self._receive(*self.results.get_nowait())
            except queue.Empty:
                pass
            if time.monotonic() - self._flushed > 2.0:
                self._update_run("running")

    def _spawn_workers(self) -> None:
        wanted = min(self.options.jobs, len(self.queue) + sum(len(w.tasks) for w in self.workers))
        while len(self.workers) < wanted and not self.stopping:
            if self.spawn_budget <= 0:
                raise RuntimeError("fan-out workers keep stopping; see their errors above")
            self.spawn_budget -= 1
            self._started_workers += 1
            self.workers.append(_Worker(self._started_workers, {
                "url": self.url, "dsn": _libpq_url(self.url), "location": self.options.location,
                "target": self.target, "paths": self.paths,
                "lock_timeout": self.options.lock_timeout,
                "statement_timeout": self.options.statement_timeout,
                "run_id": self.run_id, "recycle_after": self.options.recycle_after, "citus": self.citus,
            }, self.results))

    def _receive(self, worker: _Worker, result: dict[str, Any] | None) -> None:
        if result is not None:
            self._handle(worker.tasks.popleft(), result)
            return
        # The worker stopped: its task, if any, is tried again elsewhere.
        if worker in self.workers:
            self.workers.remove(worker)
        if worker.tasks:  # the first may have been under way; the others never started
            self._handle(worker.tasks.popleft(), {
                "status": "failed", "retryable": True, "duration_ms": 0.0,
                "error": f"fan-out worker stopped: {worker.error or 'no more tasks'}",
            })
            self.queue.extendleft(reversed(worker.tasks))
            worker.tasks.clear()

    def _handle(self, task: dict[str, Any], result: dict[str, Any]) -> None:
        attempt = task["attempt"]
        if result["status"] == "failed" and result.get("retryable") and attempt <= self.options.retries:
            delay = min(30.0, self.options.backoff * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            self._sequence += 1
            heapq.heappush(
                self.delayed, (time.monotonic() + delay, self._sequence, {**task, "attempt": attempt + 1})
            )
            self.progress.retrying(task["slug"], attempt, delay, result.get("error") or "")
            return
        outcome = TenantOutcome(
            slug=task["slug"], tenant_id=task["tenant_id"], status=result["status"],
            from_revision=result.get("from", task["revision"]), to_revision=result.get("to"), attempts=attempt,
            duration_ms=result.get("duration_ms", 0.0), error=result.get("error"),
        )
        if outcome.status == "failed":
            log.warning(
                "fanout.schema_failed: %s (run %s, attempt %s): %s", outcome.slug, self.run_id, attempt, outcome.error,
                extra={"event": "fanout.schema_failed", "run_id": self.run_id, "tenant": outcome.slug,
                       "from_revision": outcome.from_revision, "attempts": attempt, "error": outcome.error,
                       "duration_ms": outcome.duration_ms},
            )
            self.counts.failed += 1
            self.failures.append(outcome)
            self._record_outcome(outcome, tenant_id=outcome.tenant_id)
            if self.options.fail_fast:
                self.stopping = True
        elif outcome.status == "migrated":
            self.counts.migrated += 1
        elif outcome.status == "current":
            self.counts.current += 1
        else:
            self.counts.deleted += 1
            self._record_outcome(outcome, tenant_id=None)  # the tenant row is gone
        self.counts.processed += 1
        self.progress.outcome(outcome, self.counts)

    def _take_newcomers(self) -> bool:
        """Queue tenants provisioned since the plan (a full run leaves none behind)."""
        if self.options.slugs or self.options.batch is not None:
            return False
        fresh = [
            t for t in _tenants(self.connection)
            if t.tenant_id not in self.seen and t.revision != self.target
        ]
        self.seen.update(t.tenant_id for t in fresh)
        if not fresh:
            return False
        self.queue.extend(self._task(t) for t in fresh)
        self.counts.total += len(fresh)
        self.counts.selected += len(fresh)
        self.progress.grew(len(fresh), self.counts)
        return True

    @staticmethod
    def _task(tenant: PlannedTenant) -> dict[str, Any]:
        return {"tenant_id": tenant.tenant_id, "slug": tenant.slug, "revision": tenant.revision,
                "role": tenant.role, "attempt": 1}

    # -- the ledger

    def _abort_stale_runs(self) -> None:
        # We hold the lock, so a run still marked running lost its connection: it died.
        # Its counts were flushed every 2 s at best: take them from its outcome rows, which
        # committed with each schema (migrated, current) or after it (failed).
        self.connection.exec_driver_sql(
            "UPDATE public.migration_runs r SET status = 'aborted', finished_at = now(),"
            " migrated = (SELECT count(*) FROM public.migration_outcomes o"
            "             WHERE o.run_id = r.id AND o.status = 'migrated'),"
            " failed = (SELECT count(*) FROM public.migration_outcomes o"
            "           WHERE o.run_id = r.id AND o.status = 'failed'),"
            " current = greatest(r.current, (SELECT count(*) FROM public.migration_outcomes o"
            "                                WHERE o.run_id = r.id AND o.status = 'current'))"
            " WHERE r.status = 'running'"
        )

    def _insert_run(self, the_plan: Plan) -> int:
        options = {k: v for k, v in asdict(self.options).items() if k != "location"}
        options["slugs"] = list(self.options.slugs)
        run_id: int = self.connection.exec_driver_sql(
            "INSERT INTO public.migration_runs (status, target_revision, options, started_by,"
            " hostname, pid, backend_pid, selected, remaining)"
            " VALUES ('running', %(target)s, %(options)s, %(by)s, %(host)s, %(pid)s,"
            " pg_backend_pid(), %(selected)s, %(remaining)s) RETURNING id",
            {
                "target": the_plan.target or "base", "options": json.dumps(options),
                "by": f"{audit.os_user()}@{socket.gethostname()}", "host": socket.gethostname(),
                "pid": os.getpid(), "selected": the_plan.selected, "remaining": len(the_plan.deferred),
            },
        ).scalar_one()
        return run_id

    def _update_run(self, status: str) -> None:
        self._flushed = time.monotonic()
        c = self.counts
        self.connection.exec_driver_sql(
            "UPDATE public.migration_runs SET status = %(status)s, selected = %(selected)s,"
            " migrated = %(migrated)s, current = %(current)s, failed = %(failed)s,"
            " skipped = %(skipped)s, remaining = %(remaining)s,"
            # Not CASE WHEN … THEN now(): Citus refuses a non-IMMUTABLE function inside
            # CASE in a statement that modifies a distributed or reference table.
            f" finished_at = {'NULL' if status == 'running' else 'now()'}"
            " WHERE id = %(id)s",
            {
                "status": status, "selected": c.selected, "migrated": c.migrated,
                "current": c.current, "failed": c.failed, "skipped": c.skipped,
                "remaining": c.remaining, "id": self.run_id,
            },
        )

    def _record_outcome(self, outcome: TenantOutcome, *, tenant_id: int | None) -> None:
        """Ledger rows for what committed nothing: a failure (rolled back) or a deleted tenant."""
        self.connection.exec_driver_sql(
            "INSERT INTO public.migration_outcomes (run_id, tenant_id, tenant_slug, from_revision,"
            " to_revision, status, attempts, duration_ms, error)"
            " VALUES (%(run)s, %(tid)s, %(slug)s, %(from)s, %(to)s, %(status)s, %(attempts)s,"
            " %(ms)s, %(error)s)",
            {
                "run": self.run_id, "tid": tenant_id, "slug": outcome.slug, "status": outcome.status,
                "from": outcome.from_revision, "to": self.target, "attempts": outcome.attempts,
                "ms": outcome.duration_ms, "error": outcome.error,
            },
        )


def _render_paths(the_plan: Plan, location: str | None) -> dict[str, tuple[str, ...]]:
    """The SQL from each recorded revision to the target, for the workers' psycopg-only path.

    Keyed by the revision recorded in ``public.tenants``; a worker checks the schema's
    own ``alembic_version`` and hands anything else to Alembic.
    """
    paths = {}
    for revision in sorted({t.revision for t in the_plan.pending if t.revision}):
        rendered = migrations.rendered_path(revision, the_plan.target, location)
        if rendered is not None:
            paths[revision] = rendered
    return paths


def _libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq takes it (no ``+driver``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
