"""The image and compose.yaml, run for real: podman builds the image, runs it alone, then
podman-compose brings the whole stack up (fixtures and helpers: podman_stack.py beside this file).

The image alone, on a network of its own with a PostgreSQL stand-in: it refuses to
start without DATABASE_URL, ``flask db upgrade`` migrates, gunicorn serves, the
HEALTHCHECK passes, a tenant is provisioned over HTTP, every process runs as uid 10001
and SIGTERM stops it with exit 0.

The stack, through the proxy only (the one published port): ready, a tenant provisioned
with the admin token, a create/list round trip with its key, the rate-limit counters
in Redis. What an attacker sends at the same stack: test_attacks.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from podman_stack import Images, Stack, free_port, logs, podman, request, wait_for, wait_healthy

APP_UID = "10001"


# --- the image alone ------------------------------------------------------------------


def test_the_image_refuses_to_start_without_database_url(images: Images):
    for extra in ([], ["-e", "DATABASE_URL="]):
        result = podman("run", "--rm", "--no-healthcheck", *extra, images.app, check=False, timeout=60)
        assert result.returncode != 0, result.stdout
        assert "DATABASE_URL must be set" in result.stderr, result.stderr
        assert "Starting gunicorn" not in result.stdout + result.stderr


@dataclass
class Smoke:
    network: str
    database_url: str
    app: str
    base_url: str
    migrated: str


@pytest.fixture(scope="module")
def smoke(images: Images) -> Iterator[Smoke]:
    """A PostgreSQL stand-in and the image, migrated, then serving on a free loopback port."""
    name = f"tenantry-smoke-{secrets.token_hex(4)}"
    password = secrets.token_hex(12)
    database_url = f"postgresql://tenantry:{password}@{name}-db:5432/tenantry"
    port = free_port()
    try:
        podman("network", "create", name)
        podman("run", "-d", "--name", f"{name}-db", "--network", name, "-e", "POSTGRES_USER=tenantry",
               "-e", f"POSTGRES_PASSWORD={password}", "-e", "POSTGRES_DB=tenantry",
               "localhost/tenantry-postgres:stand-in")
        wait_for("PostgreSQL stand-in accepting connections",
                 lambda: podman("exec", f"{name}-db", "pg_isready", "-h", "127.0.0.1", "-U", "tenantry",
                                "-d", "tenantry", check=False).returncode == 0,
                 60, diagnose=lambda: logs(f"{name}-db"))
        migrated = podman("run", "--rm", "--no-healthcheck", "--network", name, "-e", f"DATABASE_URL={database_url}",
                          images.app, "sh", "-c", "flask db upgrade && flask db current", check=False, timeout=180)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        podman("run", "-d", "--name", f"{name}-app", "--network", name, "-e", f"DATABASE_URL={database_url}",
               "-e", "ADMIN_TOKEN=smoke-admin-token",
               "-e", "SECRET_KEY=smoke-secret-key-for-console-sessions", "-p", f"127.0.0.1:{port}:8000", images.app)
        yield Smoke(network=name, database_url=database_url, app=f"{name}-app",
                    base_url=f"http://127.0.0.1:{port}", migrated=migrated.stdout)
    finally:
        podman("rm", "-f", "-t", "0", f"{name}-app", f"{name}-db", check=False)
        podman("network", "rm", "-f", name, check=False)


def test_flask_db_upgrade_in_the_image_migrates_to_head(smoke: Smoke):
    # `flask db current` prints "current: <revision>  head: <head>".
    _, _, rest = smoke.migrated.partition("current: ")
    revision, _, head = rest.strip().partition("  head: ")
    assert revision and revision == head.strip(), smoke.migrated


def test_the_image_serves_passes_its_healthcheck_and_provisions_a_tenant(smoke: Smoke):
    wait_healthy(smoke.app, timeout=90)  # the image's own HEALTHCHECK (/healthz)
    assert request(smoke.base_url, "GET", "/readyz")[0] == 200
    status, body = request(smoke.base_url, "POST", "/v1/admin/tenants", "smoke-admin-token",
                           {"slug": "smoke", "name": "Smoke", "plan": "free"})
    assert status == 201, body
    key = body["api_key"]["token"]
    status, body = request(smoke.base_url, "POST", "/v1/repositories", key,
                           {"github_repo_id": 7, "owner": "octo", "name": "smoke"})
    assert status == 201, body
    status, body = request(smoke.base_url, "GET", "/v1/repositories", key)
    assert status == 200 and [r["name"] for r in body["items"]] == ["smoke"], body


def test_every_process_of_the_image_runs_as_uid_10001(smoke: Smoke):
    wait_healthy(smoke.app, timeout=90)
    user = podman("inspect", "--format", "{{.Config.User}}", smoke.app).stdout.strip()
    assert user == f"{APP_UID}:{APP_UID}", user
    # The processes themselves, as the host sees them (no user namespace): the master and its workers.
    rows = podman("top", smoke.app, "pid", "huser", "args").stdout.strip().splitlines()[1:]
    assert len(rows) >= 3 and all("gunicorn" in row for row in rows), rows
    assert {row.split()[1] for row in rows} == {APP_UID}, rows
    assert podman("exec", smoke.app, "id", "-u").stdout.strip() == APP_UID


def test_sigterm_stops_the_image_with_exit_status_0(smoke: Smoke):
    wait_healthy(smoke.app, timeout=90)
    podman("stop", "-t", "40", smoke.app, timeout=60)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", smoke.app).stdout.strip()
    assert code == "0", logs(smoke.app)
    assert "Shutting down: Master" in logs(smoke.app)


# --- the compose stack, through the proxy ---------------------------------------------


def test_the_stack_answers_through_the_proxy_only(stack: Stack):
    status, body = stack.request("GET", "/readyz")
    assert status == 200 and body["status"] == "ready", body
    # The proxy publishes the one host port; app only exposes 8000 to the stack's network.
    assert podman("port", stack.container("proxy")).stdout.strip().endswith(stack.base_url.rpartition(":")[2])
    assert podman("port", stack.container("app")).stdout.strip() == ""
    assert stack.psql("SELECT 1") == "1"


def test_a_tenant_provisioned_through_the_proxy_round_trips(stack: Stack):
    status, body = stack.request("POST", "/v1/admin/tenants", stack.admin_token,
                                 {"slug": "stacked", "name": "Stacked", "plan": "free"})
    assert status == 201, body
    key = body["api_key"]["token"]
    status, body = stack.request("POST", "/v1/repositories", key,
                                 {"github_repo_id": 42, "owner": "octo", "name": "through-the-proxy"})
    assert status == 201, body
    status, body = stack.request("GET", "/v1/repositories", key)
    assert status == 200 and [r["name"] for r in body["items"]] == ["through-the-proxy"], body
    # The schema really is in the stack's PostgreSQL, and the admin token is required.
    assert stack.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 't_stacked'") == "1"
    assert stack.request("GET", "/v1/admin/tenants", "not-the-token")[0] == 401
    # The tenant's request was counted in Redis (RATELIMIT_STORAGE_URI), not in each process.
    keys = podman("exec", stack.container("redis"), "redis-cli", "--scan").stdout.split()
    assert any(k.startswith("LIMITS:") for k in keys), f"{keys}\n{logs(stack.container('app'))}"
