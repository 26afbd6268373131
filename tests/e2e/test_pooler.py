"""Isolation behind PgBouncer in transaction mode, and a negative control that proves the test can fail.

A PgBouncer of the test's own (its ini and userlist in a temporary directory, a free
port) sits in front of the test database with one or two server connections. An app
whose DATABASE URL goes through it serves many threads, each with its own test client,
calling as random tenants: list, read one, create. In transaction mode consecutive
transactions of one client connection run on whichever server connection is free, and
every server connection serves every tenant in turn, so anything a transaction leaves
on its server connection reaches another tenant's request. The checks:

- every listed or fetched row is the caller's (github_repo_id is unique across the
  whole run, so each row's owner is known) and the caller's seeded rows are all there;
- afterwards, read directly from PostgreSQL, every schema holds exactly its seeded rows
  and the rows its tenant created (201), nothing of another tenant;
- a probe that binds nothing, running through the same pool during and after the load,
  always finds the server's default search_path: no tenant schema is left on a server
  connection.

The negative control runs the same scenario with a binding that has the classic bug:
a session-level ``SET search_path`` sent only when the tenant changes on a client
connection, and nothing when no tenant is bound. Directly on PostgreSQL that mostly
works (one client connection is one backend); behind a transaction-mode pooler a
request whose connection "already" has its tenant runs on a server connection that
another tenant's request switched last. The test must see those leaks.

Needs the ``pgbouncer`` binary (``.ci/run`` installs it); skipped without one.
"""

from __future__ import annotations

import getpass
import itertools
import os
import pwd
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import Engine, and_, func, text
from sqlalchemy.engine import Connection, make_url

from app.extensions import db
from app.models.public import ApiKey, Tenant
from app.tenancy import api_keys
from app.tenancy import binding as tenant_binding
from app.tenancy.context import TenantBinding
from app.testing import TestTenant


def _find_pgbouncer() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return next((p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(p, os.X_OK)), None)


PGBOUNCER = _find_pgbouncer()

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="no pgbouncer binary (apt-get install pgbouncer; .ci/run installs it)"
)

TENANTS = 10
THREADS = 8
REQUESTS_PER_THREAD = 32  # 256 requests per scenario
SEEDED_PER_TENANT = 3


# --- PgBouncer ----------------------------------------------------------------------


@dataclass(frozen=True)
class Bouncer:
    port: int
    user: str

    def url(self, database: str) -> str:
        """A URL through PgBouncer to the test database: ``pool1`` has one server connection, ``pool2`` two."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quote(value: str) -> str:
    """A value inside a PgBouncer connection string (libpq quoting)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _run_as(server_host: str) -> list[str]:
    """PgBouncer refuses to run as root: as root, switch to a user that can reach the server.

    The embedded server listens on a Unix socket inside its data directory, which only
    its own system user may enter; for TCP any unprivileged user will do.
    """
    if os.geteuid() != 0:
        return []
    if server_host.startswith("/"):
        owner = pwd.getpwuid(os.stat(server_host).st_uid).pw_name
        if owner != "root":
            return ["-u", owner]
    return ["-u", "nobody"]


@pytest.fixture
def bouncer(tenantry_database_url: str, tmp_path: Path) -> Iterator[Bouncer]:
    """A PgBouncer of the test's own, in transaction mode, in front of the test database."""
    url = make_url(tenantry_database_url)
    host = url.host or str(url.query.get("host") or "/var/run/postgresql")
    user = url.username or getpass.getuser()
    server = {"host": host, "port": str(url.port or 5432), "dbname": url.database, "user": user}
    if url.password:  # a server that wants a password gets it from PgBouncer
        server["password"] = url.password
    connstr = " ".join(f"{k}={_quote(v)}" for k, v in server.items())
    userlist = tmp_path / "userlist.txt"
    # auth_type = trust: clients are not asked for a password, but the user must be listed.
    userlist.write_text(f'"{user}" ""\n')
    log_path = tmp_path / "pgbouncer.log"
    for _ in range(3):  # the free port may be taken before PgBouncer binds it
        port = _free_port()
        ini = tmp_path / "pgbouncer.ini"
        ini.write_text(f"""\
[databases]
pool1 = {connstr} pool_size=1
pool2 = {connstr} pool_size=2

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {userlist}
pool_mode = transaction
default_pool_size = 2
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
; Tenantry needs no reset between clients (transaction mode never runs one anyway).
server_reset_query =
query_wait_timeout = 30
""")
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [PGBOUNCER, *_run_as(host), str(ini)], stdout=log, stderr=subprocess.STDOUT,
            )
        if _wait_until_listening(process, port):
            break
        process.wait(timeout=10)
    else:
        pytest.fail(f"PgBouncer did not start:\n{log_path.read_text()}")
    try:
        yield Bouncer(port=port, user=user)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    process.terminate()
    return False


