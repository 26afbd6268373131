"""The container files' commands, run outside containers (there is no Docker engine in CI).

Every command the Dockerfile and compose.yaml run is read out of those files here, not
copied, and run on this machine against a database of its own: the ENTRYPOINT
wrapping the CMD (gunicorn with gunicorn.conf.py), the image's HEALTHCHECK, the
compose app's readiness check, and the one-shot ``migrate`` service. The environment
is the image's (its ENV lines), with the virtualenv standing in for /opt/venv. What
cannot be run here (the build itself, the postgres and pgbouncer images) is checked for
the properties the deployment relies on: pinned images, which URL goes through
PgBouncer and which does not.
"""

from __future__ import annotations

import fnmatch
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from app.config import SETTINGS
from app.testing import ADMIN_TOKEN, SECRET_KEY, fresh_database
from tests.stack import status_of

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


# --- reading the container files ----------------------------------------------------


def dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: what the image runs."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def instruction(keyword: str) -> str:
    [args] = [a for k, a in runtime_stage() if k == keyword]
    return args


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"not in exec form: {args}"
    return json.loads(args)


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in runtime_stage():
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def healthcheck_argv(test: list[str] | str) -> list[str]:
    """The argv of a HEALTHCHECK / compose healthcheck test in CMD form."""
    assert isinstance(test, list) and test[0] == "CMD", test
    return test[1:]


def image_healthcheck() -> list[str]:
    args = instruction("HEALTHCHECK")
    _, _, command = args.partition(" CMD ")
    return exec_form(command)


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- the files themselves -------------------------------------------------------------


