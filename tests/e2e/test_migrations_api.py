"""/v1/admin/migrations (the fan-out's ledger over HTTP) and the revision filters of /v1/admin/tenants.

The ledger is filled by real ``flask tenants migrate`` runs through the CLI runner.
Other tests make runs too, so every check looks runs up by the id its own run
reported, and never assumes the ledger is empty.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from app.models.public import OUTCOME_STATUSES
from app.tenancy.migrations import default_location, head_revision
from app.testing import ADMIN_TOKEN

HEAD = head_revision()  # the shipped tenant stream's head


def migrate(app: Flask, *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``flask tenants migrate --json``; the exit status and the JSON report (last stdout line)."""
    result = app.test_cli_runner().invoke(args=["tenants", "migrate", "--json", "--jobs", "1", *args])
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.output
    return result.exit_code, json.loads(lines[-1])


def walk(client: FlaskClient, url: str, key: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Follow ``next_cursor`` from ``url`` to the last page: (all items, number of pages)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        sep = "&" if "?" in url else "?"
        response = client.get(url + (f"{sep}cursor={cursor}" if cursor else ""))
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.json[key] if key else response.json
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages
        assert pages < 1000, "pagination does not end"


def assert_problem(response, status: int, type_suffix: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.json
    assert body["status"] == status and body["type"].endswith("/" + type_suffix)
    return body


def ledger_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM public.migration_runs ORDER BY id DESC")).scalars().all()


# --- runs -------------------------------------------------------------------


def test_runs_are_listed_newest_first_across_pages_with_their_counts(app, admin_client, make_tenant, engine):
    slug = make_tenant().slug
    down_code, down = migrate(app, "--to", "base", "--tenant", slug)
    up_code, up = migrate(app, "--tenant", slug)
    noop_code, noop = migrate(app, "--tenant", slug)  # already at head: nothing to do
    assert (down_code, up_code, noop_code) == (0, 0, 0), (down, up, noop)
    assert down["run_id"] < up["run_id"] < noop["run_id"]

    runs, pages = walk(admin_client, "/v1/admin/migrations?limit=2")
    ids = [run["id"] for run in runs]
    assert ids == ledger_ids(engine)  # every run once, newest first, nothing lost between pages
    assert pages == (len(ids) + 1) // 2 and pages >= 2
    assert ids.index(noop["run_id"]) < ids.index(up["run_id"]) < ids.index(down["run_id"])

    first = admin_client.get("/v1/admin/migrations?limit=2").json
    assert [run["id"] for run in first["items"]] == ids[:2] and first["next_cursor"] is not None

    by_id = {run["id"]: run for run in runs}
    downgrade = by_id[down["run_id"]]
    assert downgrade["status"] == "succeeded"
    assert downgrade["target_revision"] == "base"
    assert downgrade["counts"] == {
        "selected": 1, "migrated": 1, "current": 0, "failed": 0, "skipped": 0, "remaining": 0
    }
    assert downgrade["options"]["target"] == "base" and downgrade["options"]["slugs"] == [slug]
    # The CLI runner runs the coordinator in this very process.
    assert (downgrade["hostname"], downgrade["pid"]) == (socket.gethostname(), os.getpid())
    assert downgrade["started_by"].endswith("@" + socket.gethostname())
    started = datetime.fromisoformat(downgrade["started_at"])
    assert datetime.fromisoformat(downgrade["finished_at"]) >= started
    assert set(downgrade) == {
        "id", "status", "target_revision", "options", "started_by", "hostname", "pid", "counts",
        "started_at", "finished_at",
    }
    assert by_id[up["run_id"]]["target_revision"] == HEAD
    assert by_id[noop["run_id"]]["counts"] | {"selected": None} == {
        "selected": None, "migrated": 0, "current": 1, "failed": 0, "skipped": 0, "remaining": 0
    }


def test_run_detail_pages_outcomes_in_slug_order_and_filters_by_status(app, admin_client, make_tenant, engine):
    locked, broken, current, migrated_a, migrated_b = slugs = sorted(make_tenant().slug for _ in range(5))
    with engine.begin() as conn:
        # Its downgrade drops this table: gone already, the downgrade fails.
        conn.exec_driver_sql(f'DROP TABLE "t_{broken}".repositories')
        # At base in fact while the tenant row still says head: the worker finds nothing to do.
        conn.exec_driver_sql(f'DROP TABLE "t_{current}".repositories')
        conn.exec_driver_sql(f'DELETE FROM "t_{current}".alembic_version')
    with engine.connect() as holder:
        # The first slug times out, is retried after the others and fails again: its outcome
        # is written last, so slug order is not the order the rows were written in.
        holder.exec_driver_sql(f'LOCK TABLE "t_{locked}".repositories IN ACCESS SHARE MODE')
        code, report = migrate(
            app, "--to", "base", "--lock-timeout", "0.2", "--retries", "1",
            *[arg for slug in slugs for arg in ("--tenant", slug)],
        )
        holder.rollback()
    assert code == 1 and sorted(f["slug"] for f in report["failures"]) == [locked, broken]
    run_id = report["run_id"]

    response = admin_client.get(f"/v1/admin/migrations/{run_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    detail = response.json
    assert (detail["id"], detail["status"], detail["target_revision"]) == (run_id, "failed", "base")
    assert detail["counts"] == {
        "selected": 5, "migrated": 2, "current": 1, "failed": 2, "skipped": 0, "remaining": 0
    }
    outcomes = detail["outcomes"]
    assert outcomes["next_cursor"] is None
    assert [(o["tenant_slug"], o["status"], o["attempts"]) for o in outcomes["items"]] == [
        (locked, "failed", 2), (broken, "failed", 1), (current, "current", 1),
        (migrated_a, "migrated", 1), (migrated_b, "migrated", 1),
    ]
    by_slug = {o["tenant_slug"]: o for o in outcomes["items"]}
    assert (by_slug[migrated_a]["from_revision"], by_slug[migrated_a]["to_revision"]) == (HEAD, None)
    assert by_slug[migrated_a]["error"] is None
    assert "lock timeout" in by_slug[locked]["error"]
    assert "repositories" in by_slug[broken]["error"]  # the table the downgrade could not drop
    assert by_slug[broken]["from_revision"] == HEAD
    assert by_slug[current]["from_revision"] is None
    assert all(o["duration_ms"] >= 0 and o["finished_at"] for o in outcomes["items"])

    def statuses(query: str) -> list[str]:
        page = admin_client.get(f"/v1/admin/migrations/{run_id}?{query}").json["outcomes"]
        return [f'{o["tenant_slug"]}:{o["status"]}' for o in page["items"]]

    assert statuses("status=failed") == [f"{locked}:failed", f"{broken}:failed"]
    assert statuses("status=migrated") == [f"{migrated_a}:migrated", f"{migrated_b}:migrated"]
    assert statuses("status=current") == [f"{current}:current"]
    assert statuses("status=deleted") == []

    paged, pages = walk(admin_client, f"/v1/admin/migrations/{run_id}?limit=2", key="outcomes")
    assert [o["tenant_slug"] for o in paged] == slugs and pages == 3
    filtered, pages = walk(admin_client, f"/v1/admin/migrations/{run_id}?limit=1&status=migrated", key="outcomes")
    assert [o["tenant_slug"] for o in filtered] == [migrated_a, migrated_b] and pages == 2

    # Every page repeats the run itself.
    second = admin_client.get(f"/v1/admin/migrations/{run_id}?limit=1").json
    assert second["id"] == run_id and second["counts"] == detail["counts"]


def test_a_run_with_no_outcomes_has_an_empty_page(app, admin_client, make_tenant):
    slug = make_tenant().slug
    code, report = migrate(app, "--tenant", slug)  # at head already: planned current, no worker
    assert code == 0
    detail = admin_client.get(f"/v1/admin/migrations/{report['run_id']}").json
    assert detail["outcomes"] == {"items": [], "next_cursor": None}
    assert detail["counts"]["current"] == 1 and detail["status"] == "succeeded"


@pytest.mark.parametrize("query, field", [
    ("status=bogus", "status"), ("status=", "status"), ("cursor=garbage", "cursor"), ("limit=0", "limit"),
])
def test_bad_outcome_queries_are_422(app, admin_client, make_tenant, query, field):
    code, report = migrate(app, "--tenant", make_tenant().slug)
    assert code == 0
    response = admin_client.get(f"/v1/admin/migrations/{report['run_id']}?{query}")
    body = assert_problem(response, 422, "validation-error")
    assert list(body["errors"]) == [field]


@pytest.mark.parametrize("query, field", [("cursor=garbage", "cursor"), ("limit=201", "limit")])
def test_bad_run_list_queries_are_422(admin_client, query, field):
    body = assert_problem(admin_client.get(f"/v1/admin/migrations?{query}"), 422, "validation-error")
    assert list(body["errors"]) == [field]


def test_an_unknown_run_is_a_404_problem_like_an_unknown_tenant(admin_client, engine):
    unknown = max(ledger_ids(engine), default=0) + 1000
    body = assert_problem(admin_client.get(f"/v1/admin/migrations/{unknown}"), 404, "not-found")
    assert str(unknown) in body["detail"]
    tenant_404 = admin_client.get("/v1/admin/tenants/nobody").json
    assert set(body) == set(tenant_404) and body["title"] == tenant_404["title"]
    # Beyond bigint, and not a number at all: still 404s, never a database error.
    assert_problem(admin_client.get(f"/v1/admin/migrations/{2**70}"), 404, "not-found")
    assert_problem(admin_client.get("/v1/admin/migrations/latest"), 404, "not-found")


@pytest.mark.parametrize("path", ["/v1/admin/migrations", "/v1/admin/migrations/1"])
def test_the_ledger_needs_the_admin_token(client, tenant, path):
    missing = assert_problem(client.get(path), 401, "unauthorized")
    assert "Authorization" in missing["detail"]
    assert client.get(path).headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(client.get(path, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    assert_problem(client.get(path, headers=tenant.auth), 403, "forbidden")


# --- tenants by revision ------------------------------------------------------


def _stream_with_a_second_revision(root: Path) -> Path:
    """A copy of the tenant stream with one more revision on top of the shipped head."""
    location = root / "tenant_migrations"
    shutil.copytree(default_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    (location / "versions" / "x0002_archived_at.py").write_text(
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        "revision = 'x0002'\n"
        f"down_revision = {HEAD!r}\n"
        "branch_labels = depends_on = None\n\n\n"
        "def upgrade():\n"
        "    op.add_column('repositories', sa.Column('archived_at', sa.DateTime(timezone=True)))\n\n\n"
        "def downgrade():\n"
        "    op.drop_column('repositories', 'archived_at')\n"
    )
    return location


def test_tenants_filter_by_exact_revision_and_by_behind_the_configured_head(
    app, admin_client, make_app, make_tenant, tmp_path
):
    newest, old_a, old_b, emptied = sorted(make_tenant().slug for _ in range(4))
    stream_app = make_app(TENANT_MIGRATIONS_LOCATION=str(_stream_with_a_second_revision(tmp_path)))
    assert migrate(stream_app, "--tenant", newest)[0] == 0  # -> x0002
    assert migrate(stream_app, "--to", "base", "--tenant", emptied)[0] == 0  # -> no revision

    stream_client = stream_app.test_client()
    stream_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ADMIN_TOKEN}"

    def slugs(client: FlaskClient, query: str) -> list[str]:
        response = client.get(f"/v1/admin/tenants?{query}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return [t["slug"] for t in response.json["items"]]

    # With head x0002, everything not at x0002 is behind, the emptied schema (NULL) included.
    assert slugs(stream_client, "behind=true") == [old_a, old_b, emptied]
    assert slugs(stream_client, "behind=false") == [newest]
    assert slugs(stream_client, "revision=x0002") == [newest]
    assert slugs(stream_client, f"revision={HEAD}") == [old_a, old_b]
    assert slugs(stream_client, f"revision={HEAD}&behind=true") == [old_a, old_b]
    assert slugs(stream_client, f"revision={HEAD}&behind=false") == []
    assert slugs(stream_client, "revision=nope") == []
    # The app on the shipped stream compares with its own head.
    assert slugs(admin_client, "behind=true") == [newest, emptied]
    assert slugs(admin_client, "behind=false") == [old_a, old_b]
    assert slugs(admin_client, "") == [newest, old_a, old_b, emptied]

    items = admin_client.get("/v1/admin/tenants?revision=x0002").json["items"]
    assert [(t["slug"], t["schema_revision"]) for t in items] == [(newest, "x0002")]

    paged, pages = walk(stream_client, "/v1/admin/tenants?behind=true&limit=2")
    assert [t["slug"] for t in paged] == [old_a, old_b, emptied] and pages == 2
    paged, pages = walk(stream_client, f"/v1/admin/tenants?revision={HEAD}&limit=1")
    assert [t["slug"] for t in paged] == [old_a, old_b] and pages == 2


@pytest.mark.parametrize("query, field", [("behind=maybe", "behind"), ("revision=", "revision")])
def test_bad_tenant_filters_are_422(admin_client, query, field):
    body = assert_problem(admin_client.get(f"/v1/admin/tenants?{query}"), 422, "validation-error")
    assert list(body["errors"]) == [field]


# --- the OpenAPI document -----------------------------------------------------


def test_openapi_documents_the_ledger_and_the_tenant_filters(client):
    spec = client.get("/v1/openapi.json").json
    runs = spec["paths"]["/v1/admin/migrations"]["get"]
    detail = spec["paths"]["/v1/admin/migrations/{run_id}"]["get"]
    assert {p["name"] for p in runs["parameters"]} == {"limit", "cursor"}
    status = next(p for p in detail["parameters"] if p["name"] == "status")
    assert status["in"] == "query" and status["schema"]["enum"] == list(OUTCOME_STATUSES)
    assert "404" in detail["responses"]
    tenants = {p["name"] for p in spec["paths"]["/v1/admin/tenants"]["get"]["parameters"]}
    assert {"revision", "behind", "limit", "cursor"} <= tenants
    run_schema = spec["components"]["schemas"]["MigrationRun"]["properties"]
    assert {"counts", "target_revision", "started_by", "finished_at"} <= set(run_schema)
