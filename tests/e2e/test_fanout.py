"""``flask tenants migrate|status|check`` against real schemas, real workers, a real ledger.

Each test writes its own tenant migrations into a copy of the tenant stream, provisions
tenants at the current head with the suite's app, then migrates them with an app
pointed at the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text

from app.extensions import db
from app.tenancy import fanout
from app.tenancy.migrations import default_location, head_revision

BASE = head_revision()  # the shipped head: where make_tenant leaves every schema

ADD_ARCHIVED_AT = """
    op.add_column("repositories", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    {between}
    op.create_index("ix_repositories_archived_at", "repositories", ["archived_at"])
"""
DROP_ARCHIVED_AT = """
    op.drop_index("ix_repositories_archived_at", table_name="repositories")
    op.drop_column("repositories", "archived_at")
"""


class Stream:
    """A copy of the tenant stream that a test adds revisions to."""

    def __init__(self, root: Path) -> None:
        self.location = root / "tenant_migrations"
        shutil.copytree(default_location(), self.location, ignore=shutil.ignore_patterns("__pycache__"))
        self.head = BASE

    def add(self, revision: str, upgrade: str, downgrade: str = "pass", header: str = "") -> str:
        def block(code: str) -> str:
            return textwrap.indent(textwrap.dedent(code).strip() or "pass", "    ")

        body = "\n".join([
            "import sqlalchemy as sa",
            "from alembic import op",
            "",
            "from app.tenancy.migrations import outside_transaction  # noqa: F401",
            "",
            f"revision = {revision!r}",
            f"down_revision = {self.head!r}",
            "branch_labels = depends_on = None",
            header,
            "",
            "def upgrade():",
            block(upgrade),
            "",
            "",
            "def downgrade():",
            block(downgrade),
            "",
        ])
        (self.location / "versions" / f"{revision}.py").write_text(body)
        self.head = revision
        return revision


@pytest.fixture
def stream(tmp_path: Path) -> Stream:
    return Stream(tmp_path)


@pytest.fixture
def fanout_app(make_app: Callable[..., Flask], stream: Stream) -> Callable[[], Flask]:
    """An app running the test's stream (create it after adding the revisions)."""
    return lambda: make_app(TENANT_MIGRATIONS_LOCATION=str(stream.location))


def migrate(app: Flask, *args: str) -> tuple[int, dict[str, Any], str]:
    result = app.test_cli_runner().invoke(args=["tenants", "migrate", "--json", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, (json.loads(lines[-1]) if lines else {}), result.stderr


def revisions(engine: Engine, slugs: list[str]) -> dict[str, tuple[str | None, str | None, bool]]:
    """slug -> (alembic_version, tenants.schema_revision, has archived_at column)."""
    out = {}
    with engine.connect() as conn:
        for slug in slugs:
            version = conn.exec_driver_sql(f'SELECT version_num FROM "t_{slug}".alembic_version').scalar()
            recorded = conn.execute(
                text("SELECT schema_revision FROM public.tenants WHERE slug = :s"), {"s": slug}
            ).scalar()
            column = conn.execute(text(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = :s"
                " AND table_name = 'repositories' AND column_name = 'archived_at'"
            ), {"s": f"t_{slug}"}).scalar()
            out[slug] = (version, recorded, bool(column))
    return out


def outcomes(engine: Engine, run_id: int) -> dict[str, tuple[str, int, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT tenant_slug, status, attempts, error FROM public.migration_outcomes WHERE run_id = :r"
        ), {"r": run_id}).all()
    return {slug: (status, attempts, error) for slug, status, attempts, error in rows}


def add_repository(engine: Engine, slug: str, name: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'INSERT INTO "t_{slug}".repositories (github_repo_id, owner, name, full_name)'
            " VALUES ((random() * 1e9)::bigint, 'octo', %(n)s, %(full)s)", {"n": name, "full": f"octo/{name}"}
        )


# --- the happy path ---------------------------------------------------------


def test_dozens_of_schemas_with_several_jobs_reach_head_and_the_ledger_says_so(
    make_tenant, engine, stream, fanout_app
):
    slugs = sorted(make_tenant().slug for _ in range(24))
    with engine.begin() as conn:  # suspended tenants are migrated too
        conn.execute(text("UPDATE public.tenants SET status = 'suspended' WHERE slug = :s"), {"s": slugs[0]})
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    app = fanout_app()

    code, report, _ = migrate(app, "--jobs", "3")

    assert code == 0, (report, _)
    assert (report["status"], report["migrated"], report["failed"]) == ("succeeded", 24, 0)
    assert revisions(engine, slugs) == {slug: ("x0002", "x0002", True) for slug in slugs}
    assert outcomes(engine, report["run_id"]) == {slug: ("migrated", 1, None) for slug in slugs}
    with engine.connect() as conn:
        run = conn.execute(text(
            "SELECT status, target_revision, migrated, failed, finished_at IS NOT NULL"
            " FROM public.migration_runs WHERE id = :r"), {"r": report["run_id"]}).one()
    assert tuple(run) == ("succeeded", "x0002", 24, 0, True)

    status = app.test_cli_runner().invoke(args=["tenants", "status", "--json"])
    assert json.loads(status.stdout) | {"tenants": None} == {
        "head": "x0002", "tenants": None, "counts": {"x0002": 24}, "behind": 0
    }
    check = app.test_cli_runner().invoke(args=["tenants", "check"])
    assert check.exit_code == 0, check.stdout

    again_code, again, _ = migrate(app)  # a re-run finds nothing to do
    assert (again_code, again["migrated"], again["current"], again["total"]) == (0, 0, 24, 0)


def test_downgrade_with_to_and_the_ledger_keeps_both_runs(make_tenant, engine, stream, fanout_app):
    slugs = [make_tenant().slug for _ in range(3)]
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    app = fanout_app()
    up_code, up, _ = migrate(app)
    down_code, down, _ = migrate(app, "--to", BASE)
    assert (up_code, down_code) == (0, 0)
    assert revisions(engine, slugs) == {slug: (BASE, BASE, False) for slug in slugs}
    with engine.connect() as conn:
        moves = conn.execute(text(
            "SELECT DISTINCT run_id, from_revision, to_revision FROM public.migration_outcomes"
            " WHERE run_id IN (:a, :b) ORDER BY run_id"), {"a": up["run_id"], "b": down["run_id"]}).all()
    assert [tuple(m) for m in moves] == [(up["run_id"], BASE, "x0002"), (down["run_id"], "x0002", BASE)]


# --- failures stay in their schema ------------------------------------------


def test_data_dependent_failures_roll_back_only_their_schemas_and_a_rerun_takes_only_them(
    make_tenant, engine, stream, fanout_app
):
    slugs = sorted(make_tenant().slug for _ in range(8))
    bad = set(slugs[2:4])
    for slug in slugs:
        add_repository(engine, slug, "Shouting" if slug in bad else "quiet")
    stream.add("x0002", """
        op.add_column("repositories", sa.Column("slug_name", sa.String(100)))
        op.create_check_constraint("name_lower", "repositories", "name = lower(name)")
    """, """
        op.drop_constraint("ck_repositories_name_lower", "repositories")
        op.drop_column("repositories", "slug_name")
    """)
    app = fanout_app()

    code, report, _ = migrate(app, "--jobs", "2")

    assert code == 1 and report["status"] == "failed"
    assert {f["slug"] for f in report["failures"]} == bad
    assert all("ck_repositories_name_lower" in f["error"] for f in report["failures"])
    with engine.connect() as conn:
        half_done = conn.execute(text(
            "SELECT table_schema FROM information_schema.columns WHERE column_name = 'slug_name'"
        )).scalars().all()
    assert sorted(half_done) == sorted(f"t_{s}" for s in slugs if s not in bad)  # failed ones: nothing
    recorded = outcomes(engine, report["run_id"])
    assert {s for s, (status, _, _) in recorded.items() if status == "failed"} == bad
    assert {s for s, (status, _, _) in recorded.items() if status == "migrated"} == set(slugs) - bad

    for slug in bad:  # fix their data, run again: only they are migrated
        with engine.begin() as conn:
            conn.exec_driver_sql(f'UPDATE "t_{slug}".repositories SET name = lower(name)')
    code, rerun, _ = migrate(app, "--jobs", "2")
    assert code == 0 and rerun["migrated"] == 2
    assert set(outcomes(engine, rerun["run_id"])) == bad


def test_fail_fast_stops_scheduling_after_the_first_failure(make_tenant, engine, stream, fanout_app):
    slugs = sorted(make_tenant().slug for _ in range(6))
    add_repository(engine, slugs[0], "Shouting")
    stream.add("x0002", 'op.create_check_constraint("lower", "repositories", "name = lower(name)")')
    code, report, _ = migrate(fanout_app(), "--jobs", "1", "--fail-fast")
    assert code == 1
    assert (report["failed"], report["migrated"], report["skipped"]) == (1, 0, 5)
    assert revisions(engine, slugs[1:]) == {s: (BASE, BASE, False) for s in slugs[1:]}


def test_a_locked_table_times_out_is_retried_and_reported_without_holding_up_the_others(
    make_tenant, engine, stream, fanout_app
):
    slugs = sorted(make_tenant().slug for _ in range(4))
    blocked = slugs[1]
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    app = fanout_app()
    with engine.connect() as holder:
        holder.exec_driver_sql(f'LOCK TABLE "t_{blocked}".repositories IN ACCESS SHARE MODE')
        code, report, log = migrate(app, "--jobs", "2", "--lock-timeout", "0.2", "--retries", "2")
        holder.rollback()

    assert code == 1
    [failure] = report["failures"]
    assert failure["slug"] == blocked and failure["attempts"] == 3
    assert "lock timeout" in failure["error"]
    assert log.count(f"retrying {blocked}") == 2
    recorded = outcomes(engine, report["run_id"])
    assert recorded[blocked][:2] == ("failed", 3)
    others = {s: o for s, o in recorded.items() if s != blocked}
    assert others == {s: ("migrated", 1, None) for s in slugs if s != blocked}


def test_a_lock_released_between_attempts_lets_the_retry_succeed(make_tenant, engine, stream, fanout_app):
    slug = make_tenant().slug
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    app = fanout_app()
    holder = engine.connect()
    holder.exec_driver_sql(f'LOCK TABLE "t_{slug}".repositories IN ACCESS SHARE MODE')

    def blocked_workers() -> int:
        with engine.connect() as conn:  # a new transaction each time: pg_stat_activity is a snapshot
            return conn.exec_driver_sql(
                # A worker names its connection after the schema it migrates ('...:<slug>').
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tenantry-fanout-worker:' || %(slug)s"
                " AND wait_event_type = 'Lock'", {"slug": slug}).scalar()

    def release_after_the_first_attempt_gave_up() -> None:
        try:
            _wait_for(lambda: blocked_workers() == 1, timeout=60)  # the first attempt waits ...
            _wait_for(lambda: blocked_workers() == 0, timeout=60)  # ... and gives up (lock_timeout)
        finally:
            holder.rollback()

    release = threading.Thread(target=release_after_the_first_attempt_gave_up)
    release.start()
    try:
        code, report, _ = migrate(app, "--lock-timeout", "0.2", "--retries", "8")
    finally:
        release.join()
        holder.close()
    assert code == 0
    status, attempts, _ = outcomes(engine, report["run_id"])[slug]
    assert status == "migrated" and attempts >= 2


def test_statement_timeout_fails_a_slow_schema_without_retrying_it(make_tenant, engine, stream, fanout_app):
    slow, quick = sorted(make_tenant().slug for _ in range(2))
    stream.add("x0002", f"""
        op.add_column("repositories", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
        op.execute("SELECT pg_sleep(CASE WHEN current_schema() = 't_{slow}' THEN 5 ELSE 0 END)")
    """, 'op.drop_column("repositories", "archived_at")')
    code, report, _ = migrate(fanout_app(), "--statement-timeout", "0.3", "--retries", "3")
    assert code == 1
    [failure] = report["failures"]
    assert failure["slug"] == slow and failure["attempts"] == 1  # a timeout is not a lock: no retry
    assert "statement timeout" in failure["error"]
    assert revisions(engine, [slow, quick]) == {slow: (BASE, BASE, False), quick: ("x0002", "x0002", True)}


# --- concurrency, crashes ---------------------------------------------------


def _run_in_thread(app: Flask, options: fanout.FanoutOptions) -> tuple[threading.Thread, list[Any]]:
    with app.app_context():
        url = db.engine.url.render_as_string(hide_password=False)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fanout.run(url, options)))
    thread.start()
    return thread, result


def _wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _last_run(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM public.migration_runs").scalar()


def _running_run(engine: Engine, after: int = 0) -> int | None:
    """The newest run still marked running, newer than ``after`` (a killed run stays marked
    running until the next run marks it aborted: it must not be mistaken for this one)."""
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT id FROM public.migration_runs WHERE status = 'running' AND id > %(after)s"
            " ORDER BY id DESC LIMIT 1", {"after": after}
        ).scalar()


def test_a_second_fanout_is_refused_with_exit_2_naming_the_run(make_tenant, engine, stream, fanout_app):
    slug = make_tenant().slug
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    app = fanout_app()
    holder = engine.connect()
    holder.exec_driver_sql(f'LOCK TABLE "t_{slug}".repositories IN ACCESS SHARE MODE')
    before = _last_run(engine)
    thread, result = _run_in_thread(app, fanout.FanoutOptions(
        lock_timeout=30, location=str(stream.location), jobs=1))
    try:
        first = _wait_for(lambda: _running_run(engine, before))
        second = app.test_cli_runner().invoke(args=["tenants", "migrate"])
        assert second.exit_code == 2
        assert f"run {first} started by" in second.stderr
    finally:
        holder.rollback()
        holder.close()
        thread.join(60)
    assert result[0].status == "succeeded" and result[0].run_id == first


def test_a_tenant_provisioned_during_the_run_ends_at_head(make_tenant, engine, stream, fanout_app):
    slugs = [make_tenant().slug for _ in range(3)]
    stream.add("x0002", ADD_ARCHIVED_AT.format(between="op.execute('SELECT pg_sleep(0.3)')"), DROP_ARCHIVED_AT)
    app = fanout_app()
    before = _last_run(engine)
    thread, result = _run_in_thread(app, fanout.FanoutOptions(location=str(stream.location), jobs=1))
    try:
        _wait_for(lambda: _running_run(engine, before))
        late = make_tenant().slug  # provisioned by the old code, at the old head, mid-run
    finally:
        thread.join(60)
    report = result[0]
    assert report.status == "succeeded" and report.counts.migrated == 4
    assert revisions(engine, [*slugs, late])[late] == ("x0002", "x0002", True)


def test_kill_9_of_the_whole_run_leaves_every_schema_whole_and_the_next_run_converges(
    tenantry_database_url, make_tenant, engine, stream, fanout_app
):
    slugs = sorted(make_tenant().slug for _ in range(16))
    stream.add("x0002", ADD_ARCHIVED_AT.format(between="op.execute('SELECT pg_sleep(0.1)')"), DROP_ARCHIVED_AT)
    with engine.connect() as conn:
        runs_before = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM public.migration_runs").scalar()
    env = {
        **os.environ, "DATABASE_URL": tenantry_database_url,
        "TENANT_MIGRATIONS_LOCATION": str(stream.location), "ADMIN_TOKEN": "x" * 32,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "tenants", "migrate", "--jobs", "2"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with engine.connect() as conn:
            _wait_for(lambda: conn.exec_driver_sql(
                "SELECT count(*) >= 3 FROM public.migration_outcomes o JOIN public.migration_runs r"
                " ON r.id = o.run_id WHERE r.status = 'running'").scalar(), timeout=60)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the coordinator and its worker threads, mid-transaction
        process.wait()
    # A killed worker's backend may still be running the statements it was sent (COMMIT
    # included): wait for it, as an operator would before reading the state.
    def fanout_backends() -> int:
        with engine.connect() as conn:  # a new transaction each time: pg_stat_activity is a snapshot
            return conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'tenantry-fanout%%'").scalar()

    _wait_for(lambda: fanout_backends() == 0)

    state = revisions(engine, slugs)
    for slug, (version, recorded, column) in state.items():
        assert (version, recorded, column) in {(BASE, BASE, False), ("x0002", "x0002", True)}, slug
    assert any(s[0] == "x0002" for s in state.values()) and any(s[0] == BASE for s in state.values())

    app = fanout_app()
    code, report, _ = migrate(app, "--jobs", "2")
    assert code == 0
    assert report["migrated"] == sum(s[0] == BASE for s in state.values())
    assert revisions(engine, slugs) == {s: ("x0002", "x0002", True) for s in slugs}
    with engine.connect() as conn:
        aborted = conn.exec_driver_sql(
            "SELECT migrated, failed FROM public.migration_runs WHERE status = 'aborted'"
            " AND id > %(before)s AND id < %(r)s",
            {"before": runs_before, "r": report["run_id"]}).all()
    # The killed run, aborted, with its counts from what it committed, not from its last flush.
    assert aborted == [(sum(s[0] == "x0002" for s in state.values()), 0)]


# --- previews, canaries, usage ----------------------------------------------


def _snapshot(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return (
            conn.exec_driver_sql("SELECT count(*) FROM public.migration_runs").scalar(),
            conn.exec_driver_sql("SELECT slug, schema_revision FROM public.tenants ORDER BY slug").all(),
            conn.exec_driver_sql(
                "SELECT table_schema, column_name FROM information_schema.columns"
                " WHERE table_schema LIKE 't\\_%%' ORDER BY 1, 2").all(),
        )


def test_the_flask_cli_runs_the_fanout_without_loading_the_http_layer(
    tenantry_database_url, make_tenant, engine, stream
):
    """`flask tenants …` is a plugin command: the fan-out builds its app with create_app(http=False),
    from the same environment, and migrates for real."""
    slugs = sorted(make_tenant().slug for _ in range(3))
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    probe = (
        "import json, sys\n"
        "from flask.cli import main\n"
        "sys.argv = ['flask', '--app', 'app', 'tenants', 'migrate', '--json']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "http = sorted(m for m in ('flask_smorest', 'marshmallow', 'app.api') if m in sys.modules)\n"
        "print(json.dumps({'exit': code, 'http': http}))\n"
    )
    env = {**os.environ, "DATABASE_URL": tenantry_database_url, "TENANT_MIGRATIONS_LOCATION": str(stream.location)}
    env.pop("FLASK_APP", None)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    report, probed = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert probed == {"exit": 0, "http": []}, done.stderr[-2000:]
    assert report["status"] == "succeeded" and report["migrated"] == 3
    assert {s: v[:2] for s, v in revisions(engine, slugs).items()} == {s: ("x0002", "x0002") for s in slugs}


def test_dry_run_prints_the_plan_and_changes_nothing(make_tenant, engine, stream, fanout_app):
    slugs = [make_tenant().slug for _ in range(3)]
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    before = _snapshot(engine)
    result = fanout_app().test_cli_runner().invoke(args=["tenants", "migrate", "--dry-run"])
    assert result.exit_code == 0
    for slug in slugs:
        assert f"{BASE} -> x0002" in next(line for line in result.stdout.splitlines() if slug in line)
    assert "3 to migrate" in result.stdout
    assert _snapshot(engine) == before


def test_sql_prints_each_schemas_ddl_and_changes_nothing(make_tenant, engine, stream, fanout_app):
    slugs = [make_tenant().slug for _ in range(2)]
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    before = _snapshot(engine)
    result = fanout_app().test_cli_runner().invoke(args=["tenants", "migrate", "--sql"])
    assert result.exit_code == 0
    for slug in slugs:
        section = result.stdout.split(f"-- tenant {slug} ")[1].split("-- tenant ")[0]
        assert f'SET LOCAL search_path TO "t_{slug}"' in section
        assert "ALTER TABLE repositories ADD COLUMN archived_at TIMESTAMP WITH TIME ZONE" in section
        assert "CREATE INDEX ix_repositories_archived_at ON repositories (archived_at)" in section
        assert f"UPDATE t_{slug}.alembic_version SET version_num='x0002'" in section
    assert _snapshot(engine) == before


def test_sql_with_nothing_to_migrate_says_so_on_stderr(make_tenant, fanout_app):
    make_tenant()
    result = fanout_app().test_cli_runner().invoke(args=["tenants", "migrate", "--sql"])
    assert result.exit_code == 0
    assert result.stdout == ""  # what a pipe into psql gets: nothing to run
    assert "nothing to migrate: 1 tenant(s) already at" in result.stderr


def test_canary_migrates_the_first_n_and_a_later_run_continues(make_tenant, engine, stream, fanout_app):
    slugs = sorted(make_tenant().slug for _ in range(5))
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    app = fanout_app()
    code, canary, _ = migrate(app, "--canary", "2")
    assert code == 0 and (canary["migrated"], canary["remaining"]) == (2, 3)
    assert set(outcomes(engine, canary["run_id"])) == set(slugs[:2])
    code, batch, _ = migrate(app, "--batch", "2")
    assert set(outcomes(engine, batch["run_id"])) == set(slugs[2:4])
    code, rest, _ = migrate(app)
    assert (code, rest["migrated"], rest["remaining"]) == (0, 1, 0)


def test_only_the_named_tenants_are_migrated(make_tenant, engine, stream, fanout_app):
    slugs = sorted(make_tenant().slug for _ in range(3))
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    code, report, _ = migrate(fanout_app(), "--tenant", slugs[0], "--tenant", slugs[2])
    assert code == 0 and set(outcomes(engine, report["run_id"])) == {slugs[0], slugs[2]}
    assert revisions(engine, [slugs[1]])[slugs[1]] == (BASE, BASE, False)


@pytest.mark.parametrize("args, message", [
    (["--to", "nope"], "unknown tenant schema revision 'nope'"),
    (["--tenant", "ghost"], "no tenant with slug 'ghost'"),
    (["--tenant", "ghost", "--all"], "exclude each other"),
    (["--jobs", "0"], "0 is not in the range"),
])
def test_bad_usage_exits_2(app, args, message):
    result = app.test_cli_runner().invoke(args=["tenants", "migrate", *args])
    assert result.exit_code == 2 and message in result.stderr + result.stdout


# --- revisions that cannot run in a transaction ------------------------------


def test_a_revision_outside_transactions_builds_its_index_concurrently(make_tenant, engine, stream, fanout_app):
    slugs = [make_tenant().slug for _ in range(3)]
    stream.add("x0002", """
        op.create_index("ix_repositories_full_name", "repositories", ["full_name"],
                        postgresql_concurrently=outside_transaction(), if_not_exists=True)
    """, 'op.drop_index("ix_repositories_full_name", table_name="repositories")',
        header="run_in_transaction = False")
    app = fanout_app()
    code, report, _ = migrate(app, "--jobs", "2")
    assert code == 0 and report["migrated"] == 3, report
    with engine.connect() as conn:
        valid = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " WHERE i.relname = 'ix_repositories_full_name' AND x.indisvalid").scalar()
    assert valid == 3
    assert revisions(engine, slugs) == {s: ("x0002", "x0002", False) for s in slugs}
    # Provisioning applies the same revision inside its one transaction (no CONCURRENTLY there).
    with app.app_context():
        from app.testing import provision
        fresh = provision(app, "fresh_after_concurrently")
    assert revisions(engine, [fresh.slug])[fresh.slug][0] == "x0002"


def test_a_failed_concurrent_build_is_reported_not_recorded(make_tenant, engine, stream, fanout_app):
    """CREATE INDEX CONCURRENTLY that times out leaves an INVALID index; IF NOT EXISTS would
    skip it on the retry, so the worker refuses to record the revision over it."""
    slug = make_tenant().slug
    stream.add("x0002", """
        op.create_index("ix_repositories_full_name", "repositories", ["full_name"],
                        postgresql_concurrently=outside_transaction(), if_not_exists=True)
    """, 'op.drop_index("ix_repositories_full_name", table_name="repositories")',
        header="run_in_transaction = False")
    app = fanout_app()
    with engine.connect() as holder:  # an open writer: the concurrent build waits for it
        holder.exec_driver_sql(
            f'INSERT INTO "t_{slug}".repositories (github_repo_id, owner, name, full_name)'
            " VALUES (1, 'octo', 'hello', 'octo/hello')")
        code, report, _ = migrate(app, "--lock-timeout", "0.3", "--retries", "1")
        holder.rollback()
    assert code == 1
    [failure] = report["failures"]
    assert "INVALID index(es) ix_repositories_full_name" in failure["error"]
    assert revisions(engine, [slug])[slug][:2] == (BASE, BASE)

    with engine.connect() as conn:  # the runbook: drop the invalid index, run again
        conn.execution_options(isolation_level="AUTOCOMMIT")
        # IF EXISTS: on Citus the failed build left the index on the coordinator only (none
        # on the worker), and Citus forwards the drop to the worker with IF EXISTS or not.
        conn.exec_driver_sql(f'DROP INDEX CONCURRENTLY IF EXISTS "t_{slug}".ix_repositories_full_name')
    code, report, _ = migrate(app)
    assert code == 0 and report["migrated"] == 1


# --- rendered once, or run online ---------------------------------------------


@pytest.mark.parametrize("header", ["render_as_sql = False", ""], ids=["declared-online", "fails-offline"])
def test_a_revision_that_reads_data_runs_online_per_schema(make_tenant, engine, stream, fanout_app, header):
    """Most paths are rendered to SQL once and sent to every schema; a revision that looks
    at the data (op.get_bind()) cannot be, and is run through Alembic in each schema."""
    empty, full = sorted(make_tenant().slug for _ in range(2))
    add_repository(engine, full, "quiet")
    stream.add("x0002", """
        op.add_column("repositories", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
        if op.get_bind().exec_driver_sql("SELECT count(*) FROM repositories").scalar():
            op.execute("UPDATE repositories SET archived_at = '2026-01-01'")
    """, 'op.drop_column("repositories", "archived_at")', header=header)
    code, report, _ = migrate(fanout_app())
    assert code == 0 and report["migrated"] == 2, report
    with engine.connect() as conn:
        archived = {
            slug: conn.exec_driver_sql(f'SELECT count(archived_at) FROM "t_{slug}".repositories').scalar()
            for slug in (empty, full)
        }
    assert archived == {empty: 0, full: 1}


def test_a_schema_whose_ledger_disagrees_is_migrated_from_where_it_really_is(
    make_tenant, engine, stream, fanout_app
):
    """Workers apply SQL rendered for the revision the ledger records; a schema that is
    elsewhere (an older revision, a ledger written by hand) is moved by Alembic from its
    own alembic_version instead, and the ledger is put right."""
    honest, behind = sorted(make_tenant().slug for _ in range(2))
    stream.add("x0002", ADD_ARCHIVED_AT.format(between=""), DROP_ARCHIVED_AT)
    stream.add("x0003", 'op.add_column("repositories", sa.Column("note", sa.Text(), nullable=True))',
               'op.drop_column("repositories", "note")')
    app = fanout_app()
    code, _, _ = migrate(app, "--to", "x0002", "--tenant", behind)
    assert code == 0
    with engine.begin() as conn:  # the ledger claims it never moved
        conn.execute(text("UPDATE public.tenants SET schema_revision = :r WHERE slug = :s"), {"r": BASE, "s": behind})

    code, report, _ = migrate(app)
    assert code == 0 and report["migrated"] == 2, report
    assert {s: v[:2] for s, v in revisions(engine, [honest, behind]).items()} == {
        honest: ("x0003", "x0003"), behind: ("x0003", "x0003")}
    assert outcomes(engine, report["run_id"]) == {
        honest: ("migrated", 1, None), behind: ("migrated", 1, None)}
    with engine.connect() as conn:
        froms = dict(conn.execute(text(
            "SELECT tenant_slug, from_revision FROM public.migration_outcomes WHERE run_id = :r"
        ), {"r": report["run_id"]}).all())
    assert froms == {honest: BASE, behind: "x0002"}


# --- drift ------------------------------------------------------------------


def test_check_reports_a_column_dropped_by_hand_and_a_ledger_that_lies(app, make_tenant, engine):
    healthy, dropped, lying = sorted(make_tenant().slug for _ in range(3))
    with engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE "t_{dropped}".repositories DROP COLUMN full_name')
        conn.execute(text("UPDATE public.tenants SET schema_revision = 'bogus' WHERE slug = :s"), {"s": lying})
    result = app.test_cli_runner().invoke(args=["tenants", "check", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    problems = {d["slug"]: d["problems"] for d in report["drifted"]}
    assert set(problems) == {dropped, lying} and report["checked"] == 3
    assert any("column repositories.full_name missing" in p for p in problems[dropped])
    assert any("records revision bogus" in p for p in problems[lying])
