"""The public-schema Alembic stream: config, upgrade, and where the database stands.

Alembic is configured in code (no alembic.ini); env.py always receives the connection.
Migrations run on a dedicated, unpooled engine whose connections start with
``search_path=pg_catalog``: every public object is schema-qualified anyway, and with
``public`` off the path PostgreSQL reflects foreign keys as ``public.tenants`` rather
than ``tenants``, so autogenerate compares like with like and ``flask db check`` is
exact. (Run migrations against PostgreSQL directly, not through a transaction-mode
pooler; PgBouncer passes the ``options`` startup parameter only when told to.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool


def location() -> Path:
    import migrations

    return Path(migrations.__file__).resolve().parent


def public_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(location()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str | None:
    return ScriptDirectory.from_config(public_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The public schema's applied revision (None when never migrated)."""
    exists = connection.exec_driver_sql("SELECT to_regclass('public.alembic_version')").scalar()
    if exists is None:
        return None
    return connection.exec_driver_sql("SELECT version_num FROM public.alembic_version").scalar()


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection for public migrations: same database as ``engine``, ``public`` off the path."""
    dedicated = create_engine(
        engine.url, poolclass=NullPool, connect_args={"options": "-c search_path=pg_catalog"}
    )
    try:
        with dedicated.connect() as connection:
            yield connection
    finally:
        dedicated.dispose()


def upgrade(engine: Engine, target: str = "head") -> None:
    """Upgrade the public schema to ``target`` in one transaction of its own (committed)."""
    with migration_connection(engine) as connection:
        command.upgrade(public_config(connection), target)
        connection.commit()


def downgrade(engine: Engine, target: str) -> None:
    """Downgrade the public schema to ``target`` in one transaction of its own (committed)."""
    with migration_connection(engine) as connection:
        command.downgrade(public_config(connection), target)
        connection.commit()
