"""``flask tenants …``: create and inspect tenants and their schemas.

This module holds the tenant's own commands and gathers the group: keys, fan-out,
export/import and ``move`` come from their modules beside it (:mod:`app.cli`).
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import click
from alembic import command
from flask import current_app

from ..extensions import db, tenant_roles_active
from ..pagination import every_item
from ..services import members
from ..tenancy import audit, directory, lifecycle, migrations, placement, usage
from ..tenancy.naming import quote_ident
from ..tenancy.provisioning import TenantRecord, provision_tenant
from . import cluster, fanout, github, keys, portability
from .errors import CommandGroup, domain_errors
from .render import echo_rows, tenant_dict

tenants_cli = CommandGroup("tenants", help="Create and inspect tenants and their schemas.")


@tenants_cli.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="Display name.")
@click.option("--plan", default="free", show_default=True)
@click.option("--node", metavar="HOST:PORT", help="On Citus: the worker to place the tenant on (provisioned, "
              "then its empty schema moved there).")
@click.option("--owner-email", metavar="EMAIL", help="The first member: an active owner, created in the same "
              "transaction (stored normalised: trimmed, Unicode NFC, lowercase).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def tenants_create(slug: str, name: str, plan: str, node: str | None, owner_email: str | None,
                   as_json: bool) -> None:
    """Provision tenant SLUG: row, schema t_SLUG, migrations, first admin API key (and first owner)."""
    with audit.acting_as(audit.cli_actor()):
        if node is not None:
            placement.check_target(db.engine, node)  # refused before anything is created
        result = provision_tenant(
            db.session(),
            slug=slug,
            name=name,
            plan=plan,
            migrations_location=current_app.config["TENANT_MIGRATIONS_LOCATION"],
            tenant_role=tenant_roles_active(),
            owner_email=owner_email,
        )
        placed = placement.place_new_tenant(db.engine, slug, node) if node is not None else None
    key = result.admin_key
    data: dict[str, Any] = {
        "tenant": tenant_dict(result.tenant),
        "api_key": {"id": key.id, "prefix": key.prefix, "role": key.role, "token": key.token},
        "owner": None if result.owner is None else {
            "id": result.owner.id, "email": result.owner.email, "role": result.owner.role,
            "status": result.owner.status},
    }
    if placed is not None:
        data["node"] = placed.node
        data["placement_error"] = placed.error
    if as_json:
        click.echo(json.dumps(data))
    else:
        click.echo(f"created tenant {slug} in schema {result.tenant.schema_name} "
                   f"at revision {result.tenant.schema_revision}" + (f" on {data['node']}" if placed else ""))
        click.echo(f"admin API key (shown once): {result.admin_key.token}")
        if result.owner is not None:
            click.echo(f"owner: member {result.owner.id} <{result.owner.email}>")
    if placed is not None and placed.error:
        click.echo(f"error: tenant {slug} was created on {placed.source}, but moving it to {node} failed: "
                   f"{placed.error}; move it with `flask tenants move {slug} --to {node}`", err=True)
        sys.exit(1)


def _change_tenant(slug: str, **changes: str) -> TenantRecord:
    """One change to a tenant, committed, with its audit event naming the operator."""
    session = db.session()
    try:
        with audit.acting_as(audit.cli_actor()):
            record = lifecycle.update_tenant(session, slug, **changes)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return record


@tenants_cli.command("suspend")
@click.argument("slug")
@domain_errors
def tenants_suspend(slug: str) -> None:
    """Suspend tenant SLUG: its keys get 403 from the next request on; its data stays."""
    _change_tenant(slug, status="suspended")
    click.echo(f"suspended tenant {slug}")


@tenants_cli.command("resume")
@click.argument("slug")
@domain_errors
def tenants_resume(slug: str) -> None:
    """Resume tenant SLUG: its keys work again from the next request on."""
    _change_tenant(slug, status="active")
    click.echo(f"resumed tenant {slug}")


@tenants_cli.command("delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@domain_errors
def tenants_delete(slug: str, yes: bool) -> None:
    """Delete tenant SLUG: its row, its keys and its schema with all its data, in one transaction."""
    schema = directory.get_tenant(db.session(), slug).schema_name  # an unknown slug fails before the question
    db.session.rollback()
    if not yes:
        click.confirm(f"Delete tenant {slug} and drop schema {schema} with all its data?", abort=True)
    session = db.session()
    try:
        with audit.acting_as(audit.cli_actor()):
            lifecycle.delete_tenant(session, slug)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    click.echo(f"deleted tenant {slug}")


@tenants_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tenants_list(as_json: bool) -> None:
    """List every tenant, in slug order."""
    tenants = every_item(lambda cursor: directory.list_tenants(db.session(), limit=500, cursor=cursor))
    echo_rows([tenant_dict(t) for t in tenants], as_json, empty="no tenants",
              line=lambda row: f"{row['slug']:<24} {row['status']:<10} {row['plan']:<12} "
                               f"{row['schema_revision'] or '-':<12} {row['name']}")


@tenants_cli.command("usage")
@click.argument("slug", required=False)
@click.option("--period", metavar="YYYY-MM", help="The UTC month; default: the current one.")
@click.option("--metric", default=usage.API_REQUESTS, show_default=True,
              help="Without SLUG: the metric tenants are ranked by.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="Without SLUG: how many tenants.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def tenants_usage(slug: str | None, period: str | None, metric: str, limit: int, as_json: bool) -> None:
    """Metered usage in a month (as flushed): tenant SLUG's metrics, or the top tenants by --metric."""
    month = usage.period_or_current(period)
    connection = db.session().connection()
    if slug is not None:
        tenant = directory.get_tenant(db.session(), slug)
        [counts] = usage.history(connection, tenant.id, month, month)
        if as_json:
            click.echo(json.dumps({"slug": slug, "period": usage.format_period(month), "metrics": counts.metrics}))
            return
        if not counts.metrics:
            click.echo(f"no usage for {slug} in {usage.format_period(month)}")
        for name, value in counts.metrics.items():
            click.echo(f"{name:<24} {value}")
        return
    rows = usage.top_tenants(connection, month, metric, limit)
    if as_json:
        click.echo(json.dumps({"period": usage.format_period(month), "metric": metric, "items": [
            {"tenant_id": r.tenant_id, "slug": r.slug, "value": r.value} for r in rows]}))
        return
    if not rows:
        click.echo(f"no {metric} in {usage.format_period(month)}")
    for row in rows:
        click.echo(f"{row.slug or f'(deleted {row.tenant_id})':<24} {row.value}")


