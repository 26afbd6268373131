"""Move tenant schemas between Citus workers: one tenant, a rebalance, a drain, adoption.

Every move is Citus's own ``citus_schema_move`` (online by default: the tables are
copied by logical replication while the tenant keeps reading and writing, then writes
pause for the switch-over). Tenantry adds what Citus does not know about:

- the tenant's advisory lock (the fan-out's and deletion's), taken with *try*: a tenant
  being migrated, provisioned or deleted is refused at once, never queued behind;
- a platform audit event per move (``tenant.moved``, node before and after);
- the refusals an operator needs in words: an unknown node, the node it is on already,
  a schema that is not distributed yet.

A rebalance and a drain are plans of single-tenant moves (so each move takes the lock
and is audited), run one after the other; a move that fails is reported and the rest go
on. Adoption distributes tenant schemas created before schema-based sharding was on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.models.public import Tenant

from . import audit, cluster
from .errors import PlacementRefused, TenancyError, TenantBusy, TenantNotFound
from .locks import LOCK_NAMESPACE
from .naming import schema_name_for, validate_slug

log = logging.getLogger(__name__)

MODES = ("auto", "block_writes", "force_logical")


@dataclass(frozen=True)
class Move:
    slug: str
    source: str  # host:port
    target: str
    bytes: int = 0


@dataclass
class MoveResult:
    slug: str
    source: str
    target: str
    status: str  # moved | failed
    seconds: float
    error: str | None = None

    @property
    def node(self) -> str:
        """Where the tenant is after the attempt: the target if it moved, else where it was."""
        return self.target if self.status == "moved" else self.source

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Progress callback: (slug, message) while a move runs (copy progress, phases).
Progress = Callable[[str, str], None]


def parse_node(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); a clear error otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PlacementRefused(f"a node is HOST:PORT (e.g. 10.0.0.5:5432), not {text!r}")
    return host, int(port)


def worker_node(connection: Connection, text: str) -> cluster.Node:
    """The active worker named ``HOST:PORT``.

    :raise PlacementRefused: no such node, or it is the coordinator or inactive.
    """
    host, port = parse_node(text)
    for node in cluster.nodes(connection):
        if (node.host, node.port) == (host, port):
            if node.role != "worker":
                raise PlacementRefused(f"{text} is the coordinator; tenant schemas live on workers")
            if not node.active:
                raise PlacementRefused(f"{text} is not active")
            return node
    known = ", ".join(n.address for n in cluster.nodes(connection) if n.role == "worker") or "none"
    raise PlacementRefused(f"no worker {text} in the cluster (workers: {known})")


def _require_citus(connection: Connection) -> None:
    if cluster.detect(connection) is None:
        raise PlacementRefused(str(cluster.NotCitus()))


@contextmanager
def _tenant_lock(connection: Connection, slug: str) -> Iterator[None]:
    """The tenant's advisory lock at session level (a move spans transactions), or TenantBusy."""
    params = {"ns": LOCK_NAMESPACE, "slug": slug}
    if not connection.exec_driver_sql("SELECT pg_try_advisory_lock(%(ns)s, hashtext(%(slug)s))", params).scalar():
        raise TenantBusy(slug, "it is being migrated, provisioned, deleted or moved; try again later")
    try:
        yield
    finally:
        if not connection.invalidated:
            connection.exec_driver_sql("SELECT pg_advisory_unlock(%(ns)s, hashtext(%(slug)s))", params)


