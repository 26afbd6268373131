"""The role layer: each tenant's schema belongs to its own role, taken by each of its transactions.

These tests switch the layer on explicitly (``TENANT_ROLES=on``), whatever the suite's
own mode is, and read PostgreSQL's catalog (owners, pg_roles) as well as the errors.
"""

from __future__ import annotations

import json
import logging
import shutil
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import sessionmaker

from app.extensions import db, tenant_roles_active
from app.tenancy import binding as tenant_binding
from app.tenancy import roles, tenant_scope
from app.tenancy.binding import platform_access
from app.tenancy.migrations import default_location, head_revision
from app.tenancy.provisioning import provision_tenant
from app.testing import TestTenant


@pytest.fixture
def roles_app(make_app, citus):
    if citus:
        pytest.skip(f"the role layer is off on Citus: {roles.CITUS_REASON}")
    return make_app(TENANT_ROLES="on")


@pytest.fixture
def make_role_tenant(roles_app):
    def factory(slug: str | None = None) -> TestTenant:
        import uuid

        slug = slug or f"r{uuid.uuid4().hex[:12]}"
        with roles_app.app_context():
            made = provision_tenant(db.session(), slug=slug, name=slug, plan="enterprise", tenant_role=True)
            db.session.remove()
        return TestTenant(slug=slug, schema_name=made.tenant.schema_name, tenant_id=made.tenant.id,
                          token=made.admin_key.token, role=made.tenant.db_role)
    return factory


def owners(engine, schema: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = :s"
            " UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = :s"
        ), {"s": schema}).scalars())


def test_a_tenant_role_owns_its_schema_and_everything_in_it(make_role_tenant, engine):
    tenant = make_role_tenant()
    with engine.connect() as conn:
        prefix = roles.role_prefix(conn.exec_driver_sql("SELECT current_database()").scalar_one())
        can_login = conn.execute(
            text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": tenant.role}).scalar()
    assert tenant.role == prefix + tenant.slug
    assert can_login is False
    assert owners(engine, tenant.schema_name) == {tenant.role}  # schema, tables, indexes, sequences


def test_inside_a_tenant_transaction_other_schemas_and_platform_tables_are_denied(
    make_role_tenant, session_factory
):
    mine, other = make_role_tenant(), make_role_tenant()
    with tenant_scope(mine.binding), session_factory() as session:
        session.execute(text("INSERT INTO repositories (github_repo_id, owner, name, full_name)"
                             " VALUES (1, 'o', 'n', 'o/n')"))
        session.commit()
    for sql in (
        f'SELECT * FROM "{other.schema_name}".repositories',  # another tenant, named explicitly
        f'INSERT INTO "{other.schema_name}".audit_events (action, resource) VALUES (\'x\', \'y\')',
        "SELECT * FROM public.api_keys",
        "SELECT * FROM public.tenants",
    ):
        with tenant_scope(mine.binding), session_factory() as session:
            assert session.execute(text("SELECT count(*) FROM repositories")).scalar() == 1  # its own: fine
            with pytest.raises(ProgrammingError, match="permission denied"):
                session.execute(text(sql))


def test_platform_access_is_explicit_and_ends_with_its_block(make_role_tenant, session_factory):
    mine, other = make_role_tenant(), make_role_tenant()
    with tenant_scope(mine.binding), session_factory() as session:
        session.execute(text("SELECT 1"))  # the transaction begins as the tenant
        with platform_access(session):
            assert session.execute(text("SELECT count(*) FROM public.tenants")).scalar() >= 2
        assert session.execute(text("SELECT current_user")).scalar() == mine.role
        with pytest.raises(ProgrammingError, match="permission denied"):
            session.execute(text(f'SELECT * FROM "{other.schema_name}".repositories'))


def test_the_role_dies_with_the_transaction_on_a_pooled_connection(make_role_tenant, tenantry_database_url):
    tenant = make_role_tenant()
    engine = create_engine(tenantry_database_url.replace("postgresql://", "postgresql+psycopg://", 1),
                           pool_size=1, max_overflow=0)
    factory = sessionmaker(bind=engine)
    tenant_binding.install(factory)
    try:
        with tenant_scope(tenant.binding), factory() as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
            assert session.execute(text("SELECT current_user")).scalar() == tenant.role
        with factory() as session:  # the same physical connection, no tenant
            assert session.execute(text("SELECT pg_backend_pid()")).scalar() == pid
            assert session.execute(text("SELECT current_user")).scalar() != tenant.role
    finally:
        engine.dispose()


def test_the_api_works_end_to_end_with_roles_and_keys_of_the_tenant_reach_platform_tables_only_where_meant(
    roles_app
):
    admin = roles_app.test_client()
    admin.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {roles_app.config['ADMIN_TOKEN']}"
    created = admin.post("/v1/admin/tenants", json={"slug": "roled", "name": "Roled", "plan": "free"})
    assert created.status_code == 201, created.json
    client = roles_app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {created.json['api_key']['token']}"
    assert client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"}).status_code == 201
    assert [r["name"] for r in client.get("/v1/repositories").json["items"]] == ["n"]
    assert client.get("/v1/tenant").json["usage"]["repositories"] == {"used": 1, "limit": 5}  # the plan: platform
    issued = client.post("/v1/api-keys", json={"role": "viewer"})  # public.api_keys, explicitly
    assert issued.status_code == 201, issued.json
    assert len(client.get("/v1/api-keys").json["items"]) == 2
    assert client.get("/v1/audit-events").json["items"][0]["action"] == "api_key.created"
    assert admin.delete("/v1/admin/tenants/roled").status_code == 204


def test_deleting_a_tenant_drops_its_role_and_a_leftover_role_blocks_reuse(make_role_tenant, roles_app, engine):
    tenant = make_role_tenant()
    admin = roles_app.test_client()
    admin.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {roles_app.config['ADMIN_TOKEN']}"
    assert admin.delete(f"/v1/admin/tenants/{tenant.slug}").status_code == 204
    with engine.begin() as conn:
        assert not roles.exists(conn, tenant.role)
        conn.exec_driver_sql(f'CREATE ROLE "{tenant.role}" NOLOGIN')  # left behind by someone
    try:
        again = admin.post("/v1/admin/tenants", json={"slug": tenant.slug, "name": "again"})
        assert again.status_code == 409 and "role" in again.json["detail"]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"),
                                {"s": tenant.schema_name}).scalar() == 0
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{tenant.role}"')