@tenants_cli.command("members")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def tenants_members(slug: str, as_json: bool) -> None:
    """List the members (people) of tenant SLUG, in id order; read from its schema, never changed here."""
    session = db.session()
    tenant = directory.get_tenant(session, slug)
    found = every_item(lambda cursor: members.list_for_operator(session, tenant, limit=200, cursor=cursor))
    rows = [{"id": m.id, "email": m.email, "display_name": m.display_name, "role": m.role, "status": m.status,
             "subject": m.subject, "invited_by": m.invited_by, "created_at": m.created_at.isoformat(),
             "last_seen_at": m.last_seen_at.isoformat() if m.last_seen_at else None} for m in found]
    echo_rows(rows, as_json, empty=f"{slug} has no members",
              line=lambda row: f"{row['id']:<8} {row['role']:<7} {row['status']:<9} {row['email']:<40} "
                               f"last seen {row['last_seen_at'] or 'never'}")


@tenants_cli.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--autogenerate", is_flag=True,
              help="Diff the tenant models against a scratch schema migrated to head.")
def tenants_revision(message: str, autogenerate: bool) -> None:
    """Create a tenant-schema migration (autogenerate compares a scratch schema, never public)."""
    location = current_app.config["TENANT_MIGRATIONS_LOCATION"]
    cfg = migrations.tenant_config(location)
    if not autogenerate:
        command.revision(cfg, message=message)
        return
    scratch = f"t_autogen_{uuid.uuid4().hex[:12]}"
    with db.engine.connect() as connection:
        # Everything happens in one transaction that is rolled back: the scratch schema
        # never becomes visible to anyone and never outlives this command.
        connection.exec_driver_sql(f"CREATE SCHEMA {quote_ident(scratch)}")
        migrations.upgrade_schema(connection, scratch, "head", location=location)
        cfg.attributes.update(connection=connection, schema_name=scratch)
        command.revision(cfg, message=message, autogenerate=True)
        connection.rollback()


# The rest of the group lives beside this module, one module per concern.
tenants_cli.add_command(keys.keys_cli)  # flask tenants keys create|list|revoke
fanout.register(tenants_cli)  # flask tenants migrate|status|check
portability.register(tenants_cli)  # flask tenants export|import
tenants_cli.add_command(cluster.tenants_move)  # flask tenants move
tenants_cli.add_command(github.tenants_purge)  # flask tenants purge --uninstalled-before DATE
tenants_cli.add_command(github.tenants_github_sync)  # flask tenants github-sync