def move_tenant(
    engine: Engine, slug: str, target: str, *, mode: str = "auto", progress: Progress | None = None,
) -> MoveResult:
    """Move tenant ``slug``'s schema to worker ``target`` (``HOST:PORT``) online; audited.

    :raise TenantNotFound, TenantBusy, PlacementRefused: nothing was moved.
    """
    validate_slug(slug)
    if mode not in MODES:
        raise PlacementRefused(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        _require_citus(connection)
        node = worker_node(connection, target)
        tenant_id = connection.exec_driver_sql(
            "SELECT id FROM public.tenants WHERE slug = %(s)s", {"s": slug}).scalar()
        if tenant_id is None:
            raise TenantNotFound(slug)
        schema = schema_name_for(slug)
        with _tenant_lock(connection, slug):
            source = cluster.placement_of(connection, schema)
            if source is None:
                raise PlacementRefused(
                    f"tenant {slug!r} is not distributed yet (its schema is on the coordinator): "
                    "run `flask cluster adopt` first")
            if source.node_id == node.node_id:
                raise PlacementRefused(f"tenant {slug!r} is on {node.address} already")
            return _move(engine, connection, tenant_id, slug, schema, source.address, node, mode, progress)


def _move(
    engine: Engine, connection: Connection, tenant_id: int, slug: str, schema: str, source: str,
    node: cluster.Node, mode: str, progress: Progress | None,
) -> MoveResult:
    started = time.monotonic()
    log.info("tenant.moving: %s %s -> %s (%s)", slug, source, node.address, mode,
             extra={"event": "tenant.moving", "tenant": slug, "source": source, "target": node.address})
    if progress:
        progress(slug, f"moving {schema} {source} -> {node.address} ({mode})")
    watcher = _ProgressWatcher(engine, slug, progress) if progress else None
    try:
        connection.exec_driver_sql(
            "SELECT citus_schema_move(%(schema)s::regnamespace, %(node)s, %(mode)s::citus.shard_transfer_mode)",
            {"schema": schema, "node": node.node_id, "mode": mode},
        )
    except DBAPIError as exc:
        seconds = time.monotonic() - started
        error = _first_line(exc.orig or exc)
        log.warning("tenant.move_failed: %s: %s", slug, error,
                    extra={"event": "tenant.move_failed", "tenant": slug, "error": error})
        return MoveResult(slug, source, node.address, "failed", round(seconds, 3), error)
    finally:
        if watcher:
            watcher.stop()
    seconds = round(time.monotonic() - started, 3)
    with Session(bind=engine) as session, session.begin():
        audit.record_platform(session, "tenant.moved", "tenant", slug, tenant_id=tenant_id, tenant_slug=slug,
                              before={"node": source}, after={"node": node.address})
    log.info("tenant.moved: %s %s -> %s in %.1f s", slug, source, node.address, seconds,
             extra={"event": "tenant.moved", "tenant": slug, "source": source, "target": node.address,
                    "duration_ms": seconds * 1000})
    return MoveResult(slug, source, node.address, "moved", seconds)


class _ProgressWatcher:
    """Reports Citus's copy progress (``get_rebalance_progress()``) every second while a move runs."""

    def __init__(self, engine: Engine, slug: str, progress: Progress) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(engine, slug, progress), daemon=True)
        self._thread.start()

    def _watch(self, engine: Engine, slug: str, progress: Progress) -> None:
        try:
            with engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                while not self._stop.wait(1.0):
                    row = connection.exec_driver_sql(
                        "SELECT sum(shard_size), sum(target_shard_size) FROM get_rebalance_progress()").one()
                    if row[0]:
                        progress(slug, f"copied {int(row[1] or 0):,} of {int(row[0]):,} bytes")
        except Exception as exc:  # progress is a courtesy; the move itself reports its outcome
            log.debug("move progress unavailable: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def check_target(engine: Engine, target: str) -> cluster.Node:
    """The worker ``target`` names, checked before a tenant is provisioned onto it.

    :raise PlacementRefused: not Citus, not HOST:PORT, no such active worker.
    """
    with engine.connect() as connection:
        _require_citus(connection)
        return worker_node(connection, target)


def place_new_tenant(engine: Engine, slug: str, target: str) -> MoveResult:
    """Put a tenant provisioned a moment ago on worker ``target``.

    Citus places a new schema itself (its colocation id modulo the workers) and cannot
    move a schema in the transaction that created it (the target worker does not see it
    yet), so onboarding commits first and this moves the still-empty schema right after
    (under a second). Already there: nothing moves. A failed move leaves a complete
    tenant on the worker Citus chose; the result says so.
    """
    with engine.connect() as connection:
        placed = cluster.placement_of(connection, schema_name_for(slug))
        node = worker_node(connection, target)
    if placed is not None and placed.node_id == node.node_id:
        return MoveResult(slug, placed.address, node.address, "moved", 0.0)
    try:
        return move_tenant(engine, slug, target, mode="block_writes")  # empty: nothing to replicate
    except TenancyError as exc:
        return MoveResult(slug, placed.address if placed else "coordinator", target, "failed", 0.0, str(exc))


# --- rebalance and drain --------------------------------------------------------------


@dataclass
class PlanReport:
    moves: list[Move]
    before: dict[str, int]  # node -> tenants (or bytes) before
    after: dict[str, int]  # what the plan would leave
    by: str
    results: list[MoveResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "before": self.before, "after": self.after,
                "moves": [asdict(m) for m in self.moves], "results": [r.as_dict() for r in self.results],
                "moved": sum(r.status == "moved" for r in self.results),
                "failed": sum(r.status == "failed" for r in self.results)}


def plan_rebalance(connection: Connection, *, by: str = "count") -> PlanReport:
    """Moves that even out tenants (``count``) or bytes (``size``) over the workers that take schemas.

    Greedy: move a tenant from the fullest worker to the emptiest while that narrows
    the gap (for ``size``, the largest tenant that fits the gap; a tenant larger than
    the gap stays). Deterministic for a given placement.
    """
    if by not in ("count", "size"):
        raise PlacementRefused(f"--by must be count or size, not {by!r}")
    _require_citus(connection)
    workers = [n for n in cluster.nodes(connection) if n.role == "worker" and n.active and n.takes_new_schemas]
    if not workers:
        raise PlacementRefused("no active worker takes schemas")
    sizes = cluster.schema_bytes(connection) if by == "size" else {}
    holdings: dict[str, list[tuple[str, int]]] = {w.address: [] for w in workers}
    for schema, placement in sorted(cluster.placements(connection).items()):
        if placement.address in holdings:
            weight = sizes.get(schema, 0) if by == "size" else 1
            holdings[placement.address].append((schema.removeprefix("t_"), weight))
    load = {node: sum(w for _, w in tenants) for node, tenants in holdings.items()}
    before = dict(load)
    moves: list[Move] = []
    while True:
        fullest = max(load, key=lambda n: (load[n], n))
        emptiest = min(load, key=lambda n: (load[n], n))
        gap = load[fullest] - load[emptiest]
        # A move of weight w narrows the gap only when 0 < w < gap.
        candidates = [(w, slug) for slug, w in holdings[fullest] if 0 < w < gap]
        if not candidates:
            break
        weight, slug = max(candidates) if by == "size" else min(candidates, key=lambda c: c[1])
        holdings[fullest].remove((slug, weight))
        holdings[emptiest].append((slug, weight))
        load[fullest] -= weight
        load[emptiest] += weight
        moves.append(Move(slug, fullest, emptiest, sizes.get(f"t_{slug}", 0)))
    return PlanReport(moves=moves, before=before, after=load, by=by)


def plan_drain(connection: Connection, node_text: str) -> PlanReport:
    """Moves that empty worker ``node_text``, each tenant to the worker with the fewest tenants then."""
    _require_citus(connection)
    node = worker_node(connection, node_text)
    others = [n for n in cluster.nodes(connection)
              if n.role == "worker" and n.active and n.node_id != node.node_id]
    if not others:
        raise PlacementRefused(f"{node.address} is the only active worker: there is nowhere to move its tenants")
    load = {n.address: 0 for n in others} | {node.address: 0}
    leaving: list[str] = []
    for schema, placement in sorted(cluster.placements(connection).items()):
        if placement.address in load:
            load[placement.address] += 1
        if placement.node_id == node.node_id:
            leaving.append(schema.removeprefix("t_"))
    before = dict(load)
    moves = []
    for slug in leaving:
        target = min((n.address for n in others), key=lambda a: (load[a], a))
        load[target] += 1
        load[node.address] -= 1
        moves.append(Move(slug, node.address, target))
    return PlanReport(moves=moves, before=before, after=load, by="count")


def set_takes_new_schemas(connection: Connection, node_text: str, value: bool) -> None:
    """Whether Citus places new tenant schemas on this worker (``shouldhaveshards``)."""
    host, port = parse_node(node_text)
    connection.exec_driver_sql(
        "SELECT citus_set_node_property(%(h)s, %(p)s, 'shouldhaveshards', %(v)s)", {"h": host, "p": port, "v": value})


def run_plan(
    engine: Engine, report: PlanReport, *, mode: str = "auto", progress: Progress | None = None,
    done: Callable[[MoveResult], None] | None = None,
) -> PlanReport:
    """Carry out ``report.moves`` one by one; a refused or failed move is recorded and the rest go on."""
    for move in report.moves:
        try:
            result = move_tenant(engine, move.slug, move.target, mode=mode, progress=progress)
        except TenancyError as exc:  # busy, moved meanwhile, deleted meanwhile
            result = MoveResult(move.slug, move.source, move.target, "failed", 0.0, str(exc))
        report.results.append(result)
        if done:
            done(result)
    return report


def drain(
    engine: Engine, node_text: str, *, mode: str = "auto", progress: Progress | None = None,
    done: Callable[[MoveResult], None] | None = None, dry_run: bool = False,
) -> PlanReport:
    """Stop placing new schemas on the worker, then move every tenant off it.

    The worker stays out of new placements afterwards (remove it with
    ``citus_remove_node``, or put it back with ``citus_set_node_property``).
    """
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        report = plan_drain(connection, node_text)
        if dry_run:
            return report
        set_takes_new_schemas(connection, node_text, False)
    return run_plan(engine, report, mode=mode, progress=progress, done=done)


def rebalance(
    engine: Engine, *, by: str = "count", mode: str = "auto", progress: Progress | None = None,
    done: Callable[[MoveResult], None] | None = None, dry_run: bool = False,
) -> PlanReport:
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        report = plan_rebalance(connection, by=by)
    if dry_run:
        return report
    return run_plan(engine, report, mode=mode, progress=progress, done=done)


# --- adoption -------------------------------------------------------------------------


@dataclass
class AdoptReport:
    adopted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    already: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"adopted": self.adopted, "failed": self.failed, "already_distributed": self.already}


