"""Provisioning is one transaction: everything exists afterwards, or nothing does."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from sqlalchemy import event, text

from app import public_migrations
from app.extensions import db
from app.models.public import PublicBase
from app.models.tenant import TenantBase
from app.tenancy import (
    InvalidSlug,
    ProvisioningFailed,
    TenantAlreadyExists,
    UnknownPlan,
    drift,
)
from app.tenancy.api_keys import hash_secret
from app.tenancy.migrations import default_location, head_revision, use_schema
from app.tenancy.provisioning import provision_tenant


def catalog(engine, slug: str) -> dict:
    """What PostgreSQL holds for ``slug``: schema, tables, tenant row, keys."""
    with engine.connect() as conn:
        q = lambda sql, **kw: conn.execute(text(sql), kw).all()  # noqa: E731
        return {
            "schema": q("SELECT nspname FROM pg_namespace WHERE nspname = :s", s=f"t_{slug}"),
            "tables": sorted(
                r[0] for r in q("SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = :s", s=f"t_{slug}")
            ),
            "tenant": q("SELECT slug, schema_name, schema_revision FROM public.tenants WHERE slug = :s",
                        s=slug),
            "keys": q("SELECT k.role, k.prefix, k.secret_hash FROM public.api_keys k "
                      "JOIN public.tenants t ON t.id = k.tenant_id WHERE t.slug = :s", s=slug),
        }


NOTHING = {"schema": [], "tables": [], "tenant": [], "keys": []}


def provision(app: Flask, slug: str, **kw):
    with app.app_context():
        try:
            return provision_tenant(
                db.session(), slug=slug, name=kw.pop("name", slug),
                migrations_location=app.config["TENANT_MIGRATIONS_LOCATION"], **kw,
            )
        finally:
            db.session.remove()


def test_provisioning_creates_schema_tables_row_and_a_hashed_key(app, engine):
    result = provision(app, "acme", plan="pro")
    state = catalog(engine, "acme")
    assert state["schema"] == [("t_acme",)]
    assert state["tables"] == ["alembic_version", "audit_events", "invitations", "members", "repositories"]
    assert state["tenant"] == [("acme", "t_acme", head_revision())]
    [(role, prefix, secret_hash)] = state["keys"]
    token = result.admin_key.token
    assert role == "admin" and token.startswith(f"tnt_{prefix}_")
    secret = token.split("_", 2)[2]
    assert secret_hash == hash_secret(secret) and secret not in secret_hash
    with engine.connect() as conn:
        assert conn.execute(text(
            "SELECT version_num FROM t_acme.alembic_version")).scalar() == head_revision()
        in_public = conn.execute(text(
            # Base tables only: Citus adds views of its own to public (citus_schemas, citus_tables …).
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_type = 'BASE TABLE'"
        )).scalars().all()
    # Nothing of the tenant leaked into public: only the public models and Alembic's table.
    expected = [table.name for table in PublicBase.metadata.sorted_tables] + ["alembic_version"]
    assert sorted(in_public) == sorted(expected)


def test_onboarding_takes_three_statements_besides_the_schema_build(app, engine):
    """The round trips onboarding adds to its DDL, each one on purpose (see provisioning.py).

    The first statement binds the transaction (the deny path) and takes the tenant lock;
    then the check; the schema build goes on the driver's own cursor with the binding's
    restore; then one statement writes the tenant row, its first key and the audit event.
    """
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        sent.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        result = provision(app, "trips")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    bind_and_lock, check, insert = sent  # no deny path of its own at BEGIN, no ORM flushes
    assert "set_config('search_path'" in bind_and_lock and "pg_advisory_xact_lock" in bind_and_lock
    assert "FROM public.plans" in check and "pg_namespace" in check
    assert insert.startswith("WITH new_tenant AS (INSERT INTO public.tenants")
    with engine.connect() as conn:
        key_tenant, event_tenant, changes = conn.execute(text(
            "SELECT k.tenant_id, e.tenant_id, e.changes FROM public.api_keys k, public.audit_events e"
            " WHERE k.id = :key AND e.action = 'tenant.provisioned' AND e.tenant_slug = 'trips'"
        ), {"key": result.admin_key.id}).one()
    assert key_tenant == event_tenant == result.tenant.id
    assert changes == {"before": None, "after": {"name": "trips", "plan": "free", "schema_revision": head_revision()}}


def test_migrated_tenant_schema_matches_the_tenant_models(app, engine):
    provision(app, "models")
    with engine.begin() as conn:
        use_schema(conn, "t_models")
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, TenantBase.metadata)
    assert [d for d in diff if "alembic_version" not in str(d)] == []


def test_public_schema_matches_the_public_models(engine):
    with public_migrations.migration_connection(engine) as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True,
            "include_schemas": True,
            "include_name": lambda name, type_, parent: type_ != "schema" or name == "public",
        })
        diff = compare_metadata(context, PublicBase.metadata)
    assert [d for d in diff if "alembic_version" not in str(d)] == []


@pytest.fixture
def broken_migrations(tmp_path: Path) -> Path:
    """A copy of the tenant stream with one more revision, whose body the test picks."""
    location = tmp_path / "tenant_migrations"
    shutil.copytree(default_location(), location, ignore=shutil.ignore_patterns("__pycache__"))

    def add(body: str) -> Path:
        (location / "versions" / "9999_broken.py").write_text(
            "from alembic import op\n"
            f"revision = 'broken'\ndown_revision = '{head_revision()}'\n"
            "branch_labels = depends_on = None\n\n"
            "import sqlalchemy as sa\n\n"
            "def upgrade():\n"
            "    op.create_table('half_done', sa.Column('id', sa.Integer, primary_key=True))\n"
            f"    {body}\n\n"
            "def downgrade():\n    pass\n"
        )
        return location

    return add  # type: ignore[return-value]


@pytest.mark.parametrize(
    "failure",
    [
        "raise RuntimeError('injected failure in a tenant migration')",
        # The connection dies under the migration: PostgreSQL aborts the transaction itself.
        "op.execute('SELECT pg_terminate_backend(pg_backend_pid())')",
    ],
    ids=["migration-raises", "connection-lost"],
)
def test_a_failure_at_any_step_leaves_nothing_behind(make_app, engine, broken_migrations, failure):
    location = broken_migrations(failure)
    app = make_app(TENANT_MIGRATIONS_LOCATION=str(location))
    with pytest.raises(ProvisioningFailed):
        provision(app, "doomed")
    assert catalog(engine, "doomed") == NOTHING


def test_duplicate_slug_is_refused_and_the_first_tenant_is_untouched(app, engine):
    first = provision(app, "dupe")
    with pytest.raises(TenantAlreadyExists):
        provision(app, "dupe")
    state = catalog(engine, "dupe")
    assert len(state["keys"]) == 1 and state["keys"][0][1] == first.admin_key.prefix


def test_concurrent_provisioning_of_one_slug_has_exactly_one_winner(app, engine):
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def attempt() -> None:
        barrier.wait()
        try:
            provision(app, "racer")
            outcomes.append("created")
        except TenantAlreadyExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] + ["exists"] * 5
    assert len(catalog(engine, "racer")["keys"]) == 1


def test_unknown_plan_creates_nothing(app, engine):
    with pytest.raises(UnknownPlan):
        provision(app, "planless", plan="platinum")
    assert catalog(engine, "planless") == NOTHING


def test_an_orphan_schema_is_never_adopted(app, engine):
    with engine.begin() as conn:
        conn.exec_driver_sql('CREATE SCHEMA "t_orphan"')
        conn.exec_driver_sql('CREATE TABLE "t_orphan".secrets (id int primary key)')
    with pytest.raises(TenantAlreadyExists):
        provision(app, "orphan")
    state = catalog(engine, "orphan")
    assert state["tenant"] == [] and state["tables"] == ["secrets"]


@pytest.mark.parametrize("slug", [
    "Robert'); DROP TABLE public.tenants;--", 'x"; DROP SCHEMA public CASCADE; --',
    "pg_catalog", "public", "a", "ACME",
])
def test_invalid_slugs_never_reach_the_database(app, engine, slug):
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM pg_namespace")).scalar()
    with pytest.raises(InvalidSlug):
        provision(app, slug)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_namespace")).scalar() == before
        assert conn.execute(text("SELECT count(*) FROM public.tenants")).scalar() == 0


def test_the_onboarding_fast_path_builds_exactly_the_catalog_the_migrations_build(app, engine):
    """Provisioning sends the stream rendered once (one round trip) instead of running Alembic
    per tenant: the schema it builds must be what Alembic online builds, object for object
    (tables, columns with types and defaults, constraints, indexes, sequences), at the same
    alembic_version, owned as the role layer wants (`flask tenants check` reads ownership)."""
    provision(app, "fastpath")
    with engine.connect() as conn, conn.begin():
        built = drift.read_catalog(conn, "t_fastpath")
        version = conn.exec_driver_sql('SELECT version_num FROM "t_fastpath".alembic_version').scalars().all()
    reference = drift.reference_catalog(engine, head_revision())  # a scratch schema migrated online
    assert len(reference) > 20  # a real catalog: tables, columns, constraints, indexes
    assert drift.compare(reference, built) == [] and built == reference
    assert version == [head_revision()]
    result = app.test_cli_runner().invoke(args=["tenants", "check", "--tenant", "fastpath"])
    assert result.exit_code == 0, result.output
