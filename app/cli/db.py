"""``flask db …``: migrate the public schema (plans, tenants, API keys, the ledger)."""

from __future__ import annotations

import click
from alembic import command

from .. import public_migrations
from ..extensions import db
from .errors import CommandGroup

db_cli = CommandGroup("db", help="Migrate the public schema (plans, tenants, API keys).")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Upgrade the public schema to REVISION (default: head), in one transaction."""
    public_migrations.upgrade(db.engine, revision)
    click.echo(f"public schema at {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Downgrade the public schema to REVISION (e.g. -1 or base)."""
    public_migrations.downgrade(db.engine, revision)
    click.echo(f"public schema at {revision}")


@db_cli.command("current")
def db_current() -> None:
    """Print the public schema's revision and the head."""
    with db.engine.connect() as connection:
        current = public_migrations.current_revision(connection)
    click.echo(f"current: {current or '(none)'}  head: {public_migrations.head_revision()}")


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--autogenerate", is_flag=True, help="Compare the public models with the database.")
def db_revision(message: str, autogenerate: bool) -> None:
    """Create a public-schema migration."""
    with public_migrations.migration_connection(db.engine) as connection:
        command.revision(
            public_migrations.public_config(connection), message=message, autogenerate=autogenerate
        )


@db_cli.command("check")
def db_check() -> None:
    """Exit 1 if the public models and the migrated database disagree."""
    with public_migrations.migration_connection(db.engine) as connection:
        command.check(public_migrations.public_config(connection))
    click.echo("public models match the migrations")