def adopt(
    engine: Engine, *, slugs: tuple[str, ...] = (), done: Callable[[str, str | None], None] | None = None,
) -> AdoptReport:
    """Distribute tenant schemas that are still on the coordinator (``citus_schema_distribute``).

    One schema at a time, each under its tenant's lock and in its own transaction, so a
    run stopped halfway leaves every schema either distributed or untouched: run it
    again and it carries on with what is left. ``citus_schema_distribute`` blocks writes
    to the schema's tables while it copies them (reads go on; a few hundred ms for a
    small tenant); a busy tenant is reported and left for the next run. The coordinator's
    leftover copy of the rows is truncated afterwards.
    """
    report = AdoptReport()
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        _require_citus(connection)
        status = cluster.status(connection, with_bytes=False)
        pending = [s for s in status.not_distributed if not slugs or s in slugs]
        report.already = status.tenants - len(status.not_distributed)
        for slug in pending:
            try:
                with _tenant_lock(connection, slug):
                    connection.exec_driver_sql("SELECT citus_schema_distribute(%(s)s::regnamespace)",
                                               {"s": schema_name_for(slug)})
                    # The copy left the rows on the coordinator too, invisible: free that disk.
                    connection.exec_driver_sql(
                        "SELECT truncate_local_data_after_distributing_table(c.oid::regclass) FROM pg_class c"
                        " WHERE c.relnamespace = %(s)s::regnamespace AND c.relkind IN ('r', 'p')",
                        {"s": schema_name_for(slug)})
            except (TenancyError, DBAPIError) as exc:
                error = _first_line(exc.orig or exc) if isinstance(exc, DBAPIError) else str(exc)
                report.failed[slug] = error
                if done:
                    done(slug, error)
                continue
            with Session(bind=engine) as session, session.begin():
                tenant_id = session.scalar(select(Tenant.id).where(Tenant.slug == slug))
                audit.record_platform(session, "tenant.distributed", "tenant", slug, tenant_id=tenant_id,
                                      tenant_slug=slug, before={"node": "coordinator"},
                                      after={"node": cluster.address_of(connection, schema_name_for(slug))})
            report.adopted.append(slug)
            if done:
                done(slug, None)
    return report

