"""``flask tenants migrate|status|check``: the fan-out, rendered for a terminal or a log.

The work is done by :mod:`app.tenancy.fanout` and :mod:`app.tenancy.drift`; this
module parses options, draws progress on stderr (a bar on a terminal, plain lines
otherwise), prints a summary or ``--json`` on stdout, and picks the exit status:
0 every selected schema is at the target, 1 some failed (or drift was found),
2 bad usage or another fan-out holds the lock.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import click
from flask import current_app

from ..extensions import db
from ..tenancy import drift, fanout, migrations
from ..tenancy.errors import FanoutLocked, TenantNotFound, UnknownRevision
from ..tenancy.fanout import Counts, FanoutOptions, TenantOutcome
from ..tenancy.naming import schema_name_for
from .app import with_cli_app


@contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    """``name``'s logger at ``level`` for the block.

    Alembic's INFO lines about scratch schemas and offline rendering are details; the
    fan-out's own lines say what the progress bar already says while it is drawn.
    """
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _usage_error(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


class BarProgress:
    """A one-line progress bar on a terminal, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started_at = time.monotonic()
        self.drawn = 0.0

    def started(self, run_id: int, counts: Counts) -> None:
        self._line(f"run {run_id}: {counts.total} schemas to migrate, {counts.current} already current")
        self._draw(counts, force=True)

    def outcome(self, outcome: TenantOutcome, counts: Counts) -> None:
        if outcome.status == "failed":
            self._line(f"FAILED {outcome.slug} ({outcome.from_revision} -> target): {outcome.error}")
        self._draw(counts, force=counts.processed == counts.total)

    def retrying(self, slug: str, attempt: int, delay: float, error: str) -> None:
        self._line(f"retrying {slug} in {delay:.1f}s (attempt {attempt} failed: {error})")

    def grew(self, added: int, counts: Counts) -> None:
        self._line(f"{added} tenants provisioned meanwhile; migrating them too")

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write("\r\033[K" + text + "\n")
        self.drawn = 0.0

    def _draw(self, counts: Counts, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.drawn < 0.1:
            return
        self.drawn = now
        total = max(counts.total, 1)
        filled = int(30 * counts.processed / total)
        elapsed = now - self.started_at
        rate = counts.processed / elapsed if elapsed > 0 else 0.0
        left = counts.total - counts.processed
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        self.stream.write(
            f"\r\033[K[{'#' * filled}{'.' * (30 - filled)}] {counts.processed}/{counts.total}"
            f"  failed {counts.failed}  left {left}  {rate:.1f}/s  ETA {eta}"
        )
        self.stream.flush()


class LogProgress(BarProgress):
    """Plain lines for logs: failures and retries as they happen, a count every 10% or 10 s."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.last_decile = -1

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _draw(self, counts: Counts, force: bool = False) -> None:
        decile = 10 * counts.processed // max(counts.total, 1)
        now = time.monotonic()
        if not force and decile == self.last_decile and now - self.drawn < 10:
            return
        self.last_decile, self.drawn = decile, now
        elapsed = now - self.started_at
        rate = counts.processed / elapsed if elapsed > 0 else 0.0
        self._line(
            f"progress: {counts.processed}/{counts.total} done, {counts.failed} failed, "
            f"{counts.total - counts.processed} left, {rate:.1f} schemas/s"
        )

    def finish(self) -> None:
        pass


def register(group: click.Group) -> None:
    group.add_command(tenants_migrate)
    group.add_command(tenants_status)
    group.add_command(tenants_check)


@click.command("migrate")
@with_cli_app
@click.option("--to", "target", default="head", show_default=True,
              help="Target revision; one below a schema's revision downgrades it.")
@click.option("--tenant", "slugs", multiple=True, metavar="SLUG", help="Only this tenant (repeatable).")
@click.option("--all", "all_tenants", is_flag=True, help="Every tenant (the default).")
@click.option("--jobs", type=click.IntRange(min=1), default=fanout.default_jobs, show_default="min(4, CPUs)",
              help="Parallel workers (threads), one database connection each.")
@click.option("--batch", "--canary", "batch", type=click.IntRange(min=1), default=None,
              help="Migrate only the first N behind tenants (slug order), then stop; rerun to continue.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--sql", "as_sql", is_flag=True, help="Print each schema's SQL; change nothing.")
@click.option("--fail-fast", is_flag=True, help="Schedule no new schema after the first failure.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Seconds a schema may wait for a lock (0: forever).")
@click.option("--statement-timeout", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds a single statement may run (0: no limit).")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
              help="Retries per schema after a lock timeout or deadlock, with exponential backoff.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report on stdout.")
def tenants_migrate(
    target: str, slugs: tuple[str, ...], all_tenants: bool, jobs: int, batch: int | None,
    dry_run: bool, as_sql: bool, fail_fast: bool, lock_timeout: float, statement_timeout: float,
    retries: int, as_json: bool,
) -> None:
    """Migrate tenant schemas to a revision: parallel, one transaction per schema, recorded."""
    if slugs and all_tenants:
        _usage_error("--tenant and --all exclude each other")
    if dry_run and as_sql:
        _usage_error("--dry-run and --sql exclude each other")
    options = FanoutOptions(
        target=target, slugs=tuple(dict.fromkeys(slugs)), batch=batch, jobs=jobs, fail_fast=fail_fast,
        lock_timeout=lock_timeout, statement_timeout=statement_timeout, retries=retries,
        location=current_app.config["TENANT_MIGRATIONS_LOCATION"],
    )
    try:
        if dry_run or as_sql:
            _preview(options, as_sql=as_sql, as_json=as_json)
            return
        on_terminal = sys.stderr.isatty()
        progress = BarProgress(sys.stderr) if on_terminal else LogProgress(sys.stderr)
        url = db.engine.url.render_as_string(hide_password=False)
        try:
            with _logger_level("app.tenancy.fanout", logging.ERROR if on_terminal else logging.NOTSET):
                report = fanout.run(url, options, progress)
        finally:
            progress.finish()
    except (FanoutLocked, UnknownRevision, TenantNotFound) as exc:
        _usage_error(str(exc))
        return
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        _summary(report)
    sys.exit(report.exit_code)


def _summary(report: fanout.RunReport) -> None:
    c = report.counts
    click.echo(
        f"run {report.run_id} {report.status} in {report.elapsed_s:.1f}s, target {report.target or 'base'}: "
        f"{c.migrated} migrated, {c.current} already current, {c.failed} failed"
        + (f", {c.skipped} skipped after the first failure" if c.skipped else "")
        + (f", {c.deleted} deleted meanwhile" if c.deleted else "")
        + (f", {c.remaining} left for a later run" if c.remaining else "")
    )
    for failure in report.failures:
        click.echo(
            f"  {failure.slug}: at {failure.from_revision or 'base'}, {failure.attempts} attempt(s): {failure.error}"
        )


def _preview(options: FanoutOptions, *, as_sql: bool, as_json: bool) -> None:
    with db.engine.connect() as connection, _logger_level("alembic", logging.WARNING):
        the_plan = fanout.plan(connection, options)
        if as_sql:
            for tenant, current, sql in fanout.render_plan_sql(connection, the_plan, options.location):
                click.echo(f"-- tenant {tenant.slug} ({schema_name_for(tenant.slug)}): {current or 'base'} -> "
                           f"{the_plan.target or 'base'}")
                click.echo(sql)
            if not the_plan.pending:  # stdout stays pure SQL (empty); the reason goes to stderr
                click.echo(f"-- nothing to migrate: {len(the_plan.current)} tenant(s) already at "
                           f"{the_plan.target or 'base'}", err=True)
            return
    steps = {
        t.slug: migrations.plan_steps(t.revision, the_plan.target, options.location) for t in the_plan.pending
    }
    if as_json:
        click.echo(json.dumps({
            "target": the_plan.target,
            "pending": [
                {"slug": t.slug, "from": t.revision, "to": the_plan.target,
                 "steps": [s.revision for s in steps[t.slug]]}
                for t in the_plan.pending
            ],
            "current": len(the_plan.current), "deferred": len(the_plan.deferred),
        }))
        return
    for t in the_plan.pending:
        direction = steps[t.slug][0].direction if steps[t.slug] else "none"
        click.echo(f"{t.slug:<40} {t.revision or 'base':>12} -> {the_plan.target or 'base':<12} "
                   f"{direction}, {len(steps[t.slug])} step(s)")
    click.echo(f"plan: {len(the_plan.pending)} to migrate, {len(the_plan.current)} already current"
               + (f", {len(the_plan.deferred)} left for a later run" if the_plan.deferred else "")
               + " (dry run: nothing changed)")


@click.command("status")
@with_cli_app
@click.option("--behind", is_flag=True, help="List only tenants not at head.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenants_status(behind: bool, as_json: bool) -> None:
    """Each tenant's schema revision against head, and how many tenants are at each revision."""
    head = migrations.head_revision(current_app.config["TENANT_MIGRATIONS_LOCATION"])
    with db.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT slug, status, schema_revision FROM public.tenants ORDER BY slug"
        ).all()
    counts = Counter(revision for _, _, revision in rows)
    listed = [row for row in rows if not behind or row[2] != head]
    if as_json:
        click.echo(json.dumps({
            "head": head,
            "tenants": [{"slug": s, "status": st, "revision": r, "at_head": r == head} for s, st, r in listed],
            "counts": {str(r): n for r, n in counts.most_common()},
            "behind": sum(n for r, n in counts.items() if r != head),
        }))
        return
    for slug, status, revision in listed:
        click.echo(f"{slug:<40} {status:<10} {revision or '-':<12} {'head' if revision == head else 'BEHIND'}")
    click.echo(f"head {head}: " + ", ".join(f"{n} at {r or 'none'}" for r, n in counts.most_common())
               if rows else f"head {head}: no tenants")


