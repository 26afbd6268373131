"""The tenant Alembic stream, run against exactly one schema, inside the caller's transaction.

``tenant_migrations/`` is an ordinary Alembic environment whose every run targets one
schema: the schema's own ``alembic_version`` table lives inside it, the search_path
holds only that schema, and ``public`` is never touched. Provisioning and the fan-out
hand it a connection with a transaction already open (Alembic's "sharing a
connection" recipe), so the migration commits or rolls back with everything else the
caller does.

The script directory is loaded once per process (per location) and reused, so
migrating many schemas does not re-read and re-import the version files each time.

Alembic's ``op`` and ``context`` proxies are module globals: run one migration at a
time per process (a fan-out uses processes or a lock, not bare threads).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from .binding import set_local_search_path
from .naming import quote_ident

#: Alembic's proxies are process-global; this keeps two threads from interleaving runs.
_run_lock = threading.RLock()


def default_location() -> Path:
    """Where the tenant stream's scripts live (the ``tenant_migrations`` package)."""
    import tenant_migrations

    return Path(tenant_migrations.__file__).resolve().parent


def tenant_config(location: str | Path | None = None) -> Config:
    """An Alembic Config for the tenant stream; no ini file, everything in code."""
    cfg = Config()
    cfg.set_main_option("script_location", str(location or default_location()))
    return cfg


@lru_cache(maxsize=8)
def tenant_script(location: str | None = None) -> ScriptDirectory:
    """The tenant stream's script directory, loaded once per location per process."""
    return ScriptDirectory.from_config(tenant_config(location))


def head_revision(location: str | None = None) -> str:
    """The single head of the tenant stream (branches are refused, as in production)."""
    head = tenant_script(location).get_current_head()
    if head is None:
        raise RuntimeError("the tenant migration stream has no revisions")
    return head


def use_schema(connection: Connection, schema_name: str) -> None:
    """Point the open transaction's search_path at one tenant schema (and nothing else)."""
    set_local_search_path(connection, quote_ident(schema_name))


def configure_tenant_context(
    env: EnvironmentContext, connection: Connection, schema_name: str, **options: Any
) -> None:
    """Configure an Alembic environment for one tenant schema; shared by env.py and the runner."""
    from app.models.tenant import TenantBase

    use_schema(connection, schema_name)
    env.configure(
        connection=connection,
        target_metadata=TenantBase.metadata,
        version_table_schema=schema_name,
        include_schemas=False,
        compare_type=True,
        include_object=_skip_version_table,
        **options,
    )


def _skip_version_table(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (type_ == "table" and name == "alembic_version")


def current_revision(connection: Connection, schema_name: str) -> str | None:
    """The revision recorded in the schema's own ``alembic_version`` (None if absent)."""
    row = connection.exec_driver_sql(
        "SELECT to_regclass(%(t)s) IS NOT NULL", {"t": f"{quote_ident(schema_name)}.alembic_version"}
    ).scalar()
    if not row:
        return None
    return connection.exec_driver_sql(
        f"SELECT version_num FROM {quote_ident(schema_name)}.alembic_version"
    ).scalar()


def upgrade_schema(
    connection: Connection,
    schema_name: str,
    target: str = "head",
    *,
    location: str | None = None,
) -> str | None:
    """Upgrade one schema to ``target`` on ``connection``; return the revision it is now at.

    Runs inside the transaction already open on ``connection`` and does not commit.
    The caller's search_path is replaced for the rest of the transaction; callers that
    go on with other work re-apply their own.
    """
    script = tenant_script(location)
    cfg = tenant_config(location)

    def step(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(target, rev)

    with _run_lock, EnvironmentContext(cfg, script, fn=step, destination_rev=target) as env:
        configure_tenant_context(env, connection, schema_name)
        with env.begin_transaction():
            env.run_migrations()
        return env.get_context().get_current_revision()
