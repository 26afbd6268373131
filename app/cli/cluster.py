"""``flask cluster status|rebalance|drain|adopt`` and ``flask tenants move``: operating a Citus cluster.

Commands parse, call :mod:`app.tenancy.cluster` and :mod:`app.tenancy.placement`, and
render: text on a terminal, JSON with ``--json``. Progress goes to stderr, so the JSON
on stdout stays parseable. Exit codes as in :mod:`app.cli`: 0 done, 1 a domain error
(one line on stderr) or a move that failed, 2 bad usage.
"""

from __future__ import annotations

import json
import sys

import click
from flask.cli import with_appcontext

from ..extensions import db
from ..tenancy import audit, cluster, placement
from ..tenancy.errors import PlacementRefused
from .errors import CommandGroup, domain_errors

cluster_cli = CommandGroup("cluster", help="Citus: nodes, tenant placement, rebalancing, draining, adoption.")

_MODE = click.option(
    "--mode", type=click.Choice(placement.MODES), default="auto", show_default=True,
    help="Citus shard transfer mode: auto (logical replication when every table has a primary key "
         "or replica identity), block_writes (writes wait during the copy), force_logical.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _progress(slug: str, message: str) -> None:
    click.echo(f"{slug}: {message}", err=True)


def _done(result: placement.MoveResult) -> None:
    if result.status == "moved":
        click.echo(f"{result.slug}: moved {result.source} -> {result.target} in {result.seconds:.1f} s", err=True)
    else:
        click.echo(f"{result.slug}: FAILED {result.source} -> {result.target}: {result.error}", err=True)


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


@cluster_cli.command("status")
@_JSON
@domain_errors
def cluster_status(as_json: bool) -> None:
    """Nodes, tenants and bytes per node, tenants not yet distributed."""
    with db.engine.connect() as connection:
        try:
            report = cluster.status(connection)
        except cluster.NotCitus as exc:
            raise PlacementRefused(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(f"Citus {report.citus_version}, schema-based sharding "
               f"{'on' if report.schema_sharding else 'off'}, {report.tenants} tenants")
    click.echo(f"{'node':<24} {'role':<12} {'active':<7} {'new schemas':<12} {'tenants':>8} {'bytes':>10}")
    for node in report.nodes:
        click.echo(f"{node.address:<24} {node.role:<12} {'yes' if node.active else 'no':<7} "
                   f"{'yes' if node.takes_new_schemas else 'no':<12} {node.tenants:>8} {_human_bytes(node.bytes):>10}")
    if report.not_distributed:
        shown = ", ".join(report.not_distributed[:10]) + (" …" if len(report.not_distributed) > 10 else "")
        click.echo(f"{len(report.not_distributed)} tenant(s) not distributed (run `flask cluster adopt`): {shown}")


def _plan_output(report: placement.PlanReport, as_json: bool, dry_run: bool) -> None:
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "dry_run": dry_run}))
    else:
        click.echo(f"before: {_loads(report.before)}")
        click.echo(f"after:  {_loads(report.after)}")
        if dry_run:
            for move in report.moves:
                click.echo(f"would move {move.slug}: {move.source} -> {move.target}")
        summary = report.as_dict()
        verb = "planned" if dry_run else "moved"
        count = len(report.moves) if dry_run else summary["moved"]
        click.echo(f"{count} move(s) {verb}" + ("" if dry_run else f", {summary['failed']} failed"))
    if not dry_run and any(r.status == "failed" for r in report.results):
        sys.exit(1)


def _loads(load: dict[str, int]) -> str:
    return ", ".join(f"{node} {count}" for node, count in sorted(load.items())) or "no workers"


@cluster_cli.command("rebalance")
@click.option("--by", type=click.Choice(["count", "size"]), default="count", show_default=True,
              help="Even out the number of tenants, or their bytes, per worker.")
@click.option("--dry-run", is_flag=True, help="Print the moves without making them.")
@_MODE
@_JSON
@domain_errors
def cluster_rebalance(by: str, dry_run: bool, mode: str, as_json: bool) -> None:
    """Move tenants between workers until they are even (one online move at a time)."""
    with audit.acting_as(audit.cli_actor()):
        report = placement.rebalance(db.engine, by=by, mode=mode, progress=_progress, done=_done, dry_run=dry_run)
    _plan_output(report, as_json, dry_run)


@cluster_cli.command("drain")
@click.argument("node")
@click.option("--dry-run", is_flag=True, help="Print the moves without making them.")
@_MODE
@_JSON
@domain_errors
def cluster_drain(node: str, dry_run: bool, mode: str, as_json: bool) -> None:
    """Move every tenant off worker NODE (HOST:PORT) and place no new ones there."""
    with audit.acting_as(audit.cli_actor()):
        report = placement.drain(db.engine, node, mode=mode, progress=_progress, done=_done, dry_run=dry_run)
    _plan_output(report, as_json, dry_run)


@cluster_cli.command("adopt")
@click.option("--tenant", "slugs", multiple=True, help="Only this tenant (repeatable).")
@_JSON
@domain_errors
def cluster_adopt(slugs: tuple[str, ...], as_json: bool) -> None:
    """Distribute tenant schemas created before schema-based sharding was on (resumable)."""

    def done(slug: str, error: str | None) -> None:
        click.echo(f"{slug}: {'distributed' if error is None else 'FAILED: ' + error}", err=True)

    with audit.acting_as(audit.cli_actor()):
        report = placement.adopt(db.engine, slugs=slugs, done=done)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(f"{len(report.adopted)} distributed, {len(report.failed)} failed, "
                   f"{report.already} already distributed")
    if report.failed:
        sys.exit(1)


@click.command("move")  # added to ``flask tenants`` by app.cli.tenants
@with_appcontext
@click.argument("slug")
@click.option("--to", "target", required=True, metavar="HOST:PORT", help="The worker to move the tenant to.")
@_MODE
@_JSON
@domain_errors
def tenants_move(slug: str, target: str, mode: str, as_json: bool) -> None:
    """Move tenant SLUG's schema to another Citus worker, online (citus_schema_move)."""
    with audit.acting_as(audit.cli_actor()):
        result = placement.move_tenant(db.engine, slug, target, mode=mode, progress=None if as_json else _progress)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    elif result.status == "moved":
        click.echo(f"moved {slug} {result.source} -> {result.target} in {result.seconds:.1f} s")
    if result.status != "moved":
        click.echo(f"error: moving {slug} to {target} failed: {result.error}", err=True)
        sys.exit(1)
