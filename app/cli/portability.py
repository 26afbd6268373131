"""``flask tenants export|import``: a tenant's data to a file, and a file into a new tenant.

The work is done by :mod:`app.tenancy.portability` (format: ``docs/export-format.md``).
Exit codes as for every ``flask tenants`` command: 0 success, 1 a domain error (one
line on stderr; nothing was created or changed), 2 bad usage. Both commands act as
``cli:<user>@<host>`` in the platform audit trail.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import IO, Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..extensions import db
from ..tenancy import audit, portability
from .errors import domain_errors
from .render import tenant_dict


def register(group: click.Group) -> None:
    group.add_command(tenants_export)
    group.add_command(tenants_import)


def _file_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An unreadable or unwritable file: one line on stderr, exit 1 (domain errors: ``domain_errors``)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            click.echo(f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), err=True)
            sys.exit(1)

    return wrapper


@click.command("export")
@with_appcontext
@click.argument("slug")
@click.option("--output", "-o", metavar="FILE",
              help="Where to write ('-': stdout). Default: ./<slug>-<revision>-<UTC time>.jsonl.gz")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
@_file_errors
@domain_errors
def tenants_export(slug: str, output: str | None, as_json: bool) -> None:
    """Write tenant SLUG's data (every tenant table, one consistent snapshot) to a gzip JSON Lines file.

    API keys are not exported. The file appears complete or not at all.
    """
    if output == "-":
        stdout = click.open_file("-", "wb")  # binary stdout, kept open
        if stdout.isatty():
            click.echo("error: refusing to write gzip data to a terminal; redirect stdout or use --output FILE",
                       err=True)
            sys.exit(2)
        with audit.acting_as(audit.cli_actor()):
            result = portability.export_tenant(db.engine, slug, stdout)
        stdout.flush()
        _report_export(result, "-", as_json, err=True)
        return
    directory = Path(output).parent if output else Path.cwd()
    if not directory.is_dir():
        raise click.BadParameter(f"directory {str(directory)!r} does not exist", param_hint="--output")
    # Write next to the destination, then rename: a failed export leaves no partial file.
    with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{slug}-", suffix=".partial", delete=False) as tmp:
        try:
            with audit.acting_as(audit.cli_actor()):
                result = portability.export_tenant(db.engine, slug, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    target = Path(output) if output else directory / (
        f"{slug}-{result.schema_revision}-{result.exported_at.strftime('%Y%m%dT%H%M%SZ')}.jsonl.gz"
    )
    os.replace(tmp.name, target)
    _report_export(result, str(target), as_json, err=False)


def _report_export(result: portability.ExportResult, output: str, as_json: bool, *, err: bool) -> None:
    if as_json:
        click.echo(json.dumps({
            "slug": result.slug, "schema_revision": result.schema_revision,
            "exported_at": result.exported_at.isoformat(), "rows": result.rows, "output": output,
        }), err=err)
        return
    counts = ", ".join(f"{table} {n}" for table, n in result.rows.items())
    click.echo(f"exported tenant {result.slug} at revision {result.schema_revision} "
               f"(snapshot {result.exported_at.isoformat()}) to {output}: {counts}", err=err)


@click.command("import")
@with_appcontext
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--slug", required=True, help="The new tenant's slug (schema t_SLUG).")
@click.option("--plan", default=None, help="Plan of the new tenant. Default: the plan recorded in the file.")
@click.option("--migrate", is_flag=True,
              help="Accept a file at an older schema revision: load it there, then migrate to head.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_file_errors
@domain_errors
def tenants_import(file: str, slug: str, plan: str | None, migrate: bool, as_json: bool) -> None:
    """Provision tenant SLUG from an export FILE ('-': stdin) and load its data, in one transaction.

    Prints the new tenant's admin API key once. Nothing is created unless everything loads.
    """
    source: IO[bytes]
    with click.open_file(file, "rb") as source:  # "-": binary stdin
        with audit.acting_as(audit.cli_actor()):
            result = portability.import_tenant(
                db.session(), source, slug=slug, plan=plan, migrate=migrate,
                location=current_app.config["TENANT_MIGRATIONS_LOCATION"],
            )
    tenant, key = result.provisioned.tenant, result.provisioned.admin_key
    if as_json:
        click.echo(json.dumps({
            "tenant": tenant_dict(tenant),
            "api_key": {"id": key.id, "prefix": key.prefix, "role": key.role, "token": key.token},
            "rows": result.rows,
            "source": {"slug": result.source.slug, "schema_revision": result.source.schema_revision,
                       "exported_at": result.source.exported_at},
            "migrated_from": result.migrated_from,
        }))
        return
    revision = (f"loaded at {result.migrated_from}, migrated to {tenant.schema_revision}"
                if result.migrated_from else f"revision {tenant.schema_revision}")
    click.echo(f"imported tenant {slug} into schema {tenant.schema_name} ({revision}) "
               f"from {result.source.slug} exported at {result.source.exported_at}")
    for table, count in result.rows.items():
        click.echo(f"  {table:<24} {count:>10} rows")
    click.echo(f"admin API key (shown once): {key.token}")