@click.command("check")
@with_cli_app
@click.option("--tenant", "slugs", multiple=True, metavar="SLUG", help="Only this tenant (repeatable).")
@click.option("--citus", is_flag=True, help="Also what would break on Citus, in every tenant schema and in the "
              "stream's head revision (tables without a primary key, triggers, foreign keys leaving the schema).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenants_check(slugs: tuple[str, ...], citus: bool, as_json: bool) -> None:
    """Exit 1 if a schema disagrees with its revision (ledger, alembic_version or catalog)."""
    location = current_app.config["TENANT_MIGRATIONS_LOCATION"]
    with _logger_level("alembic", logging.WARNING):
        report = drift.check(db.engine, slugs=slugs, location=location, citus=citus)
    head = report.head
    if as_json:
        data: dict[str, Any] = {
            "checked": report.checked,
            "drifted": [
                {"slug": d.slug, "schema_name": d.schema_name, "recorded_revision": d.recorded_revision,
                 "actual_revision": d.actual_revision, "problems": d.problems}
                for d in report.drifted
            ],
        }
        if head is not None:
            data["head"] = {"problems": head.problems, "notes": head.notes}
        click.echo(json.dumps(data))
    else:
        for d in report.drifted:
            click.echo(f"{d.slug} ({d.schema_name}, revision {d.actual_revision or d.recorded_revision}):")
            for problem in d.problems:
                click.echo(f"  {problem}")
        if head is not None and (head.problems or head.notes):
            click.echo("the stream's head revision:")
            for line in head.problems:
                click.echo(f"  {line}")
            for line in head.notes:
                click.echo(f"  note: {line}")
        click.echo(f"checked {report.checked} schemas: {len(report.drifted)} drifted"
                   + (f"; head revision: {len(head.problems)} Citus problem(s)" if head is not None else ""))
    failed = bool(report.drifted) or bool(head and head.problems)
    sys.exit(1 if failed else 0)


