"""Per-transaction schema switching, at the Python level (tenant_scope + a session).

These tests read PostgreSQL's own state (``current_setting('search_path')``,
``pg_prepared_statements``), not only the rows that come back: a test that only
compared rows would still pass if binding quietly stopped happening and both tenants
happened to hold the same data.
"""

from __future__ import annotations

import gc
import threading

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import sessionmaker

from app.models.tenant import Repository
from app.tenancy import TenantContextError, tenant_scope
from app.tenancy import binding as tenant_binding
from app.tenancy.binding import DENY_SEARCH_PATH


def search_path(session) -> str:
    # connection().exec_driver_sql bypasses the ORM hooks: it shows the raw state.
    return session.connection().exec_driver_sql("SELECT current_setting('search_path')").scalar()


def add_repo(session_factory, tenant, github_repo_id: int, name: str) -> int:
    with tenant_scope(tenant.binding), session_factory() as session, session.begin():
        repo = Repository(github_repo_id=github_repo_id, owner="o", name=name, full_name=f"o/{name}")
        session.add(repo)
        session.flush()
        return repo.id


@pytest.fixture
def one_connection(tenantry_database_url):
    """``one_connection(**connect_args)``: a sessionmaker whose pool holds exactly one connection."""
    engines = []

    def factory(**connect_args):
        engine = create_engine(
            tenantry_database_url.replace("postgresql://", "postgresql+psycopg://", 1),
            pool_size=1, max_overflow=0, pool_timeout=30, connect_args=connect_args,
        )
        engines.append(engine)
        sessions = sessionmaker(bind=engine)
        tenant_binding.install(sessions)
        return sessions

    yield factory
    for engine in engines:
        engine.dispose()


@pytest.fixture
def two_tenants(make_tenant):
    a, b = make_tenant(), make_tenant()
    return a, b


def test_a_transaction_gets_only_its_tenants_schema_on_the_path(session_factory, tenant):
    with tenant_scope(tenant.binding), session_factory() as session:
        assert search_path(session) == f'"{tenant.schema_name}"'


def test_without_a_tenant_the_path_resolves_nothing_and_orm_access_raises(session_factory, tenant):
    with session_factory() as session:
        assert search_path(session) == DENY_SEARCH_PATH
        with pytest.raises(TenantContextError):
            session.scalars(select(Repository)).all()
        session.rollback()
        session.add(Repository(github_repo_id=1, owner="o", name="n", full_name="o/n"))
        with pytest.raises(TenantContextError):
            session.flush()
        session.rollback()
        # Raw SQL is not guarded by the ORM, but finds no tenant table either.
        with pytest.raises(ProgrammingError, match="does not exist"):
            session.execute(text("SELECT * FROM repositories"))


def test_the_setting_dies_with_the_transaction(engine, session_factory, tenant):
    with tenant_scope(tenant.binding), session_factory() as session:
        connection = session.connection()
        raw = connection.connection.dbapi_connection
        assert search_path(session) == f'"{tenant.schema_name}"'
        session.commit()
        # Same physical connection, outside any of our transactions: server default again.
        with raw.cursor() as cur:
            cur.execute("SELECT current_setting('search_path')")
            assert cur.fetchone()[0] == '"$user", public'
            raw.rollback()


def test_pg_stat_activity_names_the_tenant_for_the_transaction_only(session_factory, tenantry_database_url, tenant):
    """Read from another backend, as an operator would: the name is set, then gone at COMMIT."""
    import psycopg

    def seen_by_others(pid: int) -> str:
        with psycopg.connect(tenantry_database_url.replace("+psycopg", ""), autocommit=True) as watcher:
            return watcher.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]

    with tenant_scope(tenant.binding), session_factory() as session:
        pid = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        assert seen_by_others(pid) == f"tenantry:{tenant.slug}"
        session.commit()
        assert seen_by_others(pid) == "tenantry"  # the connection's own name, from connect_args
    with session_factory() as session:  # a transaction with no tenant leaves the name alone
        session.connection()
        assert seen_by_others(session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()) == "tenantry"


def test_leaving_the_tenant_inside_a_transaction_gives_the_name_back(session_factory, tenant):
    def name(session) -> str:
        return session.connection().exec_driver_sql("SELECT current_setting('application_name')").scalar()

    with session_factory() as session:
        session.execute(text("SELECT 1 FROM public.plans LIMIT 1"))
        with tenant_scope(tenant.binding, session):
            assert name(session) == f"tenantry:{tenant.slug}"
        assert name(session) == "tenantry"


def test_binding_inside_an_open_transaction_applies_at_once(session_factory, tenant):
    with session_factory() as session:
        session.execute(text("SELECT 1 FROM public.plans LIMIT 1"))  # like the API-key lookup
        assert search_path(session) == DENY_SEARCH_PATH
        with tenant_scope(tenant.binding, session):
            assert search_path(session) == f'"{tenant.schema_name}"'
        assert search_path(session) == DENY_SEARCH_PATH


def test_a_transaction_never_serves_two_tenants(session_factory, two_tenants):
    a, b = two_tenants
    with session_factory() as session:
        with tenant_scope(a.binding, session):
            session.scalars(select(Repository)).all()
        with pytest.raises(TenantContextError, match="already served"):
            with tenant_scope(b.binding, session):
                pass


