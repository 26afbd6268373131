"""Migration fan-out: `flask tenants migrate` against the same DDL sent raw, in the same run.

    .venv/bin/python bench/fanout.py                                  # 1,000 tenants, jobs 1,2,4, 2 repetitions
    .venv/bin/python bench/fanout.py --tenants 10000 --jobs 4 --repeat 1
    DATABASE_URL=postgresql://root@127.0.0.1:5432/postgres .venv/bin/python bench/fanout.py

A scratch database (on DATABASE_URL's server, else where the tests would make one:
TEST_DATABASE_URL, Docker, or a throwaway embedded server) gets the public migrations
and N real tenants (provision_tenant, in a few processes), each with a few
repositories rows. A copy of tenant_migrations/ in a temporary directory gets one
more revision on top of the shipped head: add ``repositories.archived_at`` and index it.

For each --jobs value J and each repetition, two sides move every schema from the head
to that revision:

- fan-out: ``flask tenants migrate --jobs J --json`` as a subprocess, timed from start
  to exit (interpreter, app, coordinator, J worker threads, ledger and all);
- raw: the same DDL over psycopg, J connections in J threads, one transaction per
  schema (BEGIN, set_config(search_path), ALTER TABLE, CREATE INDEX, UPDATE
  alembic_version, UPDATE public.tenants, COMMIT), connections opened inside the timing.

Each side is put back at the head afterwards (not timed), and the order of the two
alternates between repetitions so drift on a shared machine hits both alike. Prints
the medians, schemas/second and the ratio fan-out/raw per J, plus the fixed cost of
the fan-out (a run with nothing behind: interpreter, app, plan, ledger). Writes a plot
to docs/img/fanout.png when matplotlib is importable (it is no project dependency:
``.venv/bin/pip install matplotlib``), and drops the scratch database.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.common

from app.tenancy.migrations import default_location, head_revision
from bench.common import add_common_arguments, provision_tenants, pyplot, report_plot, save_figure, scratch_database

ROOT = Path(__file__).resolve().parents[1]
BASE = head_revision()  # the shipped head: where provisioning leaves every schema
TARGET = "bench_archived_at"

REVISION = f'''"""archived_at on repositories (bench/fanout.py)

Revision ID: {TARGET}
Revises: {BASE}
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "{TARGET}"
down_revision = "{BASE}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("repositories", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_repositories_archived_at", "repositories", ["archived_at"])


def downgrade() -> None:
    op.drop_index("ix_repositories_archived_at", table_name="repositories")
    op.drop_column("repositories", "archived_at")
