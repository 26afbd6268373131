"""Usage metering: what each tenant uses per UTC month, counted in memory, written in batches.

:func:`record_usage` is the one way to count: ``record_usage("api_requests", 1)`` adds to
the bound tenant's count of the current month (``period``: the month's first day, UTC).
A gauge (``repositories``) keeps the month's peak instead of a sum.

Nothing is written per call. Counts accumulate in this process's :class:`UsageBuffer`
(one lock, one dict update), and :func:`flush` moves them to ``public.usage_counters``
in one transaction: one upsert per (tenant, metric, period) touched since the last
flush, ``value = usage_counters.value + EXCLUDED.value`` for a count and
``GREATEST(...)`` for a gauge, in key order (two processes flushing the same rows take
their row locks in the same order: no deadlock). A failed flush puts its counts back.

A background thread (:class:`Flusher`, started by :func:`configure` in the first
process that records, again after a fork) flushes every ``interval`` seconds; it
flushes once more when it is stopped (:func:`shutdown`: atexit, and gunicorn's
``worker_exit``). A process killed without that loses what it counted since its last
flush: at most one flush interval of its requests.

Monthly limits read :func:`current`: the stored value cached per process for at most
``max_age`` seconds (one primary-key read when it is older), plus what this process
has not flushed yet. Never a scan. What this process counted is always in it; what
other processes counted arrives once they flushed and this cache was read again.

With ``USAGE_STORAGE_URI`` a Redis (:mod:`app.tenancy.usage_redis`, given to
:func:`configure`), counters are counted there instead, one script per count
(:func:`check_and_count`): the monthly limit is then exact across every process and
host. Each process's flusher also writes the totals Redis marked dirty, absolute, with
``GREATEST`` (idempotent). Gauges stay in the buffer. When Redis does not answer, a
count goes to the buffer and the limit reads :func:`current`, as without Redis; the
flusher takes those counts to Redis once it answers again (to PostgreSQL, added, when
the process stops before).

The clock is :func:`now`: tests replace it to cross a month's end.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from . import events
from .context import require_tenant
from .errors import InvalidPeriod, MonthlyQuotaExceeded
from .periods import format_period as format_period
from .periods import next_period as next_period
from .periods import parse_period as parse_period
from .periods import period_end as period_end
from .periods import period_of as period_of
from .periods import period_start as period_start

if TYPE_CHECKING:  # imported by the caller that configures it: redis is loaded only when counted in
    from .usage_redis import Counted, RedisCounts

log = logging.getLogger(__name__)

#: Every authenticated tenant request.
API_REQUESTS = "api_requests"
#: The tenant's repositories: a gauge, the month keeps its peak.
REPOSITORIES = "repositories"
#: Metrics whose value is a level, not a count: a period keeps the largest value recorded.
GAUGES = frozenset({REPOSITORIES})
#: What a metric may be called (the column is 40 characters).
METRIC = re.compile(r"[a-z][a-z0-9_]{0,39}")

#: (tenant id, metric, period)
Key = tuple[int, str, date]


def now() -> datetime:
    """The metering clock, UTC (tests replace this function)."""
    return datetime.now(UTC)


def shared_store(uri: str, prefix: str) -> RedisCounts | None:
    """The Redis ``USAGE_STORAGE_URI`` names (no connection yet), or None for ``memory://``."""
    if uri == "memory://":
        return None
    from .usage_redis import RedisCounts  # redis is imported only where it counts

    return RedisCounts(uri, prefix)


def period_or_current(raw: str | None, field: str = "period") -> date:
    """The month ``raw`` names (``YYYY-MM``), or the current UTC month when none is named."""
    return parse_period(raw, field) if raw else period_of(now())


