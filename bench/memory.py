"""Memory against the tenant count: the app worker's RSS, and a pooled backend's memory, raw SQL as baseline.

    DATABASE_URL=postgresql://root@127.0.0.1:5432/postgres .venv/bin/python bench/memory.py --tenants 1000
    DATABASE_URL=postgresql://root@127.0.0.1:5432/postgres .venv/bin/python bench/memory.py --tenants 10000

At 10,000 tenants this is a heavy run (minutes of provisioning on every core): on a
machine shared with other benchmarks, run it under their common lock (``flock``).

A scratch database (on DATABASE_URL's server, else where the tests would make one)
gets the public migrations and N real tenants (provision_tenant in a few processes,
each tenant with its admin API key). Then, in this process, three passes call on every
tenant once, in the same order:

1. **app, recycling on**: ``GET /v1/repositories`` with the tenant's key, through the
   WSGI app (Flask's test client: the whole request path, in process), configured as
   by default (``DB_RECYCLE_AFTER_TENANTS``, or ``--recycle-after``). After 10, 1,000, N
   and every N/20 tenants: this process's VmRSS (after a gc), and the memory of the
   pool's backend, read just before the connection goes back to the pool (a pool
   ``checkin`` listener ahead of the recycling one, so a connection about to be
   recycled is measured at its largest);
2. **app, recycling off**: the same with ``DB_RECYCLE_AFTER_TENANTS=0``;
3. **raw**: one psycopg connection, per tenant ``set_config('search_path', …, true)``
   and the SELECT the endpoint sends (``repositories`` by id, limit 51), committed:
   the physical baseline, what any backend serving those schemas must cache. Then the
   same with a SELECT from every table of the schema (``repositories``, ``audit_events``,
   ``alembic_version``): what one schema costs a backend at most, for sizing.

Requests are sequential, so each app pass uses one pooled connection. Backend memory is
measured twice: ``sum(total_bytes) FROM pg_backend_memory_contexts`` asked by the
measured connection itself (PostgreSQL 14+, superuser or pg_read_all_stats), and,
when this machine can read the backend's ``/proc/<pid>/smaps_rollup`` (the server runs
here, the bench as root or the server's user), its Private (clean + dirty) and Pss:
RSS would count the shared buffers the backend has touched.

Also timed, for sizing the recycling: opening a connection, and a schema's first and
later transactions on the raw connection (first touch loads its catalog entries).

Prints the values and ratios; writes docs/img/memory.png when matplotlib is importable
(``.venv/bin/pip install matplotlib``; it is no project dependency); drops the database.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.common

from app.config import defaults
from app.extensions import db
from app.tenancy import recycling
from app.testing import make_test_app
from bench.common import add_common_arguments, provision_tenants, pyplot, report_plot, save_figure, scratch_database

MB = 1024 * 1024
MEMORY_SQL = "SELECT pg_backend_pid(), (SELECT sum(total_bytes) FROM pg_backend_memory_contexts)::bigint"
RAW_SELECT = ("SELECT * FROM repositories ORDER BY id LIMIT 51",)
#: Every table of a tenant schema (planning opens each table's indexes too): the most one schema can cost.
EVERY_TABLE = (*RAW_SELECT, "SELECT * FROM audit_events ORDER BY occurred_at DESC, id DESC LIMIT 51",
               "SELECT version_num FROM alembic_version")


# --- setup --------------------------------------------------------------------------

def provision(url: str, count: int, processes: int) -> list[tuple[str, str]]:
    return provision_tenants(url, [f"m{i:06d}" for i in range(count)], processes)


# --- measuring ----------------------------------------------------------------------


def own_rss() -> int:
    """This process's VmRSS in bytes, after a full collection."""
    gc.collect()
    return _status_kb(Path("/proc/self/status"), "VmRSS") * 1024


