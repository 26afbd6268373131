"""flask tenants … and flask db … through Flask's CLI runner, asserting on JSON output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app import public_migrations
from app.tenancy.migrations import default_location


def test_tenants_create_then_list(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tenants", "create", "cli_co", "--name", "CLI Co", "--plan", "pro", "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["tenant"]["schema_name"] == "t_cli_co" and created["tenant"]["plan"] == "pro"
    token = created["api_key"]["token"]
    # The key works against the API at once.
    assert client.get("/v1/repositories", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    listed = json.loads(runner.invoke(args=["tenants", "list", "--json"]).output)
    assert [t["slug"] for t in listed] == ["cli_co"]
    human = runner.invoke(args=["tenants", "list"]).output
    assert "cli_co" in human and "pro" in human


def test_tenants_create_reports_domain_errors_in_one_line_with_status_1(app):
    runner = app.test_cli_runner()
    bad = runner.invoke(args=["tenants", "create", "Bad Slug", "--name", "x"])
    assert bad.exit_code == 1 and bad.output.startswith("error: invalid tenant slug")
    runner.invoke(args=["tenants", "create", "twice", "--name", "x"])
    again = runner.invoke(args=["tenants", "create", "twice", "--name", "x"])
    assert again.exit_code == 1 and "already exists" in again.output


def test_usage_errors_exit_2(app):
    result = app.test_cli_runner().invoke(args=["tenants", "create", "x"])  # --name missing
    assert result.exit_code == 2


def test_db_current_and_check(app):
    runner = app.test_cli_runner()
    current = runner.invoke(args=["db", "current"])
    head = public_migrations.head_revision()
    assert head is not None and head != "0001"
    assert current.exit_code == 0 and f"current: {head}  head: {head}" in current.output
    check = runner.invoke(args=["db", "check"])
    assert check.exit_code == 0, check.output


def test_tenant_autogenerate_compares_a_scratch_schema_and_leaves_nothing(tmp_path: Path, make_app, engine):
    location = tmp_path / "tenant_migrations"
    shutil.copytree(default_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    app = make_app(TENANT_MIGRATIONS_LOCATION=str(location))
    result = app.test_cli_runner().invoke(args=["tenants", "revision", "-m", "nothing new", "--autogenerate"])
    assert result.exit_code == 0, result.output
    [generated] = [p for p in (location / "versions").glob("*.py") if "nothing_new" in p.name]
    body = generated.read_text()
    # The models match head, so the diff is empty; and public was never compared.
    assert "op.create_table" not in body and "op.drop_table" not in body
    with engine.connect() as conn:
        leftovers = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_autogen%%'").scalar()
    assert leftovers == 0


def test_a_command_prints_its_output_without_log_lines_unless_log_level_asks(tenantry_database_url, tmp_path):
    """`flask tenants list` (the app built by the command) and `flask db upgrade` (Alembic's
    steps): only what the command prints; LOG_LEVEL=INFO brings the log lines back."""
    import os
    import subprocess
    import sys

    from app.config import SETTINGS

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    env.update(DATABASE_URL=tenantry_database_url, FLASK_APP=str(root / "wsgi.py"), INSTANCE_PATH=str(tmp_path))

    def flask(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flask", *args], env={**env, **extra}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    for args in (("tenants", "list"), ("db", "upgrade")):
        quiet = flask(*args)
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stderr == "", quiet.stderr
    loud = flask("db", "upgrade", LOG_LEVEL="INFO")
    assert loud.returncode == 0 and " INFO " in loud.stderr, loud.stderr


#: Commands that read the public schema first, one per command group.
PUBLIC_READERS = (
    ["tenants", "list"],
    ["tenants", "status"],
    ["tenants", "migrate"],
    ["tenants", "keys", "list", "acme"],
    ["billing", "events"],
    ["usage", "close-period", "2026-11"],
    ["github", "deliveries", "list"],
)


def test_commands_on_an_unmigrated_database_say_to_run_flask_db_upgrade(make_app, tenantry_database_url):
    """Before `flask db upgrade` a command finds no public tables: one line naming the
    command, exit 1, no traceback (the API answers the same with a 503)."""
    from app.extensions import db
    from app.testing import fresh_database

    with fresh_database(tenantry_database_url) as url:
        app = make_app(url)
        runner = app.test_cli_runner()
        for args in PUBLIC_READERS:
            result = runner.invoke(args=args)
            # CliRunner catches an unexpected exception too, with exit code 1: SystemExit
            # says the command itself exited.
            assert isinstance(result.exception, SystemExit) and result.exit_code == 1, (args, result.output)
            [line] = result.output.splitlines()
            assert line.startswith("error: The database is not migrated (relation \"public."), (args, line)
            assert line.endswith("run `flask db upgrade`."), (args, line)
        with app.app_context():  # before the database is dropped (on Citus, workers too)
            db.engine.dispose()


def test_commands_whose_database_connection_fails_say_why_in_one_line(make_app):
    """Nothing listens at DATABASE_URL's port: libpq's reason in one line, exit 1, no
    traceback and no password."""
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    app = make_app(f"postgresql://tenantry:s3cret-pw@127.0.0.1:{port}/tenantry")
    runner = app.test_cli_runner()
    for args in (["tenants", "list"], ["db", "current"], ["github", "deliveries", "list"]):
        result = runner.invoke(args=args)
        assert isinstance(result.exception, SystemExit) and result.exit_code == 1, (args, result.output)
        [line] = result.output.splitlines()
        assert line.startswith("error: The database connection failed (") and f"port {port} failed" in line, line
        assert "s3cret-pw" not in line