class UsageBuffer:
    """This process's counts not yet flushed, and the stored values it read, under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Key, int] = {}
        self._peaks: dict[Key, int] = {}
        #: Stored value as this process knows it, and when it was read (monotonic).
        self._stored: dict[Key, tuple[int, float]] = {}

    def add(self, key: Key, amount: int) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def peak(self, key: Key, value: int) -> None:
        with self._lock:
            if value > self._peaks.get(key, -1):
                self._peaks[key] = value

    def unflushed(self, key: Key) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def stored(self, key: Key, max_age: float) -> int | None:
        """The cached stored value of ``key`` when read less than ``max_age`` seconds ago."""
        with self._lock:
            cached = self._stored.get(key)
        if cached is None or time.monotonic() - cached[1] >= max_age:
            return None
        return cached[0]

    def remember(self, key: Key, value: int) -> None:
        with self._lock:
            self._stored[key] = (value, time.monotonic())

    def take(self, forget_after: float | None = None) -> tuple[dict[Key, int], dict[Key, int]]:
        """Everything to flush; the counts move into the cached stored values at once.

        So :meth:`unflushed` plus :meth:`stored` never drops while a flush runs. Cached
        values read more than ``forget_after`` seconds ago are dropped (they would be read
        again anyway): the cache holds the tenants served lately, not every tenant ever.
        """
        with self._lock:
            counts, peaks, self._counts, self._peaks = self._counts, self._peaks, {}, {}
            if forget_after is not None:
                horizon = time.monotonic() - forget_after
                self._stored = {key: cached for key, cached in self._stored.items() if cached[1] >= horizon}
            for key, amount in counts.items():
                if key in self._stored:
                    value, read_at = self._stored[key]
                    self._stored[key] = (value + amount, read_at)
            return counts, peaks

    def put_back(self, counts: Mapping[Key, int], peaks: Mapping[Key, int]) -> None:
        """Undo :meth:`take` after a failed flush: nothing counted is lost."""
        with self._lock:
            for key, amount in counts.items():
                self._counts[key] = self._counts.get(key, 0) + amount
                if key in self._stored:
                    value, read_at = self._stored[key]
                    self._stored[key] = (value - amount, read_at)
            for key, value in peaks.items():
                if value > self._peaks.get(key, -1):
                    self._peaks[key] = value


_BUFFER = UsageBuffer()

_ADD = text(
    "INSERT INTO public.usage_counters (tenant_id, metric, period, value)"
    " VALUES (:tenant_id, :metric, :period, :value)"
    " ON CONFLICT (tenant_id, metric, period)"
    " DO UPDATE SET value = usage_counters.value + EXCLUDED.value, updated_at = now()"
)
_PEAK = text(
    "INSERT INTO public.usage_counters (tenant_id, metric, period, value)"
    " VALUES (:tenant_id, :metric, :period, :value)"
    " ON CONFLICT (tenant_id, metric, period)"
    " DO UPDATE SET value = GREATEST(usage_counters.value, EXCLUDED.value), updated_at = now()"
    " WHERE usage_counters.value < EXCLUDED.value"
)
_READ = text(
    "SELECT value FROM public.usage_counters WHERE tenant_id = :tenant_id AND metric = :metric AND period = :period"
)


def _rows(values: Mapping[Key, int]) -> list[dict[str, object]]:
    return [{"tenant_id": t, "metric": m, "period": p, "value": v} for (t, m, p), v in sorted(values.items())]


def record_usage(metric: str, amount: int = 1) -> None:
    """Count ``amount`` of ``metric`` for the bound tenant this month (a gauge: its level now).

    No database write: see the module's docstring. :raise ValueError: a bad metric name
    or a negative amount. :raise TenantContextError: no tenant is bound.
    """
    record_for(require_tenant().tenant_id, metric, amount)


def record_for(tenant_id: int, metric: str, amount: int = 1) -> None:
    """:func:`record_usage` for a tenant named by id (a tenant need not be bound)."""
    _check(metric, amount)
    _ensure_flusher()
    key = (tenant_id, metric, period_of(now()))
    if metric in GAUGES:
        _BUFFER.peak(key, amount)
        return
    shared = _settings.shared
    if shared is not None:
        counted = shared.count(key, amount, None)
        if counted is not None and not counted.needs_seed:
            return
    # Memory mode; or Redis away, or a total it must be seeded with (no connection here):
    # the flusher takes the count to Redis.
    _BUFFER.add(key, amount)


def record_on_commit(session: Session, metric: str, amount: int = 1) -> None:
    """:func:`record_usage` for the bound tenant once ``session``'s transaction commits (never if it rolls back).

    For usage that exists only if the change does: a repository created, then rolled back, is no peak.
    """
    tenant_id = require_tenant().tenant_id
    _check(metric, amount)  # now, in the caller: at COMMIT it would raise inside the session's hook
    events.call_on_commit(session, lambda: record_for(tenant_id, metric, amount))


def _check(metric: str, amount: int) -> None:
    if not METRIC.fullmatch(metric):
        raise ValueError(f"a metric is lowercase letters, digits and _ (at most 40), not {metric!r}")
    if amount < 0:
        raise ValueError(f"usage only grows: amount {amount} is negative")


def flush(engine: Engine | None = None, *, final: bool = False) -> int:
    """Write this process's counts to ``public.usage_counters``; the number of rows upserted.

    ``engine`` defaults to the one :func:`configure` was given. On failure the counts
    go back into the buffer (the next flush retries them) and the error is raised.

    With Redis, counters go to Redis first (they were counted while it was away), then
    every dirty total is written (:func:`flush_shared`). ``final`` (the process stops):
    what Redis does not take is added to PostgreSQL instead of kept.
    """
    engine = engine or _settings.engine
    if engine is None:
        raise RuntimeError("usage metering is not configured: call app.tenancy.usage.configure(engine, ...)")
    shared = _settings.shared
    counts, peaks = _BUFFER.take(forget_after=_settings.interval)
    held: dict[Key, int] = {}
    try:
        if shared is not None and counts:
            _replay(shared, engine, counts)
            if not final:  # kept for Redis: added here, a total Redis still holds would not include them
                counts, held = {}, counts
        if counts or peaks:
            with engine.begin() as connection:
                if counts:
                    connection.execute(_ADD, _rows(counts))
                if peaks:
                    connection.execute(_PEAK, _rows(peaks))
    except BaseException:
        _BUFFER.put_back(counts, peaks)
        raise
    finally:
        if held:
            _BUFFER.put_back(held, {})
    written = len(counts) + len(peaks)
    if shared is not None:
        written += flush_shared(shared, engine) or 0
    return written


def _replay(shared: RedisCounts, engine: Engine, counts: dict[Key, int]) -> None:
    """Add ``counts`` to the Redis totals (seeded from PostgreSQL where needed), removing each Redis took.

    Stops at the first Redis does not take: what is left in ``counts`` was not counted there.
    """
    for key, amount in sorted(counts.items()):
        counted = shared.count(key, amount, None, force=True)
        if counted is not None and counted.needs_seed:
            with engine.connect() as connection:
                stored = read_stored(connection, key)
            counted = shared.count(key, amount, None, seed=stored, force=True)
        if counted is None:
            return
        del counts[key]


def flush_shared(shared: RedisCounts, engine: Engine) -> int | None:
    """Write every dirty Redis total to PostgreSQL, then forget those no count changed since.

    Absolute totals with ``GREATEST`` in key order: any number of processes may flush at
    once, and a crash between the write and the delete writes the same totals again (no
    double count). A field that changed meanwhile stays dirty for the next flush.
    Returns the totals written, or None when Redis did not answer (its outage is logged
    once; ``flask usage close-period`` refuses then, so a month is closed on every count
    Redis holds even when no server process ran to flush it). PostgreSQL away: raised,
    all stays dirty.
    """
    dirty = shared.dirty()
    if dirty is None:
        return None
    if not dirty:
        return 0
    with engine.begin() as connection:
        # A running total is written as a level (the gauges' statement): the largest stays.
        connection.execute(_PEAK, _rows({entry.key: entry.value for entry in dirty}))
    shared.clean(dirty)
    return len(dirty)


def read_stored(connection: Connection, key: Key) -> int:
    """The stored value of one counter (a primary-key read; 0 when there is no row)."""
    tenant_id, metric, period = key
    return int(connection.execute(_READ, {"tenant_id": tenant_id, "metric": metric, "period": period})
               .scalar() or 0)


def current(read: Callable[[Key], int], tenant_id: int, metric: str, period: date, max_age: float) -> int:
    """The tenant's ``metric`` in ``period`` as this process knows it (see the module's docstring).

    ``read`` reads the stored value (:func:`read_stored` on a connection the caller may use
    for ``public``); it is called only when the cached value is ``max_age`` seconds old.
    """
    key = (tenant_id, metric, period)
    stored = _BUFFER.stored(key, max_age)
    if stored is None:
        stored = read(key)
        _BUFFER.remember(key, stored)
    return stored + _BUFFER.unflushed(key)


def check_monthly_limit(read: Callable[[Key], int], tenant_id: int, metric: str, limit: int | None,
                        max_age: float) -> None:
    """Refuse one more ``metric`` when the tenant used ``limit`` of it this month (None: unlimited).

    By this process's view (:func:`current`), whatever the storage.
    :raise MonthlyQuotaExceeded: with the limit, the usage and the first instant of the next month.
    """
    if limit is None:
        return
    moment = now()
    used = current(read, tenant_id, metric, period_of(moment), max_age)
    if used >= limit:
        raise _exceeded(metric, limit, used, moment)


def check_and_count(read: Callable[[Key], int], tenant_id: int, metric: str, limit: int | None,
                    max_age: float) -> None:
    """Count one ``metric`` for the tenant this month, unless it used ``limit`` (None: unlimited).

    The request hook's one call. In memory: :func:`check_monthly_limit`, then
    :func:`record_for`. With Redis: one script checks and counts (exact across
    processes); ``read`` (:func:`read_stored`) seeds a total Redis does not hold. Redis
    away: as in memory. :raise MonthlyQuotaExceeded: as :func:`check_monthly_limit`.
    """
    shared = _settings.shared
    if shared is None or metric in GAUGES:
        check_monthly_limit(read, tenant_id, metric, limit, max_age)
        record_for(tenant_id, metric)
        return
    _check(metric, 1)
    _ensure_flusher()
    moment = now()
    key = (tenant_id, metric, period_of(moment))
    # Counted while Redis was away and not yet taken there by the flusher: within the limit too.
    pending = _BUFFER.unflushed(key)
    counted = _count_shared(shared, read, key, None if limit is None else max(0, limit - pending))
    if counted is None:
        check_monthly_limit(read, tenant_id, metric, limit, max_age)
        _BUFFER.add(key, 1)
    elif counted.refused and limit is not None:
        raise _exceeded(metric, limit, counted.total + pending, moment)


def _count_shared(shared: RedisCounts, read: Callable[[Key], int], key: Key, limit: int | None) -> Counted | None:
    counted = shared.count(key, 1, limit)
    if counted is not None and counted.needs_seed:
        counted = shared.count(key, 1, limit, seed=read(key))
    return counted


def _exceeded(metric: str, limit: int, used: int, moment: datetime) -> MonthlyQuotaExceeded:
    resets = period_end(period_of(moment))
    retry_after = max(1, int((resets - moment).total_seconds() + 0.999))
    return MonthlyQuotaExceeded(metric, limit, used, resets.isoformat().replace("+00:00", "Z"), retry_after)


#: Longest history one read returns, in months.
MAX_MONTHS = 36


def months(first: date, last: date) -> list[date]:
    """Every period from ``first`` to ``last``, both included."""
    periods = [first]
    while periods[-1] < last:
        periods.append(next_period(periods[-1]))
    return periods


def month_range(first: str | None, last: str | None) -> tuple[date, date]:
    """``from``/``to`` of a history read (``YYYY-MM``; both default to the current month).

    :raise InvalidPeriod: a bad month, ``to`` before ``from``, or more than :data:`MAX_MONTHS`.
    """
    this_month = period_of(now())
    start = parse_period(first, "from") if first else None
    end = parse_period(last, "to") if last else None
    start, end = start or end or this_month, end or start or this_month
    if end < start:
        raise InvalidPeriod("to", "must not be before from")
    if (end.year - start.year) * 12 + end.month - start.month >= MAX_MONTHS:
        raise InvalidPeriod("to", f"a history spans at most {MAX_MONTHS} months")
    return start, end


@dataclass(frozen=True)
class PeriodUsage:
    """One tenant's stored counts in one period, by metric (as flushed: see the module's docstring)."""

    period: date
    metrics: dict[str, int]


def history(connection: Connection, tenant_id: int, first: date, last: date) -> list[PeriodUsage]:
    """The tenant's counts in every period from ``first`` to ``last`` (an empty one too), oldest first."""
    rows = connection.execute(
        text("SELECT period, metric, value FROM public.usage_counters"
             " WHERE tenant_id = :tenant_id AND period BETWEEN :first AND :last"),
        {"tenant_id": tenant_id, "first": first, "last": last},
    ).all()
    by_period: dict[date, dict[str, int]] = {period: {} for period in months(first, last)}
    for period, metric, value in rows:
        by_period[period][metric] = int(value)
    return [PeriodUsage(period, dict(sorted(metrics.items()))) for period, metrics in by_period.items()]


