"""DB_RECYCLE_AFTER_TENANTS: a pooled connection is replaced once it has served N distinct tenants.

Each test runs an app whose pool holds exactly one connection, serves tenants through
the HTTP API, and asks that one connection which backend it is (``pg_backend_pid()``).
A new pid means a new backend, so the old one's catalog cache is gone; the old pid is
also looked up in ``pg_stat_activity`` from outside the pool, to prove the backend
really ended rather than being parked somewhere. Checking only that requests succeed
would pass with recycling switched off.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from app.extensions import db
from app.testing import ADMIN_TOKEN


@pytest.fixture
def one_connection_app(make_app):
    """``one_connection_app(limit)``: an app with a pool of exactly one connection and that limit."""

    def factory(limit: int):
        return make_app(DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_RECYCLE_AFTER_TENANTS=limit)

    return factory


def backend_pid(app) -> int:
    """The pid of the pool's one backend (opening it if the pool has none)."""
    with app.app_context(), db.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def serve(app, tenant) -> None:
    response = app.test_client().get("/v1/repositories", headers=tenant.auth)
    assert response.status_code == 200, response.get_data(as_text=True)


def backend_alive(engine, pid: int, wait: float = 5.0) -> bool:
    """Whether backend ``pid`` still exists; a closed one may take a moment to leave pg_stat_activity."""
    deadline = time.monotonic() + wait
    while True:
        with engine.connect() as conn:
            alive = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar()
        if not alive or time.monotonic() > deadline:
            return bool(alive)
        time.sleep(0.05)


def test_a_connection_is_replaced_after_serving_the_limit_of_distinct_tenants(
    one_connection_app, make_tenant, engine
):
    app = one_connection_app(3)
    a, b, c, d = (make_tenant() for _ in range(4))
    first = backend_pid(app)
    serve(app, a)
    serve(app, b)
    serve(app, a)
    assert backend_pid(app) == first, "recycled before serving 3 distinct tenants"

    serve(app, c)  # the third distinct tenant: the connection is closed when it comes back
    second = backend_pid(app)
    assert second != first
    assert not backend_alive(engine, first), "the old backend (and its catalog cache) is still there"

    for tenant in (d, a, b):  # the new connection counts from zero, and requests go on succeeding
        serve(app, tenant)
    third = backend_pid(app)
    assert third != second
    serve(app, c)
    assert backend_pid(app) == third


def test_serving_the_same_tenant_again_and_again_never_recycles(one_connection_app, make_tenant):
    app = one_connection_app(3)
    tenant = make_tenant()
    first = backend_pid(app)
    for _ in range(10):
        serve(app, tenant)
    assert backend_pid(app) == first


def test_zero_turns_recycling_by_tenant_count_off(one_connection_app, make_tenant):
    app = one_connection_app(0)
    tenants = [make_tenant() for _ in range(5)]
    first = backend_pid(app)
    for tenant in tenants:
        serve(app, tenant)
    assert backend_pid(app) == first


def test_requests_without_a_tenant_do_not_count(one_connection_app, make_tenant):
    app = one_connection_app(2)
    tenant = make_tenant()
    client = app.test_client()
    first = backend_pid(app)
    for _ in range(5):
        response = client.get("/v1/admin/tenants", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200
    serve(app, tenant)
    assert backend_pid(app) == first
