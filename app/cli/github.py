"""``flask github …``, ``flask tenants purge`` and ``flask tenants github-sync``.

What a delivery does is :mod:`app.services.github`; these commands list, replay and
purge the records it leaves, delete tenants whose GitHub App was uninstalled long
enough ago, and reconcile tenants with GitHub's repository lists
(:mod:`app.services.github_sync`). Each deletion, replay and tenant sync is a
transaction of its own.
"""

from __future__ import annotations

import json
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.orm import sessionmaker

from ..extensions import db, tenant_roles_active
from ..models.public import DELIVERY_OUTCOMES
from ..services import github, github_sync
from ..tenancy import audit, binding, lifecycle
from ..tenancy.errors import TenancyError
from .errors import CommandGroup, domain_errors
from .render import echo_rows

github_cli = CommandGroup("github", help="GitHub App webhook deliveries.")
deliveries_cli = CommandGroup("deliveries", help="The record of webhook deliveries (public.github_deliveries).")
github_cli.add_command(deliveries_cli)


@deliveries_cli.command("list")
@click.option("--outcome", type=click.Choice(DELIVERY_OUTCOMES), help="Only deliveries with this outcome.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def deliveries_list(outcome: str | None, limit: int, as_json: bool) -> None:
    """The newest deliveries first: id, event.action, installation, outcome, error."""
    rows: list[dict[str, Any]] = [{
        "delivery_id": d.delivery_id, "event": d.event, "action": d.action, "installation_id": d.installation_id,
        "tenant_id": d.tenant_id, "received_at": d.received_at.isoformat(), "outcome": d.outcome,
        "error": d.error, "replayable": d.payload is not None,
    } for d in github.list_deliveries(db.session(), outcome=outcome, limit=limit)]
    echo_rows(rows, as_json, empty="no deliveries",
              line=lambda row: f"{row['received_at'][:19]} {row['delivery_id']:<38} "
                               f"{row['event']}.{row['action'] or '-':<28} {row['installation_id'] or '-'!s:<12} "
                               f"{row['outcome']:<9} {row['error'] or ''}")


@deliveries_cli.command("purge")
@click.option("--older-than", "days", type=click.IntRange(min=1), metavar="DAYS",
              help="Delete records received more than DAYS days ago (default: GITHUB_DELIVERY_RETENTION_DAYS).")
def deliveries_purge(days: int | None) -> None:
    """Delete delivery records older than the retention period (payloads kept for replay go with them)."""
    days = days or current_app.config["GITHUB_DELIVERY_RETENTION_DAYS"]
    session = db.session()
    with session.begin():
        deleted = github.purge_deliveries(session, datetime.now(UTC) - timedelta(days=days))
    click.echo(f"deleted {deleted} delivery records older than {days} days")


@deliveries_cli.command("replay")
@click.argument("delivery_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every delivery whose payload is kept, oldest first.")
@click.option("--installation", type=int, help="With --all: only this installation's.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def deliveries_replay(delivery_ids: tuple[str, ...], every: bool, installation: int | None, as_json: bool) -> None:
    """Apply again deliveries whose payload was kept (failed, or for an installation not linked then).

    Exit 0 when each was applied (or found in place), 1 when one failed again or has no
    kept payload.
    """
    if bool(delivery_ids) == every:
        raise click.UsageError("name delivery ids, or --all")
    session = db.session()
    ids = list(delivery_ids) or github.replayable(session, installation_id=installation)
    session.rollback()
    settings = github.Settings(default_plan=current_app.config["GITHUB_DEFAULT_PLAN"],
                               migrations_location=current_app.config["TENANT_MIGRATIONS_LOCATION"],
                               tenant_role=tenant_roles_active())
    results, failed = [], False
    for delivery_id in ids:
        stored = github.stored_delivery(session, delivery_id)
        session.rollback()
        if stored is None:
            results.append({"delivery_id": delivery_id, "outcome": None, "detail": "no kept payload"})
            failed = True
            continue
        try:
            result = github.receive(session, stored, settings, replay=True)
        except github.DeliveryFailed as exc:
            results.append({"delivery_id": delivery_id, "outcome": "failed", "detail": str(exc)})
            failed = True
            continue
        results.append({"delivery_id": delivery_id, "outcome": result.outcome, "detail": result.detail})
    if as_json:
        click.echo(json.dumps(results))
    else:
        for row in results:
            click.echo(f"{row['delivery_id']}: {row['outcome'] or 'not replayed'} ({row['detail'] or ''})")
    sys.exit(1 if failed else 0)


@click.command("purge")
@with_appcontext
@click.option("--uninstalled-before", "before", required=True, type=click.DateTime(["%Y-%m-%d"]), metavar="DATE",
              help="Delete tenants whose GitHub App installation was deleted before DATE (YYYY-MM-DD, UTC).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (what was deleted).")
@domain_errors
def tenants_purge(before: datetime, yes: bool, as_json: bool) -> None:
    """Delete tenants uninstalled from GitHub before DATE: schema, row and keys, one transaction each."""
    session = db.session()
    doomed = github.uninstalled_before(session, before.replace(tzinfo=UTC))
    session.rollback()
    if not doomed:
        if not as_json:
            click.echo("no tenant to purge")
        else:
            click.echo("[]")
        return
    if not as_json or not yes:
        for slug, when in doomed:
            click.echo(f"{slug:<24} uninstalled {when.isoformat()[:19]}", err=as_json)
    if not yes:
        click.confirm(f"Delete these {len(doomed)} tenants and drop their schemas with all their data?",
                      abort=True, err=as_json)
    deleted = []
    with audit.acting_as(audit.cli_actor()):
        for slug, _ in doomed:
            try:
                with session.begin():
                    lifecycle.delete_tenant(session, slug)
            except BaseException:
                session.rollback()
                raise
            deleted.append(slug)
            if not as_json:
                click.echo(f"deleted tenant {slug}")
    if as_json:
        click.echo(json.dumps(deleted))


@click.command("github-sync")
@with_appcontext
@click.option("--tenant", "slugs", multiple=True, metavar="SLUG", help="A tenant to sync (repeatable).")
@click.option("--all", "every", is_flag=True, help="Every tenant linked to an installation not uninstalled.")
@click.option("--jobs", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Tenants synced at once (each its own GitHub client and database connection).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: one report per tenant.")
def tenants_github_sync(slugs: tuple[str, ...], every: bool, jobs: int, as_json: bool) -> None:
    """Reconcile tenants' repositories with their GitHub App installation's repository list.

    Per tenant: discovered (listed by GitHub), registered, updated, deactivated, errors,
    duration. Exit 0 when every tenant synced, 1 when one had errors, 2 on bad usage or
    without GITHUB_APP_ID/GITHUB_PRIVATE_KEY.
    """
    if bool(slugs) == every:
        raise click.UsageError("name tenants with --tenant, or --all")
    try:
        credentials = github_sync.AppCredentials.from_config(current_app.config)
    except github_sync.GithubNotConfigured as exc:
        raise click.UsageError(str(exc)) from None
    session = db.session()
    targets = list(dict.fromkeys(slugs)) or github_sync.tenants_to_sync(session)
    session.rollback()
    run = uuid.uuid4().hex[:12]
    factory = sessionmaker(bind=db.engine)
    binding.install(factory)

    def sync_one(slug: str) -> github_sync.SyncReport:
        with factory() as own:
            try:
                return github_sync.sync_tenant(own, slug, credentials, run=run)
            except (TenancyError, github_sync.SyncUnavailable) as exc:
                return github_sync.SyncReport(slug=slug, errors=[str(exc)])

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="github-sync") as pool:
        reports = list(pool.map(sync_one, targets))
    if as_json:
        click.echo(json.dumps([report.as_dict() for report in reports]))
    else:
        for r in reports:
            click.echo(f"{r.slug:<24} discovered {r.discovered:>5}  registered {r.registered:>4}  updated "
                       f"{r.updated:>4}  deactivated {r.deactivated:>4}  {r.duration_ms:>8.0f} ms"
                       + (f"  error: {'; '.join(r.errors)}" if r.errors else ""))
        if not reports:
            click.echo("no tenant to sync")
    sys.exit(1 if any(r.errors for r in reports) else 0)