def _status_kb(path: Path, field_name: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in {path}")


def smaps(pid: int) -> tuple[int, int] | None:
    """(Private clean + dirty, Pss) of a process in bytes, or None when this machine cannot read it."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0]) * 1024
    return values["Private_Clean"] + values["Private_Dirty"], values["Pss"]


@dataclass
class Sample:
    served: int  # tenants this pass has served so far
    on_backend: int | None  # distinct tenants the measured connection served (None: untracked)
    contexts: int  # sum(total_bytes) of pg_backend_memory_contexts
    private: int | None
    pss: int | None


def measure_dbapi(dbapi_connection: Any, served: int, on_backend: int | None) -> Sample:
    """Ask the backend behind a psycopg connection (idle, not in a transaction) for its memory."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(MEMORY_SQL)
        pid, contexts = cursor.fetchone()
    finally:
        cursor.close()
        dbapi_connection.rollback()
    found = smaps(pid)
    return Sample(served, on_backend, contexts, *(found if found else (None, None)))


@dataclass
class Pass:
    name: str
    samples: list[Sample] = field(default_factory=list)
    rss: dict[int, int] = field(default_factory=dict)  # tenants served -> this process's RSS
    seconds: list[float] = field(default_factory=list)  # per tenant

    def at(self, served: int) -> Sample:
        return next(s for s in self.samples if s.served == served)

    def peak(self) -> Sample:
        return max(self.samples, key=lambda s: s.contexts)


def sample_points(count: int) -> list[int]:
    return sorted({n for n in (10, 1000, count, *(count * k // 20 for k in range(1, 21))) if 0 < n <= count})


# --- the three passes ---------------------------------------------------------------


def app_pass(name: str, url: str, tenants: list[tuple[str, str]], points: list[int], recycle_after: int,
             with_rss: bool) -> Pass:
    """Every tenant once through the WSGI app; the pool's backend measured at each point."""
    result = Pass(name)
    _keys_used_recently(url)
    app = make_test_app(url, DB_RECYCLE_AFTER_TENANTS=recycle_after)
    want = set(points)
    pending: list[int] = []  # the tenant count to measure at the next check-in

    def measure_at_checkin(dbapi_connection: Any, record: Any) -> None:
        if pending and dbapi_connection is not None:
            result.samples.append(measure_dbapi(dbapi_connection, pending.pop(), recycling.tenants_served(record)))

    with app.app_context():
        engine = db.engine
        event.listen(engine.pool, "checkin", measure_at_checkin, insert=True)  # before recycling's listener
        client = app.test_client()
        for served, (_slug, token) in enumerate(tenants, start=1):
            if served in want:
                pending.append(served)
            started = time.perf_counter()
            response = client.get("/v1/repositories", headers={"Authorization": f"Bearer {token}"})
            result.seconds.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{name}: tenant {served} got {response.status_code}: {response.get_data()!r}")
            if pending:
                raise RuntimeError(f"{name}: the request did not return its connection to the pool")
            if with_rss and served in want:
                result.rss[served] = own_rss()
        engine.dispose()
    return result


def _keys_used_recently(url: str) -> None:
    """Mark every key as just used, so no request of either pass writes ``last_used_at``.

    A key's first use in a minute refreshes it: left alone, the first pass would pay a
    write per request that the second one skips. An hour ahead keeps a long pass read-only too.
    """
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("UPDATE public.api_keys SET last_used_at = now() + interval '1 hour'")


def raw_pass(name: str, dsn: str, schemas: list[str], points: list[int],
             statements: tuple[str, ...]) -> tuple[Pass, float]:
    """Every schema once on one psycopg connection; then the median ms of a warm transaction."""
    result = Pass(name)
    want = set(points)
    with psycopg.connect(dsn) as conn:
        for served, schema in enumerate(schemas, start=1):
            started = time.perf_counter()
            _raw_transaction(conn, schema, statements)
            result.seconds.append(time.perf_counter() - started)
            if served in want:
                result.samples.append(measure_dbapi(conn, served, served))
        warm = _timed(lambda schema: _raw_transaction(conn, schema, statements), schemas[-500:])
    return result, statistics.median(warm) * 1000


def _raw_transaction(conn: psycopg.Connection, schema: str, statements: tuple[str, ...]) -> None:
    conn.execute("SELECT set_config('search_path', %s, true)", (f'"{schema}"',))
    for statement in statements:
        conn.execute(statement).fetchall()
    conn.commit()


def _timed(work: Callable[[Any], None], items: list[Any]) -> list[float]:
    seconds = []
    for item in items:
        started = time.perf_counter()
        work(item)
        seconds.append(time.perf_counter() - started)
    return seconds


def connect_ms(dsn: str, times: int = 20) -> float:
    """Median ms to open a connection and run a first statement on it (what a recycle adds)."""
    def once(_: object) -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT 1").fetchone()
    return statistics.median(_timed(once, list(range(times)))) * 1000


# --- report -------------------------------------------------------------------------


def mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MB:.1f}"


def report(version: str, count: int, recycle_after: int, passes: list[Pass], raw: Pass, points: list[int],
           connect: float, warm_ms: float, every_table: Pass) -> None:
    on = passes[0]
    print()
    print(f"PostgreSQL {version}; {count} tenants, each served once; DB_RECYCLE_AFTER_TENANTS={recycle_after}"
          " in the first pass")
    print("\n(a) app worker (this process, requests through the WSGI app): VmRSS after serving N distinct tenants")
    first = 10 if 10 in on.rss else min(on.rss)
    for n, rss in sorted(on.rss.items()):
        if n in (10, 1000, count):
            print(f"  {n:>6} tenants: {rss / MB:7.1f} MB  (+{(rss - on.rss[first]) / MB:.1f} MB since {first})")

    print("\n(b) backend memory per connection after N tenants (MB): memory contexts / smaps Private / Pss")
    print(f"  {'N':>6}  " + "  ".join(f"{p.name:>28}" for p in [*passes, raw])
          + f"  {'off/raw':>8}  {'on/raw':>7}")
    for n in points:
        if n not in (10, 1000, count) and n != points[-1]:
            continue
        cells = [p.at(n) for p in [*passes, raw]]
        print(f"  {n:>6}  " + "  ".join(f"{mb(s.contexts):>10} /{mb(s.private):>7} /{mb(s.pss):>7}" for s in cells)
              + f"  {cells[1].contexts / cells[2].contexts:>7.2f}x  {cells[0].contexts / cells[2].contexts:>6.2f}x")
    peak = on.peak()
    print(f"  recycling on, largest backend seen: {mb(peak.contexts)} MB of memory contexts, "
          f"{mb(peak.private)} MB private, having served {peak.on_backend} tenants")
    end = every_table.samples[-1]
    print(f"  {every_table.name}: {mb(end.contexts)} / {mb(end.private)} / {mb(end.pss)} at {end.served}")
    for p in (*passes[1:], raw, every_table):
        print(f"  {p.name}: {per_schema(p)} per schema touched")

    print("\nrecycling costs (medians):")
    print(f"  open a connection + first statement: {connect:.2f} ms")
    print(f"  raw transaction on a schema's first touch: {statistics.median(raw.seconds) * 1000:.2f} ms,"
          f" on a schema already cached: {warm_ms:.2f} ms")
    for p in passes:
        print(f"  {p.name}: {statistics.median(p.seconds) * 1000:.2f} ms per request, "
              f"{sum(p.seconds):.1f} s in all")


def per_schema(p: Pass) -> str:
    """The slope from the first to the last sample: memory contexts (and private) KB per schema."""
    first, last = p.samples[0], p.samples[-1]
    if last.served <= first.served:
        return "n/a"
    n = last.served - first.served
    text = f"{(last.contexts - first.contexts) / n / 1024:.1f} KB of memory contexts"
    if last.private is not None and first.private is not None:
        text += f", {(last.private - first.private) / n / 1024:.1f} KB private"
    return text


def plot(path: Path, title: str, passes: list[Pass], raw: Pass, every_table: Pass) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    on = passes[0]
    xs = sorted(on.rss)
    left.plot(xs, [on.rss[x] / MB for x in xs], "o-", color="tab:blue")
    left.set_xlabel("distinct tenants served")
    left.set_ylabel("VmRSS, MB")
    left.set_ylim(bottom=0)
    left.set_title(f"(a) app worker RSS ({on.name})", fontsize=9)
    for p, color in zip([*passes, raw, every_table], ("tab:blue", "tab:red", "tab:gray", "black"), strict=True):
        right.plot([s.served for s in p.samples], [s.contexts / MB for s in p.samples], "o-", markersize=3,
                   color=color, label=f"{p.name}: memory contexts")
        if all(s.private is not None for s in p.samples):
            right.plot([s.served for s in p.samples], [(s.private or 0) / MB for s in p.samples], "--",
                       color=color, alpha=0.6, label=f"{p.name}: private (smaps)")
    right.set_xlabel("distinct tenants served by the pass")
    right.set_ylabel("backend memory, MB")
    right.set_ylim(bottom=0)
    right.set_title("(b) the pooled connection's backend (before check-in)", fontsize=9)
    right.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000, help="tenants to provision and serve (default 1000)")
    parser.add_argument("--recycle-after", type=int, default=defaults()["DB_RECYCLE_AFTER_TENANTS"],
                        help="DB_RECYCLE_AFTER_TENANTS of the first pass (default: the setting's default)")
    add_common_arguments(parser, "memory.png")
    args = parser.parse_args()
    points = sample_points(args.tenants)

    with scratch_database() as scratch:
        url, dsn, version = scratch.url, scratch.dsn, scratch.version
        print(f"PostgreSQL {version}; {args.tenants} tenants", file=sys.stderr)
        tenants = provision(url, args.tenants, args.provision_processes)
        schemas = ["t_" + slug for slug, _ in tenants]
        passes = []
        for name, limit, with_rss in ((f"app, recycle after {args.recycle_after}", args.recycle_after, True),
                                      ("app, recycling off", 0, False)):
            started = time.perf_counter()
            passes.append(app_pass(name, url, tenants, points, limit, with_rss))
            print(f"  {name}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
        raw, warm_ms = raw_pass("raw SQL", dsn, schemas, points, RAW_SELECT)
        every_table, _ = raw_pass("raw SQL, every table", dsn, schemas, points, EVERY_TABLE)
        connect = connect_ms(dsn)

    report(version, args.tenants, args.recycle_after, passes, raw, points, connect, warm_ms, every_table)
    if not args.no_plot:
        title = f"Memory after serving N distinct tenants, PostgreSQL {version.split()[0]}, {args.tenants} tenants"
        report_plot(plot(args.plot, title, passes, raw, every_table), args.plot)


if __name__ == "__main__":
    main()