def test_the_image_runs_gunicorn_with_its_config_file_as_a_numeric_non_root_user():
    assert exec_form(instruction("CMD")) == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    user = instruction("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, user
    copied = [a.split() for k, a in runtime_stage() if k == "COPY" and not a.startswith("--from")]
    assert ["wsgi.py", "gunicorn.conf.py", "./"] in copied


def test_base_and_service_images_are_pinned_by_version_and_digest():
    [python_image] = [a for k, a in dockerfile_instructions() if k == "ARG" and a.startswith("PYTHON_IMAGE=")]
    images = [python_image.partition("=")[2]]
    # Profile services (citus) are left out: their images cannot be pulled here to read a
    # digest, and nothing here runs them (compose.yaml says so); they are pinned by version.
    # So is the API image, which the stack builds itself.
    services = compose()["services"]
    built = {s["image"] for s in services.values() if "build" in s}
    images += [s["image"] for s in services.values() if s["image"] not in built and "profiles" not in s]
    assert len(images) >= 5, images  # the base image, postgres, pgbouncer, redis, nginx
    for image in images:
        name, _, digest = image.partition("@sha256:")
        assert len(digest) == 64 and ":" in name and any(c.isdigit() for c in name.rpartition(":")[2]), image


def test_dockerignore_keeps_everything_the_build_copies_and_drops_tests_and_state():
    patterns = dockerignore_patterns()
    sources = []
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    assert "gunicorn.conf.py" in sources
    for source in sources:
        assert not any(fnmatch.fnmatch(source, p) for p in patterns), f"{source} is excluded by .dockerignore"
        assert (ROOT / source).exists(), source
    for excluded in (".venv", ".git", "tests", "bench", "docs", "instance", "**/__pycache__"):
        assert excluded in patterns, excluded


def test_compose_migrates_straight_to_postgres_and_serves_through_pgbouncer():
    migrate, app, bouncer = service("migrate"), service("app"), service("pgbouncer")
    assert make_url(migrate["environment"]["DATABASE_URL"]).host == "postgres"
    assert make_url(app["environment"]["DATABASE_URL"]).host == "pgbouncer"
    assert bouncer["environment"]["POOL_MODE"] == "transaction"
    # psycopg would otherwise prepare statements on one server connection and use them on another.
    assert app["environment"]["DB_PREPARE_THRESHOLD"] == "off"
    assert app["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert app["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert migrate["restart"] == "no" and "command" not in app  # the app runs the image's CMD
    for name in ("postgres", "pgbouncer", "app", "redis", "proxy"):
        assert service(name)["healthcheck"]["test"][0] == "CMD", name


def test_compose_builds_the_api_image_once_and_the_other_services_run_it_without_pulling():
    services = compose()["services"]
    builders = [name for name, s in services.items() if "build" in s]
    assert builders == ["migrate"], builders
    image = services["migrate"]["image"]
    # Built (from the layer cache when nothing changed), never looked up in a registry.
    assert services["migrate"]["pull_policy"] == "build"
    users = [name for name, s in services.items() if s.get("image") == image and "build" not in s]
    assert {"app", "citus-migrate", "citus-app"} <= set(users), users
    for name in users:
        # docker compose would otherwise try to pull tenantry:local when it is missing.
        assert services[name]["pull_policy"] == "never", name


def test_compose_fronts_the_app_with_the_proxy_and_keeps_rate_counters_in_redis():
    proxy, app, redis = service("proxy"), service("app"), service("redis")
    # The proxy is the stack's only published port (configurable on the host side).
    published = {name: s["ports"] for name, s in compose()["services"].items()
                 if "ports" in s and "profiles" not in s}
    assert published == {"proxy": ["${TENANTRY_PORT:-8000}:8000"]}, published
    assert app["expose"] == ["8000"]
    assert proxy["volumes"] == ["./deploy/nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert proxy["depends_on"]["app"] == {"condition": "service_healthy", "restart": True}
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    directives = [line.split("#")[0].split() for line in conf.splitlines()]
    # The official image runs nginx -g 'daemon off;': the same directive in the file is an error.
    assert not any(words and words[0] == "daemon" for words in directives)
    assert any(words[:1] == ["listen"] and words[1].rstrip(";") == "8000" for words in directives), conf
    assert "app:8000" in conf
    # Rate-limit counters in Redis, shared by every process; no persistence (counters only).
    uri = app["environment"]["RATELIMIT_STORAGE_URI"]
    [setting] = [s for s in SETTINGS if s.env == "RATELIMIT_STORAGE_URI"]
    assert setting.parse(uri) == uri and uri.startswith("redis://redis:")
    assert "socket_timeout=" in uri and "socket_connect_timeout=" in uri  # fail over, never hang
    assert app["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert redis["command"][:1] == ["redis-server"] and "--save" in redis["command"]
    assert "volumes" not in redis


# --- running them ---------------------------------------------------------------------


def container_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This machine's environment less every Tenantry setting, plus the image's ENV and ``extra``."""
    ours = {s.env for s in SETTINGS} | {"PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "FORWARDED_ALLOW_IPS"}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("GUNICORN_")}
    env.update(image_env())
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update({
        # The virtualenv plays /opt/venv; the working directory plays /srv/tenantry.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "HOME": str(home),
        # CI runs the suite with the role layer on and off (docs/security.md).
        "TENANT_ROLES": os.environ.get("TEST_TENANT_ROLES", "auto"),
    })
    env.pop("XDG_RUNTIME_DIR", None)
    env.update(extra)
    return env


def in_container(command: list[str]) -> list[str]:
    """``command`` as the image runs it: behind its ENTRYPOINT."""
    return exec_form(instruction("ENTRYPOINT")) + command


@pytest.fixture(scope="module")
def deploy_database(tenantry_database_url: str) -> Iterator[str]:
    """A database of this module's own, on the test server, empty: what a first deploy meets."""
    with fresh_database(tenantry_database_url) as url:
        yield url


@pytest.fixture(scope="module")
def migrated(deploy_database: str, tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess:
    """compose's ``migrate`` service, run once on the empty database."""
    tmp_path = tmp_path_factory.mktemp("migrate")
    env = container_env(tmp_path, DATABASE_URL=deploy_database)
    return subprocess.run(in_container(service("migrate")["command"]), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_migrate_service_migrates_an_empty_database_then_every_tenant(migrated, deploy_database, tmp_path):
    assert migrated.returncode == 0, migrated.stderr
    env = container_env(tmp_path, DATABASE_URL=deploy_database)
    current = subprocess.run(in_container(["flask", "db", "current"]), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert current.returncode == 0 and "current: " in current.stdout, current.stderr
    _, _, rest = current.stdout.partition("current: ")
    revision, _, head = rest.strip().partition("  head: ")
    assert revision == head.strip(), current.stdout
    # A second deploy, with a tenant in the database: the same command, exit 0 again.
    created = subprocess.run(in_container(["flask", "tenants", "create", "deployed", "--name", "Deployed"]),
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    again = subprocess.run(in_container(service("migrate")["command"]), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    status = subprocess.run(in_container(["flask", "tenants", "status", "--json"]), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert json.loads(status.stdout)["behind"] == 0, status.stdout


def test_the_entrypoint_refuses_to_start_without_database_url(tmp_path):
    for value in (None, ""):
        env = container_env(tmp_path)
        if value is not None:
            env["DATABASE_URL"] = value
        result = subprocess.run(in_container(exec_form(instruction("CMD"))), cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert "DATABASE_URL must be set" in result.stderr, result.stderr
        assert "Starting gunicorn" not in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("pg_isready") is None, reason="no pg_isready (PostgreSQL client tools)")
def test_the_postgres_healthcheck_answers_for_a_running_server(tenantry_database_url):
    """compose's pg_isready check, pointed at the test server: -h/-p given again win over the file's."""
    url = make_url(tenantry_database_url)
    host = url.host or str(url.query.get("host"))
    argv = healthcheck_argv(service("postgres")["healthcheck"]["test"])
    assert argv[0] == "pg_isready"
    ok = subprocess.run([*argv, "-h", host, "-p", str(url.port or 5432)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    down = subprocess.run([*argv, "-h", "127.0.0.1", "-p", str(free_port())], capture_output=True, timeout=30)
    assert down.returncode != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(port: int, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, json.loads(raw) if raw else None


def workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def test_the_image_cmd_serves_checks_health_and_stops_gracefully(migrated, deploy_database, tmp_path):
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    env = container_env(tmp_path, DATABASE_URL=deploy_database, ADMIN_TOKEN=ADMIN_TOKEN, SECRET_KEY=SECRET_KEY,
                        PORT=str(port))
    log_path = tmp_path / "gunicorn.log"
    healthcheck = image_healthcheck()
    readiness = healthcheck_argv(service("app")["healthcheck"]["test"])

    def probe(argv: list[str]) -> int:
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=30).returncode

    with open(log_path, "wb") as log:
        # The ENTRYPOINT's `exec` makes gunicorn's master this very process.
        process = subprocess.Popen(in_container(exec_form(instruction("CMD"))), cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert probe(healthcheck) != 0  # nothing listens yet: the check must be able to fail
            deadline = time.monotonic() + 60
            while probe(healthcheck) != 0:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "gunicorn did not get healthy:\n" + log_path.read_text()
                time.sleep(0.2)
            assert probe(readiness) == 0, log_path.read_text()
            assert len(workers_of(process.pid)) == 2  # gunicorn.conf.py's default for WEB_CONCURRENCY

            status, body = request(port, "POST", "/v1/admin/tenants", ADMIN_TOKEN,
                                   {"slug": "served", "name": "Served", "plan": "free"})
            assert status == 201, body
            key = body["api_key"]["token"]
            status, body = request(port, "POST", "/v1/repositories", key,
                                   {"github_repo_id": 1, "owner": "octo", "name": "hello"})
            assert status == 201, body
            status, body = request(port, "GET", "/v1/repositories", key)
            assert status == 200 and [r["name"] for r in body["items"]] == ["hello"], body

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=40) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
            try:  # a worker outliving its master: the group this test started
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    log_text = log_path.read_text()
    assert "Handling signal: term" in log_text and "Shutting down: Master" in log_text, log_text
    assert "Traceback" not in log_text, log_text
    assert probe(healthcheck) != 0  # and the check notices it is gone
    # No control socket, and nothing else, written under $HOME.
    assert list((tmp_path / "home").iterdir()) == []


def test_the_shipped_workers_do_not_restart_together_under_even_load(migrated, deploy_database, tmp_path):
    """gunicorn.conf.py as shipped, 3 workers, 4,500 requests spread over them by the kernel:
    no worker is recycled (request-count recycling is off by default), so none of the
    pauses that 1,000 ± 100 caused when all workers reached their limit together."""
    import threading

    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    env = container_env(tmp_path, DATABASE_URL=deploy_database, ADMIN_TOKEN=ADMIN_TOKEN, SECRET_KEY=SECRET_KEY,
                        PORT=str(port), WEB_CONCURRENCY="3")
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(in_container(exec_form(instruction("CMD"))), cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while len(workers_of(process.pid)) < 3 or status_of(port, "/readyz") != 200:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "gunicorn did not get ready:\n" + log_path.read_text()
                time.sleep(0.2)
            before = sorted(workers_of(process.pid))
            latencies: list[float] = []
            statuses: list[int] = []

            def send(count: int) -> None:
                for _ in range(count):
                    started = time.monotonic()
                    statuses.append(status_of(port, "/healthz"))
                    latencies.append(time.monotonic() - started)

            threads = [threading.Thread(target=send, args=(750,)) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            after = sorted(workers_of(process.pid))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert len(statuses) == 4500 and set(statuses) == {200}
    assert after == before, "workers were replaced:\n" + log_path.read_text()[-2000:]
    assert max(latencies) < 1.0, max(latencies)

