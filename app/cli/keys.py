"""``flask tenants keys create|list|revoke``: an operator manages a tenant's API keys.

Each command is one transaction. The operator acts as ``cli:<user>@<host>``; issuing
and revoking write a platform audit event (``public.audit_events``) with the tenant's
id and slug, in that transaction. The last active admin key of a tenant cannot be
revoked here either. Exit codes as in :mod:`app.cli`: 1 a domain error (one line on
stderr), 2 bad usage. :mod:`app.cli.tenants` adds the group to ``flask tenants``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..extensions import db
from ..models.public import API_KEY_ROLES, ApiKey
from ..pagination import every_item
from ..services import api_keys as operator_keys
from ..services.api_keys import AUDITED
from ..tenancy import api_keys, audit, directory
from .errors import CommandGroup, domain_errors
from .render import echo_rows

keys_cli = CommandGroup("keys", help="Issue, list and revoke a tenant's API keys.")



def key_dict(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "prefix": key.prefix,
        "name": key.name,
        "role": key.role,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def _check_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not 0 < len(value) <= api_keys.NAME_MAX:
        raise click.BadParameter(f"1 to {api_keys.NAME_MAX} characters")
    return value


@keys_cli.command("create")
@click.argument("slug")
@click.option("--role", required=True, type=click.Choice(API_KEY_ROLES))
@click.option("--name", callback=_check_name, help="What the key is for (shown in lists).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def keys_create(slug: str, role: str, name: str | None, as_json: bool) -> None:
    """Issue an API key for tenant SLUG; prints its token once."""
    session = db.session()
    with audit.acting_as(audit.cli_actor()), session.begin():
        tenant = directory.get_tenant(session, slug)
        issued = api_keys.issue_api_key(session, tenant, role, name=name)
        audit.record_platform(
            session, "api_key.created", "api_key", issued.id, tenant_id=tenant.id, tenant_slug=slug,
            after={"prefix": issued.prefix, "name": name, "role": role},
        )
    if as_json:
        click.echo(json.dumps({
            "id": issued.id, "prefix": issued.prefix, "name": issued.name, "role": issued.role,
            "created_at": issued.created_at.isoformat() if issued.created_at else None,
            "token": issued.token,
        }))
        return
    click.echo(f"created {role} key {issued.id} (prefix {issued.prefix}) for tenant {slug}")
    click.echo(f"API key (shown once): {issued.token}")


@keys_cli.command("list")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@domain_errors
def keys_list(slug: str, as_json: bool) -> None:
    """List the API keys of tenant SLUG (revoked ones included), never their tokens."""
    session = db.session()
    tenant = directory.get_tenant(session, slug)
    keys = every_item(lambda cursor: api_keys.list_api_keys(session, tenant.id, limit=500, cursor=cursor))
    rows = [key_dict(k) for k in keys]

    def line(row: dict[str, Any]) -> str:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        return (f"{row['id']:<8} {row['prefix']:<14} {row['role']:<8} {state:<40} "
                f"last used {row['last_used_at'] or 'never'}  {row['name'] or ''}".rstrip())

    echo_rows(rows, as_json, line)


@keys_cli.command("revoke")
@click.argument("slug")
@click.argument("key_id", type=int)
@domain_errors
def keys_revoke(slug: str, key_id: int) -> None:
    """Revoke API key KEY_ID of tenant SLUG (never the tenant's last active admin key)."""
    session = db.session()
    with audit.acting_as(audit.cli_actor()), session.begin():
        after = audit.snapshot(operator_keys.revoke_for_operator(session, slug, key_id), AUDITED)
    click.echo(f"revoked {after['role']} key {key_id} (prefix {after['prefix']}) of tenant {slug}")