'''

RAW_UP = (
    "ALTER TABLE repositories ADD COLUMN archived_at timestamptz",
    "CREATE INDEX ix_repositories_archived_at ON repositories (archived_at)",
)
RAW_DOWN = (
    "DROP INDEX ix_repositories_archived_at",
    "ALTER TABLE repositories DROP COLUMN archived_at",
)


# --- setup --------------------------------------------------------------------------

def provision(url: str, count: int, processes: int) -> None:
    provision_tenants(url, [f"b{i:06d}" for i in range(count)], processes)


def fill(dsn: str, rows: int) -> None:
    """A few repositories rows per tenant, so CREATE INDEX has something to read."""
    if rows <= 0:
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        schemas = [r[0] for r in conn.execute("SELECT schema_name FROM public.tenants ORDER BY id")]
        for schema in schemas:
            conn.execute(
                f'INSERT INTO "{schema}".repositories (github_repo_id, owner, name, full_name)'
                " SELECT g, 'octocat', 'repo-' || g, 'octocat/repo-' || g FROM generate_series(1, %s) g",
                (rows,),
            )
        conn.execute("VACUUM ANALYZE")
        try:
            conn.execute("CHECKPOINT")
        except psycopg.Error:
            pass  # not allowed for this role: the alternation absorbs the difference


def stream_with_target(workdir: Path) -> Path:
    location = workdir / "tenant_migrations"
    shutil.copytree(default_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / f"{TARGET}.py").write_text(REVISION)
    return location


# --- the fan-out side ---------------------------------------------------------------


class Cli:
    """``flask tenants migrate`` as an operator runs it: a fresh process each time."""

    def __init__(self, url: str, location: Path) -> None:
        self.flask = str(Path(sys.executable).with_name("flask"))
        self.env = dict(os.environ, DATABASE_URL=url, TENANT_MIGRATIONS_LOCATION=str(location),
                        LOG_LEVEL="WARNING")
        self.env.pop("FLASK_APP", None)

    def migrate(self, *args: str) -> tuple[float, dict[str, Any]]:
        """Wall time from start to exit, and the --json report (plus ``cpu_s``: the processes' CPU time)."""
        command = [self.flask, "--app", "app", "tenants", "migrate", *args, "--json"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the coordinator waits for its workers
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[1:])} exited {done.returncode}:\n{done.stderr[-2000:]}"
                               f"\n{done.stdout[-2000:]}")
        return wall, {**json.loads(done.stdout.strip().splitlines()[-1]), "cpu_s": cpu}


# --- the raw side -------------------------------------------------------------------


def raw_pass(dsn: str, tenants: list[tuple[int, str]], jobs: int, up: bool) -> tuple[float, float]:
    """Every schema moved one revision over J psycopg connections in J threads; wall and CPU seconds."""
    statements, revision = (RAW_UP, TARGET) if up else (RAW_DOWN, BASE)
    work: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
    for tenant in tenants:
        work.put(tenant)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while True:
                    try:
                        tenant_id, schema = work.get_nowait()
                    except queue.Empty:
                        return
                    with conn.transaction():
                        conn.execute("SELECT set_config('search_path', %s, true)", (f'"{schema}"',))
                        for statement in statements:
                            conn.execute(statement)
                        conn.execute("UPDATE alembic_version SET version_num = %s", (revision,))
                        conn.execute("UPDATE public.tenants SET schema_revision = %s WHERE id = %s",
                                     (revision, tenant_id))
        except BaseException as exc:  # reported by the caller, after every thread ended
            errors.append(exc)

    cpu, started = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if errors:
        raise errors[0]
    return wall, cpu


def task_ms(dsn: str, run_id: int) -> float:
    """The median time a worker spent on one schema in that run (its own clock, from the ledger)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) FROM public.migration_outcomes"
            " WHERE run_id = %s AND status = 'migrated'", (run_id,)
        ).fetchone()
    return float(row[0]) if row and row[0] is not None else float("nan")


def check_all_at(dsn: str, revision: str, count: int) -> None:
    """Every tenant recorded at ``revision``, and the column present exactly when it should be."""
    with psycopg.connect(dsn) as conn:
        recorded = conn.execute(
            "SELECT count(*) FROM public.tenants WHERE schema_revision = %s", (revision,)
        ).fetchone()
        columns = conn.execute(
            "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname LIKE 't\\_%%' AND c.relname = 'repositories'"
            " AND a.attname = 'archived_at' AND NOT a.attisdropped"
        ).fetchone()
    want_columns = count if revision == TARGET else 0
    if recorded != (count,) or columns != (want_columns,):
        raise RuntimeError(f"expected {count} tenants at {revision}: recorded {recorded[0] if recorded else 0}, "
                           f"archived_at columns {columns[0] if columns else 0}")


# --- report -------------------------------------------------------------------------


def plot(path: Path, title: str, jobs: list[int], fanout: dict[int, list[float]], raw: dict[int, list[float]],
         count: int) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    xs = range(len(jobs))
    for offset, label, data, color in ((-width / 2, "flask tenants migrate", fanout, "tab:blue"),
                                       (width / 2, "raw SQL (psycopg)", raw, "tab:gray")):
        medians = [statistics.median(data[j]) for j in jobs]
        left.bar([x + offset for x in xs], medians, width, label=label, color=color)
        for j, x in zip(jobs, xs, strict=True):
            left.plot([x + offset] * len(data[j]), data[j], "k.", markersize=4)
        right.plot(list(jobs), [count / m for m in medians], "o-", label=label, color=color)
    for j, x in zip(jobs, xs, strict=True):
        ratio = statistics.median(fanout[j]) / statistics.median(raw[j])
        top = max(statistics.median(fanout[j]), statistics.median(raw[j]))
        left.annotate(f"{ratio:.1f}x", (x, top), ha="center", va="bottom", fontsize=9)
    left.set_xticks(list(xs), [str(j) for j in jobs])
    left.set_xlabel("--jobs (raw: connections)")
    left.set_ylabel(f"wall seconds, {count} schemas {BASE} -> {TARGET}")
    left.set_title("median wall time (dots: runs)")
    left.legend(fontsize=8)
    right.set_xticks(list(jobs))
    right.set_xlabel("--jobs (raw: connections)")
    right.set_ylabel("schemas / second")
    right.set_ylim(bottom=0)
    right.set_title("throughput")
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000, help="tenant schemas to migrate (default 1000)")
    parser.add_argument("--jobs", default="1,2,4", help="comma-separated --jobs values (default 1,2,4)")
    parser.add_argument("--repeat", type=int, default=2, help="repetitions per --jobs value (default 2)")
    parser.add_argument("--rows", type=int, default=10, help="repositories rows per tenant (default 10)")
    add_common_arguments(parser, "fanout.png")
    args = parser.parse_args()
    jobs = [int(j) for j in args.jobs.split(",") if j.strip()]

    fanout: dict[int, list[float]] = {j: [] for j in jobs}
    internal: dict[int, list[float]] = {j: [] for j in jobs}
    raw: dict[int, list[float]] = {j: [] for j in jobs}
    cpu_fanout: dict[int, list[float]] = {j: [] for j in jobs}
    cpu_raw: dict[int, list[float]] = {j: [] for j in jobs}
    tasks: dict[int, list[float]] = {j: [] for j in jobs}
    idle: list[float] = []

    workdir = Path(tempfile.mkdtemp(prefix="tenantry-bench-"))
    try:
        with scratch_database() as scratch:
            url, dsn, version = scratch.url, scratch.dsn, scratch.version
            print(f"PostgreSQL {version}; {args.tenants} tenants, jobs {jobs}, {args.repeat} repetition(s)",
                  file=sys.stderr)
            provision(url, args.tenants, args.provision_processes)
            fill(dsn, args.rows)
            location = stream_with_target(workdir)
            with psycopg.connect(dsn) as conn:
                tenants = [(r[0], r[1]) for r in conn.execute(
                    "SELECT id, schema_name FROM public.tenants ORDER BY slug")]
            check_all_at(dsn, BASE, args.tenants)
            cli = Cli(url, location)
            reset_jobs = str(max(jobs))

            for rep in range(args.repeat):
                for j in jobs:
                    order = ("fanout", "raw") if (rep + jobs.index(j)) % 2 == 0 else ("raw", "fanout")
                    for side in order:
                        if side == "fanout":
                            wall, report = cli.migrate("--jobs", str(j))
                            if report["status"] != "succeeded" or report["migrated"] != args.tenants:
                                raise RuntimeError(f"fan-out did not migrate every schema: {report}")
                            check_all_at(dsn, TARGET, args.tenants)
                            fanout[j].append(wall)
                            internal[j].append(report["elapsed_s"])
                            cpu_fanout[j].append(report["cpu_s"])
                            tasks[j].append(task_ms(dsn, report["run_id"]))
                            idle_wall, report = cli.migrate("--jobs", str(j))  # nothing behind now
                            if report["migrated"] != 0:
                                raise RuntimeError(f"a second run found work: {report}")
                            idle.append(idle_wall)
                            cli.migrate("--to", BASE, "--jobs", reset_jobs)
                        else:
                            wall, cpu = raw_pass(dsn, tenants, j, up=True)
                            check_all_at(dsn, TARGET, args.tenants)
                            raw[j].append(wall)
                            cpu_raw[j].append(cpu)
                            raw_pass(dsn, tenants, max(jobs), up=False)
                        check_all_at(dsn, BASE, args.tenants)
                    print(f"  rep {rep + 1}, jobs {j}: fan-out {fanout[j][-1]:.2f}s, raw {raw[j][-1]:.2f}s",
                          file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"PostgreSQL {version}, {args.tenants} tenant schemas {BASE} -> {TARGET} (add column + index), "
          f"{args.rows} rows each, {args.repeat} repetition(s), medians")
    print(f"{'jobs':>4} {'fan-out s':>10} {'raw s':>8} {'fan-out/s':>10} {'raw/s':>8} {'ratio':>7}"
          f" {'in-run s':>9} {'task ms':>8} {'client CPU s':>13} {'raw CPU s':>10}")
    for j in jobs:
        f, r = statistics.median(fanout[j]), statistics.median(raw[j])
        print(f"{j:>4} {f:>10.2f} {r:>8.2f} {args.tenants / f:>10.0f} {args.tenants / r:>8.0f} {f / r:>6.2f}x"
              f" {statistics.median(internal[j]):>9.2f} {statistics.median(tasks[j]):>8.2f}"
              f" {statistics.median(cpu_fanout[j]):>13.2f} {statistics.median(cpu_raw[j]):>10.2f}")
    idle_s = statistics.median(idle)
    print(f"fixed cost: a run with nothing behind takes {idle_s:.2f}s (interpreter, app, plan, ledger): "
          + ", ".join(f"{idle_s / statistics.median(fanout[j]):.0%} of jobs {j}" for j in jobs))
    print("in-run s: the coordinator's own elapsed_s (--json), where fan-out s is the process from start to exit;")
    print("task ms: median time a worker spent on one schema (ledger); client CPU s: CPU time of the flask")
    print("process (raw CPU s: of this process's threads), the database server not counted")
    if not args.no_plot:
        title = (f"flask tenants migrate vs raw SQL: {args.tenants} schemas, PostgreSQL {version.split()[0]}, "
                 f"median of {args.repeat}")
        report_plot(plot(args.plot, title, jobs, fanout, raw, args.tenants), args.plot)


if __name__ == "__main__":
    main()
