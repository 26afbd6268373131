"""``flask tenants export|import``: a tenant through a file into a new tenant, exactly; or nothing at all."""

from __future__ import annotations

import gzip
import io
import json
import shutil
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
from sqlalchemy import Engine, event, text

from app.models.tenant import TenantBase
from app.tenancy import portability
from app.tenancy.migrations import default_location, head_revision
from app.tenancy.provisioning import provision_tenant

HEAD = head_revision()
BIGINT_MAX = 2**63 - 1


# --- helpers -------------------------------------------------------------------------


def cli(app: Flask, *args: str, input: bytes | None = None) -> Any:
    result = app.test_cli_runner().invoke(args=list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def add_repository(client, token: str, github_repo_id: int, name: str, **extra) -> dict:
    body = {"github_repo_id": github_repo_id, "owner": "octo", "name": name, **extra}
    response = client.post("/v1/repositories", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.json
    return response.json


def listing(client, token: str) -> dict:
    response = client.get("/v1/repositories?limit=200", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.json
    return response.json


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(gzip.compress("".join(
        (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()))
    return path


def table_rows(engine: Engine, schema: str, table: str) -> list[str]:
    """Every row of a table as PostgreSQL's text of the whole row (jsonb text keeps 1.00 apart from 1.0)."""
    with engine.connect() as conn:
        return conn.exec_driver_sql(f'SELECT t::text FROM "{schema}"."{table}" AS t ORDER BY id').scalars().all()


@pytest.fixture
def leftovers(engine: Engine) -> Callable[[str], dict[str, Any]]:
    """``leftovers(slug)``: everything an import of ``slug`` could have left behind during this test.

    Platform audit events outlive their tenants (and earlier tests), so only this test's count.
    """
    with engine.connect() as conn:
        baseline = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM public.audit_events").scalar()

    def find(slug: str) -> dict[str, Any]:
        with engine.connect() as conn:
            q = lambda sql: conn.execute(text(sql), {"s": slug, "b": baseline}).all()  # noqa: E731
            return {
                "tenant": q("SELECT id FROM public.tenants WHERE slug = :s"),
                "schema": q("SELECT nspname FROM pg_namespace WHERE nspname = 't_' || :s"),
                "keys": q("SELECT k.id FROM public.api_keys k JOIN public.tenants t ON t.id = k.tenant_id"
                          " WHERE t.slug = :s"),
                "events": q("SELECT action FROM public.audit_events WHERE tenant_slug = :s AND id > :b"),
            }

    return find


NOTHING = {"tenant": [], "schema": [], "keys": [], "events": []}


def platform_events(engine: Engine, slug: str) -> list[tuple[str, str, dict]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT action, actor, changes FROM public.audit_events WHERE tenant_slug = :s ORDER BY id"
        ), {"s": slug})]


@pytest.fixture
def source(app, client, tmp_path) -> Callable[..., tuple[str, str, Path]]:
    """``source(slug)``: a tenant made with the CLI, three repositories through HTTP, exported to a file."""

    def make(slug: str = "source_co", repositories: int = 3) -> tuple[str, str, Path]:
        created = cli(app, "tenants", "create", slug, "--name", "Source Co", "--plan", "pro", "--json")
        assert created.exit_code == 0, created.output
        token = json.loads(created.stdout)["api_key"]["token"]
        for i in range(repositories):
            add_repository(client, token, 1000 + i, f"repo-{i}")
        path = tmp_path / f"{slug}.jsonl.gz"
        exported = cli(app, "tenants", "export", slug, "--output", str(path))
        assert exported.exit_code == 0, exported.output
        return slug, token, path

    return make


# --- the round trip -----------------------------------------------------------------


TRICKY_EVENTS = """
INSERT INTO "t_source_co".audit_events (id, occurred_at, action, resource, resource_id, api_key_id, changes)
OVERRIDING SYSTEM VALUE VALUES
 (100, '2001-02-03 04:05:06.789012+05:45', 'probe.json-null', 'probe', NULL, 9223372036854775807, 'null'),
 (101, 'infinity', 'probe.sql-null', 'probe', '', -9223372036854775808, NULL),
 (102, '1999-12-31 23:59:59.999999-08', 'probe.numbers', 'probe', 'é ✓ "quoted" \\ back\nslash', NULL,
  '{"exact": 0.1000000000000000000001, "big": 123456789012345678901234567890, "scale": 1.00,
    "neg": -0.0, "exp": 1e-7, "nested": [null, true, {"k": "\\u00e9\\n"}], "empty": {}}')
"""


def test_export_import_round_trip_keeps_ids_fields_timestamps_and_new_ids_do_not_collide(
    app, client, engine, tmp_path, monkeypatch
):
    created = json.loads(cli(app, "tenants", "create", "source_co", "--name", "Source Co", "--plan", "pro",
                             "--json").stdout)
    token = created["api_key"]["token"]
    for i in range(4):
        add_repository(client, token, 1000 + i, f"repo-{i}")
    add_repository(client, token, BIGINT_MAX, "huge-id", enabled=False)
    add_repository(client, token, 3000, "doomed")
    auth = {"Authorization": f"Bearer {token}"}
    time.sleep(0.01)
    assert client.patch("/v1/repositories/2", json={"name": "renamed"}, headers=auth).status_code == 200
    assert client.delete("/v1/repositories/6", headers=auth).status_code == 204  # the last id: 6 is spent
    with engine.begin() as conn:
        conn.exec_driver_sql(TRICKY_EVENTS)
    before = listing(client, token)
    assert [r["id"] for r in before["items"]] == [1, 2, 3, 4, 5]
    assert before["items"][4]["github_repo_id"] == BIGINT_MAX and before["items"][4]["enabled"] is False
    assert before["items"][1]["updated_at"] != before["items"][1]["created_at"]

    monkeypatch.chdir(tmp_path)  # the default output goes to the current directory
    exported = cli(app, "tenants", "export", "source_co", "--json")
    assert exported.exit_code == 0, exported.output
    summary = json.loads(exported.stdout)
    path = Path(summary["output"])
    assert path.parent == tmp_path and path.name.startswith(f"source_co-{HEAD}-") and path.suffixes[-2:] == [
        ".jsonl", ".gz"]
    # audit events: 6 created, 1 updated, 1 deleted, 3 by hand
    assert summary["rows"] == {"audit_events": 11, "invitations": 0, "members": 0, "repositories": 5}
    assert list(tmp_path.glob(".*partial")) == []

    imported = cli(app, "tenants", "import", str(path), "--slug", "copy_co", "--json")
    assert imported.exit_code == 0, imported.output
    result = json.loads(imported.stdout)
    assert result["rows"] == summary["rows"] and result["migrated_from"] is None
    assert result["tenant"]["name"] == "Source Co" and result["tenant"]["plan"] == "pro"
    assert result["tenant"]["schema_revision"] == HEAD
    assert result["source"] == {"slug": "source_co", "schema_revision": HEAD, "exported_at": summary["exported_at"]}
    copy_token = result["api_key"]["token"]
    assert copy_token != token and result["api_key"]["role"] == "admin"

    # Identical through the API: ids, fields, timestamps.
    assert listing(client, copy_token) == before
    # Identical in the database, table by table, to the microsecond and the jsonb digit.
    for table in TenantBase.metadata.sorted_tables:
        assert table_rows(engine, "t_copy_co", table.name) == table_rows(engine, "t_source_co", table.name)
    with engine.connect() as conn:
        nulls = conn.exec_driver_sql(
            "SELECT id, changes IS NULL, changes = 'null'::jsonb FROM t_copy_co.audit_events"
            " WHERE id IN (100, 101) ORDER BY id").all()
    assert nulls == [(100, False, True), (101, True, None)]

    # New rows get fresh ids: past the largest id and past the ids the source had spent.
    new = add_repository(client, copy_token, 2000, "after-import")
    assert new["id"] == 7
    with engine.connect() as conn:
        newest_event = conn.exec_driver_sql("SELECT max(id) FROM t_copy_co.audit_events").scalar()
        keys = conn.execute(text("SELECT count(*) FROM public.api_keys k JOIN public.tenants t"
                                 " ON t.id = k.tenant_id WHERE t.slug = 'copy_co'")).scalar()
    assert newest_event == 103 and keys == 1  # API keys are not exported: one new admin key
    # The source is untouched, and the old key does not open the copy.
    assert listing(client, token) == before

    [(action, actor, changes)] = [e for e in platform_events(engine, "source_co") if e[0] == "tenant.exported"]
    assert actor.startswith("cli:") and "@" in actor
    assert changes["after"]["rows"] == summary["rows"] and changes["after"]["schema_revision"] == HEAD
    copy_events = platform_events(engine, "copy_co")
    assert [e[0] for e in copy_events] == ["tenant.provisioned", "tenant.imported"]
    assert all(e[1] == actor for e in copy_events)
    assert copy_events[1][2]["after"]["source_slug"] == "source_co"
    assert copy_events[1][2]["after"]["rows"] == summary["rows"]


def test_the_file_is_documented_json_lines_and_can_go_through_stdout(app, engine, source, tmp_path):
    slug, _, path = source(repositories=2)
    lines = read_lines(path)
    header, *rows, end = lines
    assert header["format"] == "tenantry-tenant-export" and header["version"] == 1
    assert header["tenant"] == {"slug": slug, "name": "Source Co", "plan": "pro", "status": "active"}
    assert header["schema_revision"] == HEAD and header["exported_at"].endswith("+00:00")
    # Every tenant table of the models, none other (alembic_version is the header's schema_revision).
    assert {t["name"] for t in header["tables"]} == set(TenantBase.metadata.tables)
    repositories = next(t for t in header["tables"] if t["name"] == "repositories")
    assert [c["name"] for c in repositories["columns"]] == [c.name for c in TenantBase.metadata.tables[
        "repositories"].columns]
    assert repositories["primary_key"] == ["id"] and repositories["sequences"] == {"id": 3}
    assert set(rows[0]) == {"table", "row"}
    assert [r["row"]["id"] for r in rows if r["table"] == "repositories"] == [1, 2]
    assert end == {"end": True, "rows": {"audit_events": 2, "invitations": 0, "members": 0, "repositories": 2}}

    piped = cli(app, "tenants", "export", slug, "--output", "-")
    assert piped.exit_code == 0, piped.stderr
    assert f"exported tenant {slug}" in piped.stderr
    streamed = [json.loads(line) for line in gzip.decompress(piped.stdout_bytes).decode().splitlines()]
    assert streamed[1:] == lines[1:]  # same rows; only exported_at differs
    imported = cli(app, "tenants", "import", "-", "--slug", "from_stdin", input=piped.stdout_bytes)
    assert imported.exit_code == 0, imported.output
    assert "audit_events" in imported.stdout and "admin API key (shown once): tnt_" in imported.stdout
    assert table_rows(engine, "t_from_stdin", "repositories") == table_rows(engine, f"t_{slug}", "repositories")


# --- consistency ---------------------------------------------------------------------


class WriteHook(io.BytesIO):
    """A sink that runs ``hook`` once, on its first write (the gzip header: after the snapshot began)."""

    def __init__(self, hook: Callable[[], None]) -> None:
        super().__init__()
        self.hook: Callable[[], None] | None = hook

    def write(self, data) -> int:  # type: ignore[override]
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return super().write(data)


def test_export_is_one_snapshot_and_misses_writes_committed_while_it_runs(app, engine, source):
    slug, _, _ = source(repositories=2)

    def concurrent_writes() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO t_{slug}.repositories (github_repo_id, owner, name, full_name)"
                                 " VALUES (9, 'late', 'late', 'late/late')")
            conn.exec_driver_sql(f"DELETE FROM t_{slug}.audit_events WHERE id = 1")

    sink = WriteHook(concurrent_writes)
    result = portability.export_tenant(engine, slug, sink)
    assert sink.hook is None  # the writes did happen during the export
    lines = [json.loads(line) for line in gzip.decompress(sink.getvalue()).decode().splitlines()]
    assert [r["row"]["name"] for r in lines if r.get("table") == "repositories"] == ["repo-0", "repo-1"]
    assert [r["row"]["id"] for r in lines if r.get("table") == "audit_events"] == [1, 2]
    assert result.rows == lines[-1]["rows"] == {"audit_events": 2, "invitations": 0, "members": 0, "repositories": 2}


def test_export_streams_rows_through_a_server_side_cursor(app, engine, source):
    slug, _, _ = source(repositories=2)
    cursors: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        if "row_to_json" in statement:
            cursors.append(type(cursor).__name__)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        portability.export_tenant(engine, slug, io.BytesIO())
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert cursors == ["ServerCursor"] * 4  # one per table, rows fetched in batches


def test_export_waits_for_the_tenants_lock_and_its_snapshot_starts_after_it(app, engine, source):
    """A migration (or provisioning, or a deletion) holds the tenant's lock: the export waits, then
    sees everything that transaction committed; a snapshot taken before the wait would miss it."""
    slug, _, _ = source(repositories=1)
    done = threading.Event()
    sink = io.BytesIO()
    with engine.connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_xact_lock(21582, hashtext(%(s)s))", {"s": slug})
        holder.exec_driver_sql(f"INSERT INTO t_{slug}.repositories (github_repo_id, owner, name, full_name)"
                               " VALUES (9, 'o', 'under-lock', 'o/under-lock')")
        worker = threading.Thread(
            target=lambda: (portability.export_tenant(engine, slug, sink), done.set()), daemon=True)
        worker.start()
        time.sleep(0.5)
        assert not done.is_set()
        holder.commit()
    worker.join(timeout=30)
    assert done.is_set()
    lines = [json.loads(line) for line in gzip.decompress(sink.getvalue()).decode().splitlines()]
    assert [r["row"]["name"] for r in lines if r.get("table") == "repositories"] == ["repo-0", "under-lock"]
    with engine.connect() as conn:  # and it let go of the lock
        assert conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(21582, hashtext(%(s)s))",
                                    {"s": slug}).scalar()


# --- revisions -----------------------------------------------------------------------


def older_file(path: Path, keep_audit_events: bool = False) -> Path:
    """The export as a t0001 tenant would have written it: no audit_events table (t0002 added it),
    no members or invitations (t0003)."""
    header, *rows, end = read_lines(path)
    header["schema_revision"] = "t0001"
    newer = {"members", "invitations"} | (set() if keep_audit_events else {"audit_events"})
    header["tables"] = [t for t in header["tables"] if t["name"] not in newer]
    rows = [r for r in rows if r["table"] not in newer]
    for name in newer:
        end["rows"].pop(name, None)
    return write_lines(path.with_name("older.jsonl.gz"), [header, *rows, end])


def test_an_older_revision_is_refused_without_migrate_and_migrated_after_loading_with_it(
    app, engine, source, leftovers
):
    assert HEAD == "t0003", "older_file() builds t0001 files; update it with the new revision"
    slug, _, path = source()
    older = older_file(path)

    refused = cli(app, "tenants", "import", str(older), "--slug", "older_co")
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        "error: the file is at schema revision 't0001', not the head 't0003'; pass --migrate "
        "to load it at 't0001' and migrate it to 't0003' in the same transaction")
    assert leftovers("older_co") == NOTHING

    migrated = cli(app, "tenants", "import", str(older), "--slug", "older_co", "--migrate", "--json")
    assert migrated.exit_code == 0, migrated.output
    result = json.loads(migrated.stdout)
    assert result["migrated_from"] == "t0001" and result["tenant"]["schema_revision"] == "t0003"
    assert result["rows"] == {"repositories": 3}
    assert table_rows(engine, "t_older_co", "repositories") == table_rows(engine, f"t_{slug}", "repositories")
    assert table_rows(engine, "t_older_co", "audit_events") == []
    check = cli(app, "tenants", "check", "--tenant", "older_co")
    assert check.exit_code == 0, check.output
    events = platform_events(engine, "older_co")
    assert [(e[0], e[2]["after"]["schema_revision"]) for e in events] == [
        ("tenant.provisioned", "t0001"), ("tenant.imported", "t0003")]