def test_the_fanout_creates_new_objects_as_the_tenant_role(make_role_tenant, make_app, engine, tmp_path: Path):
    tenant = make_role_tenant()
    location = tmp_path / "tenant_migrations"
    shutil.copytree(default_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / "x_roles.py").write_text(textwrap.dedent(f"""
        import sqlalchemy as sa
        from alembic import op
        revision = "x_roles"
        down_revision = {head_revision()!r}
        branch_labels = depends_on = None
        def upgrade():
            op.create_table("labels", sa.Column("id", sa.BigInteger(), primary_key=True))
            op.create_index("ix_repositories_owner", "repositories", ["owner"])
        def downgrade():
            op.drop_index("ix_repositories_owner", table_name="repositories")
            op.drop_table("labels")
    """))
    app = make_app(TENANT_MIGRATIONS_LOCATION=str(location), TENANT_ROLES="on")
    result = app.test_cli_runner().invoke(args=["tenants", "migrate", "--tenant", tenant.slug])
    assert result.exit_code == 0, result.output
    assert owners(engine, tenant.schema_name) == {tenant.role}
    with engine.connect() as conn:
        assert conn.execute(text(
            "SELECT schema_revision FROM public.tenants WHERE slug = :s"), {"s": tenant.slug}).scalar() == "x_roles"


def test_the_suite_leaves_no_role_of_a_dropped_tenant(make_role_tenant, engine):
    from app.testing import drop_tenants

    tenant = make_role_tenant()
    drop_tenants(engine, [tenant.slug])
    with engine.connect() as conn:
        prefix = roles.role_prefix(conn.exec_driver_sql("SELECT current_database()").scalar_one())
        assert tenant.role not in roles.roles_with_prefix(conn, prefix)


def test_check_reports_ownership_drift(make_role_tenant, roles_app, engine):
    healthy, drifted = make_role_tenant(), make_role_tenant()
    with engine.begin() as conn:  # created by hand, as the login user: not the tenant's
        conn.exec_driver_sql(f'CREATE TABLE "{drifted.schema_name}".by_hand (id int)')
    result = roles_app.test_cli_runner().invoke(
        args=["tenants", "check", "--json", "--tenant", healthy.slug, "--tenant", drifted.slug])
    report = json.loads(result.stdout)
    problems = {d["slug"]: d["problems"] for d in report["drifted"]}
    assert result.exit_code == 1 and set(problems) == {drifted.slug}
    assert any(p.startswith("by_hand is owned by") and p.endswith(drifted.role) for p in problems[drifted.slug])


def test_the_role_layers_choice_is_logged_at_startup_and_decided_on_the_first_connection(make_app, caplog, citus):
    """create_app never connects (it starts while the database may be down): it logs the
    mode, and ``auto`` is decided, and logged with its reason, when the pool first connects."""
    caplog.set_level(logging.INFO, logger="app.tenancy.roles")
    app = make_app(TENANT_ROLES="auto")
    assert [r.getMessage() for r in caplog.records] == [
        "tenant database roles: TENANT_ROLES=auto, decided on the first database connection"]
    caplog.clear()
    with app.app_context():
        with db.engine.connect():
            pass
        assert not tenant_roles_active()  # what was decided is what provisioning uses
    [decided] = [r.getMessage() for r in caplog.records]
    if citus:  # off, and on is refused with the reason
        assert decided == f"tenant database roles off (auto: {roles.CITUS_REASON})"
        with make_app(TENANT_ROLES="on").app_context(), pytest.raises(RuntimeError, match="not supported: on Citus"):
            tenant_roles_active()
    else:
        assert decided.startswith("tenant database roles off (auto: ") and "TENANT_ROLES=on" in decided

    caplog.clear()
    make_app(TENANT_ROLES="off")
    assert [r.getMessage() for r in caplog.records] == ["tenant database roles off (TENANT_ROLES=off)"]
