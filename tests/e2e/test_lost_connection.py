"""A connection lost during a request is 503 problem+json, never a generic 500, and loses nothing.

The backend is terminated (``pg_terminate_backend``) from another connection at a chosen
moment: after the view, before the unit of work ends; and in the middle of onboarding.
"""

from __future__ import annotations

import socket
import textwrap
import threading
import time

from sqlalchemy import text

from app.extensions import db
from app.tenancy.migrations import default_location, head_revision
from app.testing import assert_problem


def _terminate(engine, pid: int) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(CAST(:pid AS integer))"), {"pid": pid})
        conn.commit()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # gone for good before the app touches it again
        with engine.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).scalar():
                return
        time.sleep(0.05)


def test_a_connection_lost_after_the_view_is_503_for_errors_and_successes(make_app, make_tenant, engine):
    app = make_app()
    tenant = make_tenant()
    client = app.test_client()
    killed: list[int] = []

    @app.after_request  # registered last, so it runs before the unit of work is ended
    def lose_the_connection(response):  # type: ignore[no-untyped-def]
        if db.session().in_transaction():
            pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
            killed.append(pid)
            _terminate(engine, pid)
        return response

    missing = client.get("/v1/repositories/424242", headers=tenant.auth)  # a 404: rolled back
    assert missing.status_code == 503, missing.get_data(as_text=True)
    assert missing.headers["Content-Type"] == "application/problem+json"
    assert missing.json["type"].endswith("/database-unavailable")
    created = client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"},
                          headers=tenant.auth)  # a 201: the commit fails, so it is not acknowledged
    assert created.status_code == 503 and created.json["type"].endswith("/database-unavailable")
    assert len(killed) == 2
    with engine.connect() as conn:  # and what was not acknowledged was not kept
        assert conn.execute(text(f'SELECT count(*) FROM "{tenant.schema_name}".repositories')).scalar() == 0
    app.after_request_funcs[None].remove(lose_the_connection)
    assert client.get("/v1/repositories", headers=tenant.auth).status_code == 200  # the pool recovered


def test_onboarding_that_loses_its_connection_is_503_and_creates_nothing(make_app, admin_client, engine, tmp_path):
    import shutil

    location = tmp_path / "tenant_migrations"
    shutil.copytree(default_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / "x0002_slow.py").write_text(textwrap.dedent(f"""
        from alembic import op

        revision = "x0002"
        down_revision = {head_revision()!r}
        branch_labels = depends_on = None


        def upgrade():
            op.execute("SELECT pg_sleep(5)")


        def downgrade():
            pass
    """))
    app = make_app(TENANT_MIGRATIONS_LOCATION=str(location))
    response: list = []
    worker = threading.Thread(target=lambda: response.append(app.test_client().post(
        "/v1/admin/tenants", json={"slug": "cut_off", "name": "Cut Off"},
        headers={"Authorization": admin_client.environ_base["HTTP_AUTHORIZATION"]})))
    worker.start()
    deadline = time.monotonic() + 20
    pid = None
    while pid is None and time.monotonic() < deadline:
        with engine.connect() as conn:
            pid = conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event = 'PgSleep' AND pid <> pg_backend_pid()")).scalar()
        time.sleep(0.05)
    assert pid is not None, f"provisioning never reached the slow revision: {response and response[0].json}"
    _terminate(engine, pid)
    worker.join(30)
    [answer] = response
    assert answer.status_code == 503, answer.get_data(as_text=True)
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json["title"] == "Database connection lost; nothing was created, try again"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM public.tenants WHERE slug = 'cut_off'")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = 't_cut_off'")).scalar() == 0


def test_a_database_that_accepts_and_never_answers_costs_a_503_after_the_connect_timeout(make_app):
    """A server that takes the TCP connection and says nothing (a hung PgBouncer, a black-holed
    route): the request fails after DB_CONNECT_TIMEOUT, not psycopg's 130 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # never a byte back
            except OSError:
                continue

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    try:
        port = listener.getsockname()[1]
        silent = make_app(database_url=f"postgresql://nobody@127.0.0.1:{port}/none", DB_CONNECT_TIMEOUT=1)
        started = time.monotonic()
        answered: list = []
        asker = threading.Thread(target=lambda: answered.append(
            silent.test_client().get("/v1/tenant", headers={"Authorization": "Bearer tnt_0123456789ab_x"})))
        asker.daemon = True
        asker.start()
        asker.join(20)
        elapsed = time.monotonic() - started
        assert answered, "the request was still waiting after 20 s"
        assert_problem(answered[0], 503, "database-unavailable")
        assert elapsed < 10, elapsed
    finally:
        stop.set()
        acceptor.join()
        for conn in held:
            conn.close()
        listener.close()