def test_a_table_its_revision_does_not_have_is_refused_even_with_migrate(app, engine, source, leftovers):
    _, _, path = source()
    result = cli(app, "tenants", "import", str(older_file(path, keep_audit_events=True)), "--slug", "x_co",
                 "--migrate")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: the file has table(s) audit_events that revision t0001 does not have")
    assert leftovers("x_co") == NOTHING


def test_a_revision_this_release_does_not_know_is_refused_even_with_migrate(app, engine, source, leftovers):
    _, _, path = source()
    header, *rest = read_lines(path)
    header["schema_revision"] = "t9999"
    newer = write_lines(path.with_name("newer.jsonl.gz"), [header, *rest])
    result = cli(app, "tenants", "import", str(newer), "--slug", "x_co", "--migrate")
    assert result.exit_code == 1 and "'t9999', which this version of Tenantry does not know" in result.stderr
    assert leftovers("x_co") == NOTHING


def stream_with(tmp_path: Path, revision: str, upgrade: str) -> Path:
    """A copy of the tenant stream with one more revision on top of the shipped head."""
    location = tmp_path / "tenant_migrations"
    shutil.copytree(default_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / f"{revision}.py").write_text(
        f"import sqlalchemy as sa\nfrom alembic import op\n\nrevision = {revision!r}\ndown_revision = {HEAD!r}\n"
        "branch_labels = depends_on = None\n\n\ndef upgrade():\n" + textwrap.indent(textwrap.dedent(upgrade), "    ")
        + "\n\ndef downgrade():\n    pass\n"
    )
    return location