def _connect(url: str) -> psycopg.Connection:
    """A plain connection through PgBouncer: autocommit, no server-side prepared statements."""
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


# --- the scenario -------------------------------------------------------------------


@dataclass
class Observations:
    requests: int = 0
    foreign_rows: list[tuple[str, int]] = field(default_factory=list)  # (caller, github_repo_id)
    wrong_answers: list[str] = field(default_factory=list)  # a status or row the caller cannot get
    misrouted_rows: list[tuple[str, int]] = field(default_factory=list)  # (schema's tenant, github_repo_id)
    missing_rows: list[tuple[str, int]] = field(default_factory=list)
    probe_paths: set[str] = field(default_factory=set)
    probe_found_tenant_table: int = 0
    probe_backends: set[int] = field(default_factory=set)

    @property
    def leaks(self) -> int:
        return len(self.foreign_rows) + len(self.misrouted_rows)


class Ledger:
    """Who owns each github_repo_id (unique over the run), and what each tenant has."""

    def __init__(self, tenants: list[TestTenant]) -> None:
        self.lock = threading.Lock()
        self.ids = itertools.count(1_000_000)
        self.owner: dict[int, str] = {}
        self.seeded: dict[str, dict[int, int]] = {t.slug: {} for t in tenants}  # slug -> {id: github id}
        self.created: dict[str, set[int]] = {t.slug: set() for t in tenants}

    def new_id(self, slug: str) -> int:
        with self.lock:
            github_repo_id = next(self.ids)
            self.owner[github_repo_id] = slug
        return github_repo_id


def seed(client: Any, tenants: list[TestTenant], ledger: Ledger) -> None:
    """A few rows per tenant, through the direct app; row ids 1..n collide across schemas."""
    for tenant in tenants:
        for _ in range(SEEDED_PER_TENANT):
            github_repo_id = ledger.new_id(tenant.slug)
            response = client.post("/v1/repositories", headers=tenant.auth, json={
                "github_repo_id": github_repo_id, "owner": tenant.slug, "name": f"seed-{github_repo_id}"})
            assert response.status_code == 201, response.json
            ledger.seeded[tenant.slug][response.json["id"]] = github_repo_id


