"""How commands print: the JSON shape of a tenant, and a list as JSON or as lines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from ..models.public import Tenant
from ..tenancy.provisioning import TenantRecord


def tenant_dict(tenant: Tenant | TenantRecord) -> dict[str, Any]:
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "schema_name": tenant.schema_name,
        "plan": tenant.plan_name,
        "status": tenant.status,
        "schema_revision": tenant.schema_revision,
        "created_at": tenant.created_at.isoformat(),
    }


def echo_rows(rows: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any]], str],
              empty: str | None = None) -> None:
    """``rows`` as one JSON list (``--json``), else a ``line`` each, or ``empty`` when there are none."""
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows and empty is not None:
        click.echo(empty)
    for row in rows:
        click.echo(line(row))