def test_with_migrate_the_data_is_loaded_before_the_migrations_run(make_app, engine, source, tmp_path, leftovers):
    slug, _, path = source()
    location = stream_with(tmp_path, "x0003", """
        op.add_column("repositories", sa.Column("shouty", sa.String(201)))
        op.execute("UPDATE repositories SET shouty = upper(full_name)")
    """)
    newer_app = make_app(TENANT_MIGRATIONS_LOCATION=str(location))

    refused = cli(newer_app, "tenants", "import", str(path), "--slug", "moved_co")
    assert refused.exit_code == 1 and "not the head 'x0003'" in refused.stderr
    assert leftovers("moved_co") == NOTHING

    moved = cli(newer_app, "tenants", "import", str(path), "--slug", "moved_co", "--migrate")
    assert moved.exit_code == 0, moved.output
    assert f"loaded at {HEAD}, migrated to x0003" in moved.stdout
    with engine.connect() as conn:
        shouty = conn.exec_driver_sql("SELECT shouty FROM t_moved_co.repositories ORDER BY id").scalars().all()
        version = conn.exec_driver_sql("SELECT version_num FROM t_moved_co.alembic_version").scalar()
    assert shouty == ["OCTO/REPO-0", "OCTO/REPO-1", "OCTO/REPO-2"] and version == "x0003"
    assert cli(newer_app, "tenants", "check", "--tenant", "moved_co").exit_code == 0