@dataclass(frozen=True)
class TenantCount:
    tenant_id: int
    slug: str | None  # None: the tenant was deleted since
    value: int


def top_tenants(connection: Connection, period: date, metric: str, limit: int) -> list[TenantCount]:
    """The ``limit`` tenants with the most ``metric`` in ``period``, most first (ties by tenant id).

    Reads the ``(metric, period, value)`` index backwards; the slugs in a second query
    (on Citus ``tenants`` is a Citus local table and ``usage_counters`` a plain one).
    """
    rows = connection.execute(
        text("SELECT tenant_id, value FROM public.usage_counters WHERE metric = :metric AND period = :period"
             " ORDER BY value DESC, tenant_id LIMIT :limit"),
        {"metric": metric, "period": period, "limit": limit},
    ).all()
    ids = [row.tenant_id for row in rows]
    slugs: dict[int, str] = {}
    if ids:
        found = connection.execute(text("SELECT id, slug FROM public.tenants WHERE id = ANY(:ids)"), {"ids": ids})
        slugs = {int(row.id): str(row.slug) for row in found}
    return [TenantCount(row.tenant_id, slugs.get(row.tenant_id), int(row.value)) for row in rows]


@dataclass
class _Settings:
    engine: Engine | None = None
    interval: float = 5.0
    shared: RedisCounts | None = None  # None: counted in memory only