def run_load(app: Flask, tenants: list[TestTenant], ledger: Ledger, probe_url: str, seed_value: int) -> Observations:
    """THREADS threads, each with its own test client, as random tenants; a probe alongside."""
    seen = Observations()
    seen_lock = threading.Lock()
    failures: list[BaseException] = []
    stop_probe = threading.Event()

    def check_rows(tenant: TestTenant, rows: list[dict[str, Any]]) -> None:
        foreign = [(tenant.slug, r["github_repo_id"]) for r in rows
                   if ledger.owner.get(r["github_repo_id"]) != tenant.slug or r["owner"] != tenant.slug]
        if foreign:
            with seen_lock:
                seen.foreign_rows.extend(foreign)

    def wrong(what: str) -> None:
        with seen_lock:
            seen.wrong_answers.append(what)

    def worker(index: int) -> None:
        rng = random.Random(seed_value * 1000 + index)
        client = app.test_client()
        for _ in range(REQUESTS_PER_THREAD):
            tenant = rng.choice(tenants)
            roll = rng.random()
            if roll < 0.4:
                response = client.get("/v1/repositories?limit=200", headers=tenant.auth)
                if response.status_code != 200:
                    wrong(f"{tenant.slug}: list -> {response.status_code}")
                    continue
                rows = response.json["items"]
                check_rows(tenant, rows)
                missing = set(ledger.seeded[tenant.slug].values()) - {r["github_repo_id"] for r in rows}
                if missing:
                    wrong(f"{tenant.slug}: list lacks seeded {sorted(missing)}")
            elif roll < 0.6:
                row_id, github_repo_id = rng.choice(sorted(ledger.seeded[tenant.slug].items()))
                response = client.get(f"/v1/repositories/{row_id}", headers=tenant.auth)
                if response.status_code != 200:
                    wrong(f"{tenant.slug}: get {row_id} -> {response.status_code}")
                    continue
                check_rows(tenant, [response.json])
                if response.json["github_repo_id"] != github_repo_id:
                    wrong(f"{tenant.slug}: get {row_id} is {response.json['github_repo_id']}")
            else:
                github_repo_id = ledger.new_id(tenant.slug)
                response = client.post("/v1/repositories", headers=tenant.auth, json={
                    "github_repo_id": github_repo_id, "owner": tenant.slug, "name": f"r-{github_repo_id}"})
                if response.status_code != 201:
                    wrong(f"{tenant.slug}: create {github_repo_id} -> {response.status_code}")
                    continue
                with ledger.lock:
                    ledger.created[tenant.slug].add(github_repo_id)
            with seen_lock:
                seen.requests += 1

    def probe_once(conn: psycopg.Connection) -> None:
        backend, path, table = conn.execute(
            "SELECT pg_backend_pid(), current_setting('search_path'), to_regclass('repositories') IS NOT NULL"
        ).fetchone()
        with seen_lock:
            seen.probe_backends.add(backend)
            seen.probe_paths.add(path)
            seen.probe_found_tenant_table += bool(table)

    def probe() -> None:
        """Binds nothing: what a transaction finds on a server connection before it sets anything."""
        with _connect(probe_url) as conn:
            while not stop_probe.is_set():
                probe_once(conn)
                time.sleep(0.005)

    def guarded(target: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # re-raised in the main thread
                failures.append(exc)
        return run

    workers = [threading.Thread(target=guarded(worker, i)) for i in range(THREADS)]
    prober = threading.Thread(target=guarded(probe))
    prober.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    stop_probe.set()
    prober.join(timeout=30)
    assert not any(t.is_alive() for t in (*workers, prober)), "the load did not finish in time"
    if failures:
        raise failures[0]
    with _connect(probe_url) as conn:  # and once more, after the last request
        for _ in range(4):
            probe_once(conn)
    return seen


def check_schemas(engine: Engine, tenants: list[TestTenant], ledger: Ledger, seen: Observations) -> None:
    """Read every schema directly (schema-qualified, no binding): whose rows landed where."""
    with engine.connect() as conn:
        for tenant in tenants:
            stored = set(conn.execute(text(
                f'SELECT github_repo_id FROM "{tenant.schema_name}".repositories')).scalars())
            expected = set(ledger.seeded[tenant.slug].values()) | ledger.created[tenant.slug]
            seen.misrouted_rows += [(tenant.slug, g) for g in sorted(stored) if ledger.owner.get(g) != tenant.slug]
            seen.missing_rows += [(tenant.slug, g) for g in sorted(expected - stored)]


@pytest.fixture
def tenants(make_tenant: Callable[..., TestTenant], make_plan: Callable[..., str]) -> list[TestTenant]:
    plan = make_plan()  # no quota, no rate limit: hundreds of requests per tenant
    return [make_tenant(plan=plan) for _ in range(TENANTS)]


@pytest.fixture
def pooled_app(make_app: Callable[..., Flask], bouncer: Bouncer) -> Callable[[str], Flask]:
    def build(database: str) -> Flask:
        # PgBouncer 1.18 has no prepared-statement support (1.21+ with max_prepared_statements
        # has): psycopg must not prepare statements behind it.
        return make_app(bouncer.url(database), DB_PREPARE_THRESHOLD=None,
                        DB_POOL_SIZE=THREADS, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=30)
    return build


def default_search_path(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT current_setting('search_path')").scalar()


# --- the tests ----------------------------------------------------------------------


@pytest.mark.parametrize("database", ["pool1", "pool2"])
def test_every_tenant_sees_and_writes_only_its_own_rows_behind_pgbouncer(
    client, engine, bouncer, pooled_app, tenants, database
):
    app = pooled_app(database)
    with app.app_context():
        raw = db.engine.raw_connection()
        try:
            assert raw.driver_connection.prepare_threshold is None  # DB_PREPARE_THRESHOLD=off reached psycopg
        finally:
            raw.close()
    assert app.test_client().get("/readyz").status_code == 200
    ledger = Ledger(tenants)
    seed(client, tenants, ledger)

    seen = run_load(app, tenants, ledger, bouncer.url(database), seed_value=1 if database == "pool1" else 2)
    check_schemas(engine, tenants, ledger, seen)

    assert seen.requests == THREADS * REQUESTS_PER_THREAD
    assert seen.foreign_rows == []
    assert seen.wrong_answers == []
    assert seen.misrouted_rows == []
    assert seen.missing_rows == []
    assert sum(map(len, ledger.created.values())) > 40  # the writes did happen
    # Every server connection came back with the server's own path: no tenant left on it.
    assert seen.probe_paths == {default_search_path(engine)}
    assert seen.probe_found_tenant_table == 0
    # All of it went through the pool's one or two server connections.
    assert 1 <= len(seen.probe_backends) <= int(database[-1])


def set_without_local(connection: Connection, binding: TenantBinding | None, **_: object) -> None:
    """The binding with LOCAL dropped: ``set_config(..., false)``, the deny path included."""
    connection.exec_driver_sql(
        "SELECT set_config('search_path', %(path)s, false)", {"path": tenant_binding.search_path_for(binding)}
    )


def set_once_per_connection(connection: Connection, binding: TenantBinding | None, **_: object) -> None:
    """``SET search_path`` when the client connection's last tenant differs; nothing with no tenant."""
    if binding is None:
        return
    path = tenant_binding.search_path_for(binding)
    if connection.info.get("leaky.search_path") != path:
        connection.exec_driver_sql(f"SET search_path TO {path}")
        connection.info["leaky.search_path"] = path


def lookup_binds_without_local() -> Any:
    """The API-key lookup that binds its tenant (api_keys.authenticate(bind=True)), LOCAL dropped."""
    columns = tenant_binding.binding_columns(
        good=and_(ApiKey.revoked_at.is_(None), Tenant.status == "active"),
        schema_name=Tenant.schema_name, slug=Tenant.slug, role=Tenant.db_role,
    )
    return api_keys._LOOKUP.add_columns(*(func.set_config(*list(c.clauses)[:2], False) for c in columns))


@pytest.mark.parametrize("leaky_binding", [set_without_local, set_once_per_connection, lookup_binds_without_local])
def test_negative_control_a_session_level_binding_leaks_behind_pgbouncer(
    client, engine, bouncer, pooled_app, tenants, monkeypatch, leaky_binding
):
    """The same scenario with a broken binding must fail the checks above: the test can fail.

    The first two broken bindings replace ``set_search_path`` (so the transaction start
    and the switch after the key lookup alike: the key lookup is made not to bind, as it
    did before it learnt to); ``lookup_binds_without_local`` breaks the key lookup that
    binds its tenant in the same statement. The ORM guards are left as they are. One
    server connection in the pool.

    ``lookup_binds_without_local`` leaves a tenant's path (and role, and name) on the
    server connection at every request, which the probe finds, like the next one.

    ``set_without_local`` still sets a path at the start of every transaction, so each
    request reads its own rows; what is left behind is a tenant's path on the server
    connection, which the probe (a transaction that sets nothing) finds, with that
    tenant's tables. ``set_once_per_connection`` is the "set it when the tenant
    changes" optimisation: directly on PostgreSQL one client connection is one backend
    and it mostly works, but here, when a client connection serves the same tenant
    twice in a row, another tenant's request has most likely switched the server
    connection in between: requests read and write other tenants' rows.
    """
    app = pooled_app("pool1")
    ledger = Ledger(tenants)
    seed(client, tenants, ledger)  # with the real binding, so the seeds are where they belong

    if leaky_binding is lookup_binds_without_local:
        monkeypatch.setattr(api_keys, "_LOOKUP_AND_BIND", leaky_binding())
    else:
        authenticate = api_keys.authenticate
        monkeypatch.setattr(api_keys, "authenticate", lambda *a, **kw: authenticate(*a, **{**kw, "bind": False}))
        monkeypatch.setattr(tenant_binding, "set_search_path", leaky_binding)
    seen = run_load(app, tenants, ledger, bouncer.url("pool1"), seed_value=3)
    monkeypatch.undo()
    check_schemas(engine, tenants, ledger, seen)

    # A transaction that set nothing found a tenant's schema, and its tables, on the server connection ...
    assert seen.probe_paths - {default_search_path(engine)}
    assert seen.probe_found_tenant_table > 0
    if leaky_binding is set_once_per_connection:
        # ... and requests read other tenants' rows and wrote into other tenants' schemas.
        assert seen.foreign_rows, "no foreign row was served: the scenario cannot detect a leaking binding"
        assert seen.leaks >= 5