def test_a_migration_failing_after_the_whole_load_leaves_nothing(make_app, engine, source, tmp_path, leftovers):
    _, _, path = source()
    location = stream_with(tmp_path, "x0003", 'op.execute("SELECT 1 / (SELECT count(*) - 3 FROM repositories)")')
    result = cli(make_app(TENANT_MIGRATIONS_LOCATION=str(location)),
                 "tenants", "import", str(path), "--slug", "failed_co", "--migrate")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: importing tenant 'failed_co' failed and was rolled back:")
    assert "division by zero" in result.stderr and "Traceback" not in result.output
    assert leftovers("failed_co") == NOTHING


# --- refusals ------------------------------------------------------------------------


def _corrupt(path: Path, edit: Callable[[list[dict]], list[Any]]) -> bytes:
    return gzip.compress("".join(
        (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in edit(read_lines(path))).encode())


def _rename_table(lines: list[dict]) -> list[Any]:
    header, *rows, end = lines
    for t in header["tables"]:
        if t["name"] == "repositories":
            t["name"] = "repos"
    for r in rows:
        if r["table"] == "repositories":
            r["table"] = "repos"
    end["rows"]["repos"] = end["rows"].pop("repositories")
    return [header, *rows, end]


def _add_column(lines: list[dict]) -> list[Any]:
    header, *rows = lines
    next(t for t in header["tables"] if t["name"] == "repositories")["columns"].append(
        {"name": "colour", "type": "text"})
    for r in rows:
        if r.get("table") == "repositories":
            r["row"]["colour"] = "red"
    return [header, *rows]


def _add_row_key(lines: list[dict]) -> list[Any]:
    lines[-2]["row"]["colour"] = "red"  # the last repositories row
    return lines


def _set(key: str, value: Any) -> Callable[[list[dict]], list[Any]]:
    def edit(lines: list[dict]) -> list[Any]:
        lines[0][key] = value
        return lines
    return edit


CORRUPTIONS = {
    "not gzip": (lambda path: gzip.decompress(path.read_bytes()),
                 "error: not a gzip-compressed tenant export"),
    "truncated gzip": (lambda path: path.read_bytes()[: len(path.read_bytes()) * 2 // 3],
                       "error: the file is truncated after line"),
    "empty": (lambda path: b"", "error: the file is empty"),
    "bad json": (lambda path: _corrupt(path, lambda ls: [*ls[:3], '{"table": "repositories", "row": {', *ls[3:]]),
                 "error: line 4 is not valid JSON"),
    "wrong format": (lambda path: _corrupt(path, _set("format", "pg_dump")),
                     "error: line 1 is not a tenant export header"),
    "unknown version": (lambda path: _corrupt(path, _set("version", 2)),
                        "error: unsupported export format version 2 (this version of Tenantry reads 1)"),
    "unknown table": (lambda path: _corrupt(path, _rename_table),
                      f"error: the file has table(s) repos that revision {HEAD} does not have"),
    "unknown column": (lambda path: _corrupt(path, _add_column),
                       f"error: table repositories: column(s) colour are not in revision {HEAD}"),
    "unknown key in a row": (lambda path: _corrupt(path, _add_row_key),
                             "error: line 7: row of repositories has unknown column(s) colour"),
    "table not a name": (lambda path: _corrupt(path, lambda ls: [*ls[:2], {"table": [1], "row": {}}, *ls[2:]]),
                         "error: line 3: table [1] is not in the header"),
    "no end line": (lambda path: _corrupt(path, lambda ls: ls[:-1]), "error: the file ends at line 7 without"),
    "wrong counts": (lambda path: _corrupt(path, lambda ls: [*ls[:-2], ls[-1]]),
                     "error: line 7: the end line counts"),
    "after the end": (lambda path: _corrupt(path, lambda ls: [*ls, ls[-2]]), "error: line 9 follows the end line"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS, ids=list(CORRUPTIONS))
def test_a_corrupt_or_foreign_file_is_refused_in_one_line_and_creates_nothing(
    app, engine, source, tmp_path, corruption, leftovers
):
    _, _, path = source()  # 3 repositories + 3 events: header, 6 rows, end line = 8 lines
    make, message = CORRUPTIONS[corruption]
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(make(path))
    result = cli(app, "tenants", "import", str(bad), "--slug", "bad_co")
    assert result.exit_code == 1
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert leftovers("bad_co") == NOTHING


def test_a_row_the_database_refuses_late_in_the_load_rolls_everything_back(
    app, engine, source, tmp_path, monkeypatch, leftovers
):
    _, _, path = source()
    lines = read_lines(path)
    lines[-2]["row"]["owner"] = "x" * 101  # the last row of the last table: varchar(100)
    bad = write_lines(tmp_path / "bad.jsonl.gz", lines)
    monkeypatch.setattr(portability, "BATCH_ROWS", 1)  # every earlier row went in first
    result = cli(app, "tenants", "import", str(bad), "--slug", "bad_co")
    assert result.exit_code == 1
    assert result.stderr == ("error: importing tenant 'bad_co' failed and was rolled back: line 7 (table "
                             "repositories): value too long for type character varying(100)\n")
    assert leftovers("bad_co") == NOTHING


def test_an_existing_slug_is_refused_and_left_as_it_was(app, client, engine, source):
    slug, token, path = source()
    before = listing(client, token)
    events = platform_events(engine, slug)
    result = cli(app, "tenants", "import", str(path), "--slug", slug)
    assert result.exit_code == 1 and result.stderr == f"error: a tenant with slug '{slug}' already exists\n"
    assert listing(client, token) == before
    assert platform_events(engine, slug) == events
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM public.api_keys")).scalar() == 1


def test_unknown_plan_unknown_tenant_and_bad_usage(app, engine, source, tmp_path, leftovers):
    _, _, path = source()
    plan = cli(app, "tenants", "import", str(path), "--slug", "x_co", "--plan", "platinum")
    assert plan.exit_code == 1 and plan.stderr == "error: unknown plan 'platinum'\n"
    assert leftovers("x_co") == NOTHING
    slug = cli(app, "tenants", "import", str(path), "--slug", "Bad Slug")
    assert slug.exit_code == 1 and slug.stderr.startswith("error: invalid tenant slug")
    missing = cli(app, "tenants", "export", "nobody", "--output", str(tmp_path / "n.gz"))
    assert missing.exit_code == 1 and missing.stderr == "error: no tenant with slug 'nobody'\n"
    assert not (tmp_path / "n.gz").exists() and list(tmp_path.glob(".*partial")) == []
    assert cli(app, "tenants", "import", str(tmp_path / "absent.gz"), "--slug", "x_co").exit_code == 2
    assert cli(app, "tenants", "import", str(path)).exit_code == 2  # --slug is required
    assert cli(app, "tenants", "export", "x_co", "--output", str(tmp_path / "no" / "f.gz")).exit_code == 2


def test_provisioning_at_an_older_revision_stays_there(app, engine):
    from app.extensions import db

    with app.app_context():
        made = provision_tenant(db.session(), slug="old_co", name="Old", revision="t0001")
        db.session.remove()
    assert made.tenant.schema_revision == "t0001"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM t_old_co.alembic_version").scalar() == "t0001"
        assert conn.exec_driver_sql("SELECT to_regclass('t_old_co.audit_events')").scalar() is None


def test_the_portability_core_imports_without_flask():
    probe = ("import sys, app.tenancy.portability;"
             "print(','.join(sorted(m for m in ('flask', 'flask_smorest', 'werkzeug') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
