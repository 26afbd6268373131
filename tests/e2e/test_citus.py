"""On a Citus cluster (coordinator + 2 workers): placement, moves under load, drain, rebalance, adoption.

Runs when ``TEST_DATABASE_URL`` points at a Citus coordinator with schema-based sharding
(``.ci/run`` builds and starts one); on plain PostgreSQL the module checks only that
the cluster commands refuse with a clear error.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool
from test_concurrency_soak import gunicorn  # noqa: F401 - the fixture, shared

from app.extensions import db
from app.tenancy import binding as tenant_binding
from app.tenancy import cluster
from app.tenancy.locks import LOCK_NAMESPACE
from app.tenancy.provisioning import provision_tenant
from app.testing import ADMIN_TOKEN


@pytest.fixture
def on_citus(citus):
    if not citus:
        pytest.skip("needs TEST_DATABASE_URL pointing at a Citus coordinator (.ci/run starts one)")
    return citus


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def node_of(engine, slug: str) -> str | None:
    with engine.connect() as conn:
        placement = cluster.placement_of(conn, f"t_{slug}")
    return placement.address if placement else None


def workers(engine) -> list[str]:
    with engine.connect() as conn:
        return [n.address for n in cluster.nodes(conn) if n.role == "worker"]


def cli_json(runner, *args):
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_onboarding_places_each_schema_on_a_worker_and_tenants_land_on_both(on_citus, make_tenant, engine):
    slugs = [make_tenant().slug for _ in range(6)]
    with engine.connect() as conn:
        distributed = set(conn.execute(text("SELECT schema_name::text FROM citus_schemas")).scalars())
        shards = conn.execute(text(
            "SELECT table_name::text, nodeport FROM citus_shards WHERE citus_table_type = 'schema'"
            " AND table_name::text LIKE :p"), {"p": f"t_{slugs[0]}.%"}).all()
    assert {f"t_{s}" for s in slugs} <= distributed
    # Every table of a tenant on one worker, together.
    assert {t for t, _ in shards} >= {f"t_{slugs[0]}.repositories", f"t_{slugs[0]}.audit_events"}
    assert len({port for _, port in shards}) == 1
    assert {node_of(engine, s) for s in slugs} == set(workers(engine))


def test_plans_is_a_reference_table_and_the_public_ids_keep_counting(on_citus, engine, make_plan):
    with engine.connect() as conn:
        kinds = dict(conn.execute(text(
            "SELECT table_name::text, citus_table_type FROM citus_tables")).all())
        largest = conn.execute(text("SELECT max(id) FROM public.plans")).scalar()
    assert kinds["plans"] == "reference"
    assert {kinds.get(t) for t in ("tenants", "api_keys", "migration_runs", "migration_outcomes")} == {"local"}
    assert "audit_events" not in kinds  # an ordinary coordinator table
    name = make_plan()
    with engine.connect() as conn:
        made = conn.execute(text("SELECT id FROM public.plans WHERE name = :n"), {"n": name}).scalar()
    assert made > largest


def test_cluster_status_counts_tenants_per_node_and_refuses_clearly_on_plain_postgresql(
    citus, make_tenant, runner, engine,
):
    made = [make_tenant().slug for _ in range(2)]
    if not citus:
        result = runner.invoke(args=["cluster", "status"])
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            "error: this database is not a Citus coordinator (no citus extension); see docs/scale-out.md")
        result = runner.invoke(args=["tenants", "move", made[0], "--to", "127.0.0.1:9701"])
        assert result.exit_code == 1 and "not a Citus coordinator" in result.stderr
        return
    report = cli_json(runner, "cluster", "status")
    assert report["schema_sharding"] is True and report["citus_version"].startswith("13.")
    by_role = {n["role"] for n in report["nodes"]}
    assert by_role == {"coordinator", "worker"}
    placed = sum(n["tenants"] for n in report["nodes"] if n["role"] == "worker")
    assert placed == report["tenants"] - len(report["not_distributed"]) and placed >= len(made)
    assert all(n["bytes"] > 0 for n in report["nodes"] if n["tenants"])
    human = runner.invoke(args=["cluster", "status"])
    assert human.exit_code == 0 and "schema-based sharding on" in human.stdout


def test_move_is_refused_clearly(on_citus, make_tenant, runner, engine):
    slug = make_tenant().slug
    here = node_of(engine, slug)
    cases = {
        ("--to", here): f"error: tenant '{slug}' is on {here} already",
        ("--to", "127.0.0.1:1"): "error: no worker 127.0.0.1:1 in the cluster (workers: ",
        ("--to", "nonsense"): "error: a node is HOST:PORT",
    }
    for args, message in cases.items():
        result = runner.invoke(args=["tenants", "move", slug, *args])
        assert result.exit_code == 1 and result.stderr.startswith(message), result.stderr
    result = runner.invoke(args=["tenants", "move", "nobody_here", "--to", here])
    assert result.exit_code == 1 and result.stderr.strip() == "error: no tenant with slug 'nobody_here'"
    # A tenant being migrated (its advisory lock held) is refused at once, not queued.
    other = next(w for w in workers(engine) if w != here)
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:ns, hashtext(:s))"), {"ns": LOCK_NAMESPACE, "s": slug})
        result = runner.invoke(args=["tenants", "move", slug, "--to", other])
        holder.execute(text("SELECT pg_advisory_unlock(:ns, hashtext(:s))"), {"ns": LOCK_NAMESPACE, "s": slug})
    assert result.exit_code == 1 and result.stderr.startswith(f"error: tenant '{slug}' is busy")
    assert node_of(engine, slug) == here


def test_a_move_under_load_loses_nothing_and_fails_no_request(
    on_citus, gunicorn, make_tenant, make_plan, runner, engine,  # noqa: F811 - the shared fixture
):
    plan = make_plan()  # no quota, no rate limit
    moving, other = make_tenant(plan=plan), make_tenant(plan=plan)
    source = node_of(engine, moving.slug)
    target = next(w for w in workers(engine) if w != source)
    acknowledged: dict[str, list[int]] = {moving.slug: [], other.slug: []}
    failures: list[tuple] = []
    stop = threading.Event()

    def work(tenant, number: int) -> None:
        i = 0
        while not stop.is_set() and i < 2000:
            i += 1
            repo_id = number * 100_000 + i
            status, body = gunicorn("POST", "/v1/repositories", tenant.token,
                                    {"github_repo_id": repo_id, "owner": "o", "name": f"r{repo_id}"})
            if status == 201:
                acknowledged[tenant.slug].append(body["id"])
            else:
                failures.append(("POST", tenant.slug, status, body))
            status, body = gunicorn("GET", "/v1/repositories?limit=5", tenant.token)
            if status != 200:
                failures.append(("GET", tenant.slug, status, body))

    threads = [threading.Thread(target=work, args=(t, n)) for n, t in enumerate([moving, moving, moving, other])]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    result = runner.invoke(args=["tenants", "move", moving.slug, "--to", target, "--json"])
    took = time.monotonic() - started
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "moved"
    assert node_of(engine, moving.slug) == target
    assert failures == []
    for tenant in (moving, other):
        rows = gunicorn_ids(engine, tenant.slug)
        assert sorted(acknowledged[tenant.slug]) == rows  # every acknowledged write, nothing else
    assert len(acknowledged[moving.slug]) > 10, (took, len(acknowledged[moving.slug]))
    with engine.connect() as conn:
        event = conn.execute(text(
            "SELECT actor, changes FROM public.audit_events WHERE action = 'tenant.moved' AND tenant_slug = :s"),
            {"s": moving.slug}).one()
    assert event.actor.startswith("cli:")
    assert event.changes == {"before": {"node": source}, "after": {"node": target}}


def gunicorn_ids(engine, slug: str) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(text(f'SELECT id FROM "t_{slug}".repositories')).scalars())


def test_drain_empties_a_worker_and_rebalance_evens_them_out(on_citus, make_tenant, runner, engine):
    for _ in range(4):
        make_tenant()
    first, second = workers(engine)
    try:
        report = cli_json(runner, "cluster", "drain", first)
        assert report["failed"] == 0
        with engine.connect() as conn:
            placed = cluster.placements(conn)
            takes = dict(conn.execute(text(
                "SELECT nodename || ':' || nodeport, shouldhaveshards FROM pg_dist_node")).all())
        assert {p.address for p in placed.values()} == {second}
        assert takes[first] is False
        dry = cli_json(runner, "cluster", "rebalance", "--dry-run")
        assert dry["moves"] == []  # the drained worker takes no schemas: nothing to even out
    finally:
        with engine.connect() as conn:
            conn.execute(text("SELECT citus_set_node_property(:h, :p, 'shouldhaveshards', true)"),
                         {"h": first.split(":")[0], "p": int(first.split(":")[1])})
            conn.commit()
    dry = cli_json(runner, "cluster", "rebalance", "--dry-run")
    assert dry["dry_run"] and dry["results"] == [] and len(dry["moves"]) >= 2
    report = cli_json(runner, "cluster", "rebalance")
    assert report["failed"] == 0 and report["moved"] == len(dry["moves"])
    with engine.connect() as conn:
        counts: dict[str, int] = {}
        for placement in cluster.placements(conn).values():
            counts[placement.address] = counts.get(placement.address, 0) + 1
    assert abs(counts[first] - counts[second]) <= 1, counts
    assert cli_json(runner, "cluster", "rebalance", "--dry-run")["moves"] == []


def test_adopt_distributes_schemas_made_before_sharding_was_on(
    on_citus, tenantry_database_url, app, runner, engine, make_tenant,
):
    # An existing single-node deployment: its schemas were created with sharding off.
    local = create_engine(tenantry_database_url, poolclass=NullPool,
                          connect_args={"options": "-c citus.enable_schema_based_sharding=off"})
    factory = sessionmaker(bind=local)
    tenant_binding.install(factory)
    slugs = [f"old{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        for slug in slugs:
            with app.app_context():
                provision_tenant(factory(), slug=slug, name=slug)
        assert [node_of(engine, s) for s in slugs] == [None, None]
        status = cli_json(runner, "cluster", "status")
        assert set(slugs) <= set(status["not_distributed"])
        report = cli_json(runner, "cluster", "adopt")
        assert set(slugs) <= set(report["adopted"]) and report["failed"] == {}
        assert all(node_of(engine, s) in workers(engine) for s in slugs)
        assert cli_json(runner, "cluster", "adopt")["adopted"] == []  # resumable: nothing left
        # The adopted tenant works through the API.
        with app.app_context():
            token = db.session.execute(text("SELECT 1")).scalar()
        assert token == 1
    finally:
        local.dispose()
        with engine.connect() as conn:
            for slug in slugs:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "t_{slug}" CASCADE'))
                conn.execute(text("DELETE FROM public.tenants WHERE slug = :s"), {"s": slug})
            conn.commit()


def test_the_tenant_detail_and_the_admin_cluster_endpoint_name_the_node(on_citus, tenant, admin_client, engine):
    detail = admin_client.get(f"/v1/admin/tenants/{tenant.slug}")
    assert detail.status_code == 200 and detail.json["node"] == node_of(engine, tenant.slug)
    overview = admin_client.get("/v1/admin/cluster")
    assert overview.status_code == 200
    assert {n["role"] for n in overview.json["nodes"]} == {"coordinator", "worker"}
    target = next(w for w in workers(engine) if w != detail.json["node"])
    moved = admin_client.post(f"/v1/admin/tenants/{tenant.slug}/move", json={"node": target})
    assert moved.status_code == 200 and moved.json["status"] == "moved" and moved.json["target"] == target
    again = admin_client.post(f"/v1/admin/tenants/{tenant.slug}/move", json={"node": target})
    assert again.status_code == 409 and again.headers["Content-Type"] == "application/problem+json"
    assert ADMIN_TOKEN not in again.get_data(as_text=True)


def test_readyz_reports_the_clusters_nodes(on_citus, client):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    nodes = ready.json["cluster"]["nodes"]
    assert [n["role"] for n in nodes] == ["coordinator", "worker", "worker"] and all(n["active"] for n in nodes)


def test_citus_is_detected_on_the_first_connection_and_logged_once(citus, make_app, caplog):
    caplog.set_level("INFO", logger="app.tenancy.cluster")
    app = make_app()
    assert caplog.records == []  # the factory never connects
    with app.app_context():
        for _ in range(2):
            with db.engine.connect():
                pass
        assert cluster.citus_of(db.engine) == citus
    messages = [r.getMessage() for r in caplog.records]
    if citus:
        assert messages == [f"Citus {citus.version} detected: schema-based sharding on (new tenant schemas are "
                            "distributed)"]
    else:
        assert messages == []


def test_check_citus_flags_what_would_break_a_schema_on_citus(citus, make_tenant, engine, runner):
    """On plain PostgreSQL (before moving to Citus) every rule can be broken by hand; on a
    cluster Citus itself refuses foreign keys leaving the schema, so only the other two."""
    clean, broken = make_tenant(), make_tenant()
    schema = f"t_{broken.slug}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".no_key (v text)')
        conn.exec_driver_sql("CREATE OR REPLACE FUNCTION public.tenantry_test_noop() RETURNS trigger"
                             " LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
        if citus:
            conn.exec_driver_sql("SET LOCAL citus.enable_unsafe_triggers = on")
        conn.exec_driver_sql(f'CREATE TRIGGER touch BEFORE UPDATE ON "{schema}".repositories'
                             " FOR EACH ROW EXECUTE FUNCTION public.tenantry_test_noop()")
        if not citus:
            conn.exec_driver_sql(f'ALTER TABLE "{schema}".no_key ADD COLUMN tenant_id bigint'
                                 " CONSTRAINT to_public REFERENCES public.tenants (id)")
            conn.exec_driver_sql(f'ALTER TABLE "{schema}".no_key ADD COLUMN other bigint'
                                 f' CONSTRAINT to_other REFERENCES "t_{clean.slug}".repositories (id)')
    try:
        result = runner.invoke(args=["tenants", "check", "--citus", "--json",
                                     "--tenant", clean.slug, "--tenant", broken.slug])
        report = json.loads(result.stdout)
        assert result.exit_code == 1
        [drifted] = report["drifted"]
        problems = [p for p in drifted["problems"] if p.startswith("citus: ")]
        expected = [
            "citus: table no_key has no primary key or replica identity (citus_schema_move cannot move it online)",
            "citus: trigger touch on repositories (Citus refuses triggers on distributed tables unless "
            "citus.enable_unsafe_triggers)",
        ]
        if not citus:
            expected += [
                "citus: foreign key to_other on no_key references another tenant schema "
                f"(t_{clean.slug}.repositories)",
                "citus: foreign key to_public on no_key references public.tenants, which is not a Citus "
                "reference table",
            ]
        assert drifted["slug"] == broken.slug and problems == expected
        # The stream's head, built aside: nothing breaks, and the identity columns are noted.
        assert report["head"]["problems"] == []
        [note] = report["head"]["notes"]
        assert note.startswith("citus: identity column(s) audit_events.id, invitations.id, members.id, repositories.id")
        # Without --citus, none of this is looked at (the by-hand table is drift of its own).
        plain = json.loads(runner.invoke(args=["tenants", "check", "--json", "--tenant", clean.slug]).stdout)
        assert plain["drifted"] == [] and "head" not in plain
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{schema}".no_key')
            if citus:
                conn.exec_driver_sql("SET LOCAL citus.enable_unsafe_triggers = on")
            conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS touch ON "{schema}".repositories')
            conn.exec_driver_sql("DROP FUNCTION IF EXISTS public.tenantry_test_noop()")


def test_onboarding_can_place_a_tenant_on_a_chosen_worker(citus, runner, admin_client, engine):
    slugs = [f"placed{uuid.uuid4().hex[:8]}" for _ in range(4)]
    if not citus:  # refused before anything is created, CLI and API alike
        result = runner.invoke(args=["tenants", "create", slugs[0], "--name", "X", "--node", "127.0.0.1:9701"])
        assert result.exit_code == 1 and "not a Citus coordinator" in result.stderr
        response = admin_client.post("/v1/admin/tenants", json={"slug": slugs[1], "name": "X",
                                                                "node": "127.0.0.1:9701"})
        assert response.status_code == 409 and response.json["type"].endswith("/placement-refused")
        assert admin_client.get(f"/v1/admin/tenants/{slugs[0]}").status_code == 404
        assert admin_client.get(f"/v1/admin/tenants/{slugs[1]}").status_code == 404
        return
    first, second = workers(engine)
    for slug, node in zip(slugs[:2], (first, second), strict=True):
        created = cli_json(runner, "tenants", "create", slug, "--name", slug, "--node", node)
        assert created["node"] == node and created["placement_error"] is None
        assert node_of(engine, slug) == node
    for slug, node in zip(slugs[2:], (second, first), strict=True):
        response = admin_client.post("/v1/admin/tenants", json={"slug": slug, "name": slug, "node": node})
        assert response.status_code == 201, response.json
        assert response.json["node"] == node and response.json["placement_error"] is None
        assert node_of(engine, slug) == node
    refused = admin_client.post("/v1/admin/tenants", json={"slug": "nowhere_co", "name": "X",
                                                           "node": "127.0.0.1:1"})
    assert refused.status_code == 409 and "no worker 127.0.0.1:1" in refused.json["detail"]
    assert admin_client.get("/v1/admin/tenants/nowhere_co").status_code == 404


def test_an_existing_public_schema_converts_with_its_ids_counting_on(on_citus, tenantry_database_url):
    """A deployment at 0004 with rows whose ids ran ahead of their sequences (inserted with
    explicit ids): 0005 makes plans a reference table and every id sequence follows."""
    from app import public_migrations
    from app.testing import fresh_database

    with fresh_database(tenantry_database_url) as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            public_migrations.upgrade(engine, "0004")
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO public.plans (id, name) OVERRIDING SYSTEM VALUE VALUES (40, 'big')")
                conn.exec_driver_sql(
                    "INSERT INTO public.tenants (id, slug, name, schema_name, plan_id, status)"
                    " OVERRIDING SYSTEM VALUE VALUES (70, 'old_co', 'Old', 't_old_co', 40, 'active')")
            public_migrations.upgrade(engine)
            with engine.begin() as conn:
                kind = conn.exec_driver_sql(
                    "SELECT citus_table_type FROM citus_tables WHERE table_name = 'public.plans'::regclass").scalar()
                plan = conn.exec_driver_sql("INSERT INTO public.plans (name) VALUES ('next') RETURNING id").scalar()
                tenant = conn.exec_driver_sql(
                    "INSERT INTO public.tenants (slug, name, schema_name, plan_id, status)"
                    " VALUES ('new_co', 'New', 't_new_co', 40, 'active') RETURNING id").scalar()
            assert kind == "reference" and plan == 41 and tenant == 71
            with pytest.raises(RuntimeError, match="0005 cannot be downgraded on Citus: plans is a reference"):
                public_migrations.downgrade(engine, "0004")
        finally:
            engine.dispose()



def test_a_tenant_exported_from_the_cluster_imports_on_plain_postgresql_and_back(
    on_citus, app, client, make_app, tmp_path, engine,
):
    """Leaving the cluster (and coming back) is export and import: ids, rows and sequences hold.

    The plain server is ``TEST_PLAIN_DATABASE_URL`` (``.ci/run`` sets it to the local
    PostgreSQL 15), else an embedded one started for the test.
    """
    from app import public_migrations
    from app.testing import database_server, fresh_database

    created = json.loads(app.test_cli_runner().invoke(
        args=["tenants", "create", "roundtrip_co", "--name", "Round Trip", "--plan", "pro", "--json"]).stdout)
    token = created["api_key"]["token"]
    auth = {"Authorization": f"Bearer {token}"}
    for i in range(3):
        assert client.post("/v1/repositories", json={"github_repo_id": 500 + i, "owner": "o", "name": f"r{i}"},
                           headers=auth).status_code == 201
    out = tmp_path / "out.jsonl.gz"
    assert app.test_cli_runner().invoke(args=["tenants", "export", "roundtrip_co", "--output", str(out)]).exit_code == 0

    plain_server = os.environ.get("TEST_PLAIN_DATABASE_URL")
    with (database_server() if plain_server is None else _given(plain_server)) as server, \
            fresh_database(server) as plain_url:
        plain = make_app(plain_url)
        with plain.app_context():
            public_migrations.upgrade(db.engine)
        imported = plain.test_cli_runner().invoke(
            args=["tenants", "import", str(out), "--slug", "roundtrip_co", "--json"])
        assert imported.exit_code == 0, imported.stderr
        plain_token = json.loads(imported.stdout)["api_key"]["token"]
        plain_client = plain.test_client()
        plain_auth = {"Authorization": f"Bearer {plain_token}"}
        listed = plain_client.get("/v1/repositories", headers=plain_auth).json["items"]
        assert [r["id"] for r in listed] == [1, 2, 3]
        made = plain_client.post("/v1/repositories", json={"github_repo_id": 900, "owner": "o", "name": "new"},
                                 headers=plain_auth)
        assert made.status_code == 201 and made.json["id"] == 4
        back = tmp_path / "back.jsonl.gz"
        assert plain.test_cli_runner().invoke(
            args=["tenants", "export", "roundtrip_co", "--output", str(back)]).exit_code == 0
        with plain.app_context():
            db.engine.dispose()

    imported = app.test_cli_runner().invoke(args=["tenants", "import", str(back), "--slug", "returned_co", "--json"])
    assert imported.exit_code == 0, imported.stderr
    returned = {"Authorization": f"Bearer {json.loads(imported.stdout)['api_key']['token']}"}
    assert [r["id"] for r in client.get("/v1/repositories", headers=returned).json["items"]] == [1, 2, 3, 4]
    again = client.post("/v1/repositories", json={"github_repo_id": 901, "owner": "o", "name": "again"},
                        headers=returned)
    assert again.status_code == 201 and again.json["id"] == 5  # the sequence moved past the import, on the coordinator
    assert node_of(engine, "returned_co") in workers(engine)


@contextlib.contextmanager
def _given(url: str):
    yield url