def test_identity_map_does_not_hand_one_tenants_object_to_another(session_factory, two_tenants):
    a, b = two_tenants
    id_a = add_repo(session_factory, a, 111, "from_a")
    id_b = add_repo(session_factory, b, 222, "from_b")
    assert id_a == id_b == 1  # ids collide across schemas
    factory = sessionmaker(bind=session_factory.kw["bind"], expire_on_commit=False)
    tenant_binding.install(factory)
    with factory() as session:
        with tenant_scope(a.binding):
            held = session.get(Repository, 1)  # a live reference keeps it in the identity map
            assert held.name == "from_a"
            session.commit()
        with tenant_scope(b.binding):
            assert session.get(Repository, 1).name == "from_b"
            session.commit()
        # The same, when B is bound into a transaction that began without a tenant
        # (the API-key lookup shape).
        session.execute(text("SELECT 1"))
        with tenant_scope(a.binding, session):
            held_again = session.get(Repository, 1)
            assert held_again.name == "from_a"
        session.commit()
        session.execute(text("SELECT 1"))
        with tenant_scope(b.binding, session):
            assert session.get(Repository, 1).name == "from_b"
        session.commit()
        assert held.name == "from_a" and held_again.name == "from_a"


def test_a_failing_statement_inside_tenant_scope_raises_its_own_error(session_factory, tenant):
    with session_factory() as session:
        session.execute(text("SELECT 1"))
        with pytest.raises(ProgrammingError, match="no_such_table"):
            with tenant_scope(tenant.binding, session):
                session.execute(text("SELECT * FROM no_such_table"))
        session.rollback()


def test_one_pooled_connection_alternating_tenants_from_threads_never_leaks(one_connection, two_tenants):
    a, b = two_tenants
    factory = one_connection()
    add_repo(factory, a, 1, "a-only")
    add_repo(factory, b, 2, "b-only")
    failures: list[str] = []

    def worker(tenant, expected: str, rounds: int) -> None:
        for _ in range(rounds):
            with tenant_scope(tenant.binding), factory() as session:
                names = session.scalars(select(Repository.name)).all()
                if names != [expected]:
                    failures.append(f"{tenant.slug} saw {names}")

    threads = [
        threading.Thread(target=worker, args=(t, name, 150))
        for t, name in [(a, "a-only"), (b, "b-only")] * 3
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_prepared_statements_follow_the_search_path(one_connection, two_tenants):
    a, b = two_tenants
    factory = one_connection(prepare_threshold=0)
    add_repo(factory, a, 10, "a-prepared")
    add_repo(factory, b, 20, "b-prepared")
    for i in range(100):
        tenant, expected = (a, "a-prepared") if i % 2 else (b, "b-prepared")
        with tenant_scope(tenant.binding), factory() as session:
            assert session.scalars(select(Repository.name)).all() == [expected]
    with factory() as session:
        prepared = session.connection().exec_driver_sql(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%repositories%%'"
        ).scalar()
    assert prepared >= 1, "the statement was never prepared: this test proved nothing"


def test_after_a_failed_transaction_the_connection_serves_the_next_tenant(one_connection, two_tenants):
    a, b = two_tenants
    factory = one_connection()
    add_repo(factory, b, 7, "b-row")
    with tenant_scope(a.binding), factory() as session:
        with pytest.raises(ProgrammingError):
            session.execute(text("SELECT no_such_column FROM repositories"))
        session.rollback()
    with tenant_scope(b.binding), factory() as session:
        assert search_path(session) == f'"{b.schema_name}"'
        assert session.scalars(select(Repository.name)).all() == ["b-row"]


def test_a_sessionmaker_born_where_a_dead_one_lived_still_gets_bound(engine, tenant):
    """install() once asked ``event.contains()`` whether a target was equipped, and
    SQLAlchemy keys that by ``id(target)``: a sessionmaker freed by its reference count
    (its Session subclass waiting for the cyclic GC) left its entry behind, so a new one
    at the same address was skipped and ran with no search_path and no guard at all."""
    checked = 0
    gc.disable()  # the window: the dead one's Session subclass is not collected yet
    try:
        for _ in range(100):
            dead = sessionmaker(bind=engine)
            tenant_binding.install(dead)
            address = id(dead)
            del dead
            born = sessionmaker(bind=engine)
            if id(born) != address:
                continue
            tenant_binding.install(born)
            with tenant_scope(tenant.binding), born() as session:
                assert search_path(session) == f'"{tenant.schema_name}"'
            checked += 1
            if checked == 5:
                break
    finally:
        gc.enable()
    if not checked:
        pytest.skip("this interpreter never reused a freed sessionmaker's address")


def test_the_binding_fails_closed_when_the_server_reports_another_path(one_connection, tenant):
    """Something between us and the server (a proxy, a hook) rewrote the path: refuse, never guess."""
    factory = one_connection()
    engine = factory.kw["bind"]

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def rewrite(conn, cursor, statement, parameters, context, executemany):
        return statement.replace("set_config('search_path', %(path)s", "set_config('search_path', 'public'"), parameters

    with tenant_scope(tenant.binding), factory() as session:
        with pytest.raises(TenantContextError, match="refusing"):
            session.execute(select(Repository.name)).all()
