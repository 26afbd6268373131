"""Prometheus metrics: what is counted, what is read at scrape time, and the text /metrics serves.

No metric has a tenant label, and none ever should: a label value per tenant is a time
series per tenant (and per route and status), which is what brings a Prometheus server
down. Routes are URL rules (``/v1/repositories/<int:repository_id>``), never raw paths;
a request that matched no rule counts as ``<unmatched>`` and an unknown method as
``OTHER``, so nothing a client sends can create a series. Per-tenant questions are for
the logs (``tenant`` field) and ``pg_stat_activity`` (``application_name``).

Counted in the process: requests, provisionings, the database pool. Read from the
database at scrape time: the fan-out's progress and last result (``public.migration_runs``:
the fan-out runs in another process, usually a CLI, that nothing scrapes) and how many
tenant schemas are behind head.

With ``PROMETHEUS_MULTIPROC_DIR`` in the environment (gunicorn with several workers),
prometheus-client keeps every worker's values in files there and a scrape, whichever
worker answers it, sums them (``MultiProcessCollector``); the pool gauges then add up
the live workers' pools. Call :func:`child_exit` from gunicorn's ``child_exit`` hook.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event
from sqlalchemy.exc import SQLAlchemyError

from app.tenancy import billing
from app.tenancy.errors import ProvisioningFailed, TenancyError

__all__ = ["CONTENT_TYPE", "child_exit", "instrument_pool", "observe_provisioning", "observe_request", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "tenantry_http_requests", "HTTP requests answered, by method, route (URL rule) and status.",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "tenantry_http_request_duration_seconds", "Time to answer an HTTP request, by method, route and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PROVISIONINGS = Counter(
    "tenantry_provisionings", "Tenant provisionings through the API, by outcome (succeeded, refused, failed).",
    ["outcome"],
)
PROVISIONING_SECONDS = Histogram(
    "tenantry_provisioning_duration_seconds", "Time to provision a tenant (row, schema, migrations, key).",
    ["outcome"], buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
POOL_SIZE = Gauge(
    "tenantry_db_pool_size", "Connections the pool keeps (DB_POOL_SIZE).", multiprocess_mode="livesum",
)
POOL_CHECKED_OUT = Gauge(
    "tenantry_db_pool_checked_out", "Pooled connections in use right now.", multiprocess_mode="livesum",
)
POOL_OVERFLOW = Gauge(
    "tenantry_db_pool_overflow", "Connections open beyond the pool size (at most DB_MAX_OVERFLOW).",
    multiprocess_mode="livesum",
)

#: public.migration_runs.status values, each a series of tenantry_fanout_last_run_status.
RUN_STATUSES = ("running", "succeeded", "failed", "aborted")


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    labels = (method if method in METHODS else "OTHER", route or UNMATCHED, str(status))
    REQUESTS.labels(*labels).inc()
    REQUEST_SECONDS.labels(*labels).observe(seconds)


@contextmanager
def observe_provisioning() -> Iterator[None]:
    """Time the block as one provisioning: ``succeeded``; ``refused`` when it raised a domain
    error (slug taken or invalid, unknown plan); ``failed`` for anything else (rolled back)."""
    started = time.perf_counter()
    outcome = "failed"
    try:
        yield
        outcome = "succeeded"
    except TenancyError as exc:
        outcome = "failed" if isinstance(exc, ProvisioningFailed) else "refused"
        raise
    finally:
        PROVISIONINGS.labels(outcome).inc()
        PROVISIONING_SECONDS.labels(outcome).observe(time.perf_counter() - started)


def instrument_pool(engine: Engine) -> None:
    """Keep the pool gauges current: set from the pool at every checkout and checkin (and scrape).

    Set, never counted up and down: SQLAlchemy also fires ``checkin`` for a checkout that
    failed (the database was down), which a counter would take for a connection returned.
    """

    def checked_out(*_: Any) -> None:
        _set_pool_gauges(engine)

    def checked_in(*_: Any) -> None:
        # The pool still counts the returning connection as checked out during this event.
        _set_pool_gauges(engine, returning=1)

    # Nothing is set now: under gunicorn's preload_app this runs in the master, which
    # serves nothing and whose values would count as a live worker's in multiprocess mode.
    event.listen(engine.pool, "checkout", checked_out)
    event.listen(engine.pool, "checkin", checked_in)


def _set_pool_gauges(engine: Engine, returning: int = 0) -> None:
    pool = engine.pool
    size, checked_out, overflow = (getattr(pool, name, None) for name in ("size", "checkedout", "overflow"))
    POOL_SIZE.set(size() if callable(size) else 0)
    POOL_CHECKED_OUT.set(max(0, checked_out() - returning) if callable(checked_out) else 0)
    # QueuePool counts overflow from -pool_size (no connection open yet); only the excess is overflow.
    POOL_OVERFLOW.set(max(0, overflow()) if callable(overflow) else 0)


class DatabaseCollector(Collector):
    """Gauges read from the database when scraped: the fan-out ledger, the tenants behind head, the billing backlog.

    A scrape never fails for the database: when it cannot be read,
    ``tenantry_metrics_database_up`` is 0 and the gauges read from it are absent.
    """

    def __init__(self, engine: Engine, tenant_head: str | None) -> None:
        self.engine = engine
        self.tenant_head = tenant_head

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT set_config('statement_timeout', '5s', true)")
                run = conn.exec_driver_sql(
                    "SELECT id, status, selected, migrated, current, failed, started_at, finished_at"
                    " FROM public.migration_runs ORDER BY id DESC LIMIT 1"
                ).first()
                behind, tenants = conn.exec_driver_sql(
                    "SELECT count(*) FILTER (WHERE schema_revision IS DISTINCT FROM %(head)s), count(*)"
                    " FROM public.tenants", {"head": self.tenant_head},
                ).one()
                waiting = billing.backlog(conn)
        except SQLAlchemyError:
            yield GaugeMetricFamily("tenantry_metrics_database_up", "Whether this scrape could read the database.", 0)
            return
        yield GaugeMetricFamily("tenantry_metrics_database_up", "Whether this scrape could read the database.", 1)
        yield GaugeMetricFamily("tenantry_tenants", "Tenants provisioned.", tenants)
        yield GaugeMetricFamily(
            "tenantry_tenant_schemas_behind_head",
            "Tenants whose recorded schema revision is not the tenant head (flask tenants migrate).", behind,
        )
        yield GaugeMetricFamily(
            "tenantry_billing_events_unacknowledged",
            "Billing outbox events no consumer has acknowledged yet (docs/billing.md).", waiting.unacknowledged,
        )
        if waiting.oldest is not None:
            yield GaugeMetricFamily(
                "tenantry_billing_oldest_unacknowledged_timestamp_seconds",
                "When the oldest unacknowledged billing event was written.", waiting.oldest.timestamp(),
            )
        if run is not None:
            yield from _fanout_families(run)


def _fanout_families(run: Any) -> Iterator[GaugeMetricFamily]:
    run_id, status, selected, migrated, current, failed, started_at, finished_at = run
    schemas = GaugeMetricFamily(
        "tenantry_fanout_schemas",
        "Schemas of the latest fan-out run by state: done (migrated or already current), failed, "
        "remaining (not done yet, skipped by --fail-fast or deferred by --batch).",
        labels=["state"],
    )
    done = migrated + current
    schemas.add_metric(["done"], done)
    schemas.add_metric(["failed"], failed)
    schemas.add_metric(["remaining"], max(0, selected - done - failed))
    yield schemas
    statuses = GaugeMetricFamily(
        "tenantry_fanout_last_run_status", "1 for the latest fan-out run's status, 0 for the others.",
        labels=["status"],
    )
    for known in RUN_STATUSES:
        statuses.add_metric([known], 1 if status == known else 0)
    yield statuses
    yield GaugeMetricFamily("tenantry_fanout_last_run_id", "Id of the latest fan-out run (ledger).", run_id)
    yield GaugeMetricFamily(
        "tenantry_fanout_last_run_started_timestamp_seconds", "When the latest fan-out run started.",
        started_at.timestamp(),
    )
    if finished_at is not None:
        yield GaugeMetricFamily(
            "tenantry_fanout_last_run_finished_timestamp_seconds", "When the latest fan-out run ended.",
            finished_at.timestamp(),
        )


def render(engine: Engine, tenant_head: str | None, multiprocess_dir: str | None) -> bytes:
    """The exposition text: this process's (or, in multiprocess mode, every worker's) metrics
    and the gauges read from the database now."""
    _set_pool_gauges(engine)
    scraped = CollectorRegistry()  # not auto_describe: that would read the database twice
    scraped.register(DatabaseCollector(engine, tenant_head))
    if multiprocess_dir:
        MultiProcessCollector(scraped, path=multiprocess_dir)
        return generate_latest(scraped)
    return generate_latest(REGISTRY) + generate_latest(scraped)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook in multiprocess mode: drop a dead worker's live gauges."""
    mark_process_dead(worker.pid)