_settings = _Settings()


class Flusher:
    """The thread that flushes every ``interval`` seconds, and once more when stopped."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(self.interval, 5.0))
        _flush_logged(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            _flush_logged()


def _flush_logged(final: bool = False) -> None:
    try:
        flush(final=final)
    except Exception as exc:  # noqa: BLE001 - kept for the next flush; the thread must live on
        log.warning("usage flush failed (%s): the counts are kept for the next one", type(exc).__name__,
                    extra={"event": "usage.flush_failed"})


_flusher: Flusher | None = None
_flusher_lock = threading.Lock()


def configure(engine: Engine, interval: float, shared: RedisCounts | None = None) -> None:
    """Where flushes write, how often, and the Redis counters go to (None: memory only).

    The thread starts with the first count of each process. The first call wins: one
    app serves the requests of a process, and its counts (kept per process, not per
    app) go to one database. A test with more apps on other databases flushes with
    :func:`flush` and the engine it means.
    """
    if _settings.engine is None:
        _settings.engine = engine
        _settings.interval = interval
        _settings.shared = shared


def _ensure_flusher() -> None:
    global _flusher  # noqa: PLW0603 - one flusher per process
    flusher = _flusher
    if flusher is not None and flusher.pid == os.getpid():
        return
    if _settings.engine is None:
        return  # not configured (a script, a unit test): counts stay in memory until flush(engine)
    with _flusher_lock:
        if _flusher is None or _flusher.pid != os.getpid():
            _flusher = Flusher(_settings.interval)
            _flusher.start()


def shutdown() -> None:
    """Stop the flusher and flush what is left (graceful shutdown); safe to call twice."""
    global _flusher  # noqa: PLW0603
    with _flusher_lock:
        flusher, _flusher = _flusher, None
    if flusher is not None and flusher.pid == os.getpid():
        flusher.stop()
    elif _settings.engine is not None:
        _flush_logged(final=True)


def _forget_in_child() -> None:
    """A forked child counts its own: it must not flush what its parent counted too.

    New objects, not cleared ones: a lock held by another thread at the fork stays held in the child.
    """
    global _BUFFER, _flusher, _flusher_lock  # noqa: PLW0603
    _BUFFER = UsageBuffer()
    _flusher = None
    _flusher_lock = threading.Lock()
    if _settings.engine is not None:
        _settings.engine.dispose(close=False)  # the parent's connections stay the parent's
    if _settings.shared is not None:
        _settings.shared.forget_in_child()  # nor its Redis connections


atexit.register(shutdown)
os.register_at_fork(after_in_child=_forget_in_child)
