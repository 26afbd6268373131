"""The image and the compose stack, run for real with podman (there is no Docker engine here).

Helpers, and the session fixtures that conftest.py beside this file makes available to
every module in this directory (import helpers from here: ``from podman_stack import ...``):

- ``images``: the base image (``../shared/containers/base-image.sh``: Debian bookworm and
  Python 3.11 from Debian's archive, as no registry is reachable), the stand-ins for the
  service images (postgres from ``../shared/containers``; pgbouncer, nginx and redis from
  ``.ci/containers``: the shared pgbouncer ignores the timeouts compose.yaml sets) and
  the API image itself (``podman build --format docker``, which keeps the HEALTHCHECK).
- ``stack``: compose.yaml with ``.ci/compose.local.yaml`` brought up by podman-compose
  under a project name of its own, in stages (podman-compose does not wait for
  ``condition: service_healthy``, and without systemd a health status changes only when
  ``podman healthcheck run`` asks), the proxy published on a free host port. It gives
  the base URL, the admin token and ``psql()`` for SQL in the stack's PostgreSQL, and
  tears everything down afterwards (containers, volumes, network), failure or not.

Without podman (or podman-compose, or ../shared/containers) these tests skip, naming
what is missing; under CI (``CI`` set) they fail instead: .ci/run installs everything.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "containers"
LOCAL_COMPOSE = ROOT / ".ci" / "compose.local.yaml"

BASE_IMAGE = "localhost/bookworm-python:latest"
APP_IMAGE = "localhost/tenantry:local"
#: Stand-in images: name -> build context. The names are the ones .ci/compose.local.yaml uses.
STAND_INS = {
    "localhost/tenantry-postgres:stand-in": SHARED / "postgres",
    "localhost/tenantry-pgbouncer:stand-in": ROOT / ".ci" / "containers" / "pgbouncer",
    "localhost/tenantry-nginx:stand-in": ROOT / ".ci" / "containers" / "nginx",
    "localhost/tenantry-redis:stand-in": ROOT / ".ci" / "containers" / "redis",
}


# --- what is needed, and where it is -----------------------------------------------


def missing(what: str) -> None:
    """Skip, naming what is missing; in CI, fail: .ci/run must have installed it."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}: CI must run the container tests (.ci/run installs what they need)")
    pytest.skip(what)


def podman_compose_path() -> str | None:
    """PODMAN_COMPOSE, else .venv-compose/bin/podman-compose (.ci/run makes it), else PATH."""
    candidates = [os.environ.get("PODMAN_COMPOSE"), str(ROOT / ".venv-compose" / "bin" / "podman-compose"),
                  shutil.which("podman-compose")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    conf = SHARED / "containers.conf"
    if "CONTAINERS_CONF" not in env and conf.exists():
        # runc and rlimits these machines allow (../shared/containers/README.md).
        env["CONTAINERS_CONF"] = str(conf)
    return env


def podman(*args: str, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                            env=env or podman_env())
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def free_network() -> str:
    """The first three octets of a /24 in 10.89.200-254 that no podman network has.

    .ci/compose.local.yaml gives the stack's network this subnet, and its services fixed
    addresses on it, which each finds the others by in /etc/hosts instead of podman's DNS.
    """
    names = podman("network", "ls", "--quiet").stdout.split()
    networks = json.loads(podman("network", "inspect", *names).stdout) if names else []
    used = [ipaddress.ip_network(subnet["subnet"]) for network in networks for subnet in network.get("subnets") or []]
    for third in range(200, 255):
        if not any(ipaddress.ip_network(f"10.89.{third}.0/24").overlaps(other) for other in used):
            return f"10.89.{third}"
    raise AssertionError(f"no free 10.89.200-254 subnet for the stack's network; podman has {sorted(map(str, used))}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(base_url: str, method: str, path: str, token: str | None = None, body: Any = None,
            timeout: float = 30) -> tuple[int, Any]:
    """One HTTP request; (status, parsed JSON body or None)."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return response.status, parsed


def wait_for(what: str, probe, timeout: float, interval: float = 0.5, diagnose=None) -> None:
    """Call ``probe`` until it returns true; fail after ``timeout`` seconds with ``diagnose()``."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            detail = diagnose() if diagnose else ""
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{detail}")
        time.sleep(interval)


def logs(container: str, tail: int = 60, chars: int = 4000) -> str:
    result = podman("logs", "--tail", str(tail), container, check=False, timeout=30)
    return f"--- podman logs {container} ---\n{result.stdout[-chars:]}{result.stderr[-chars:]}"


def running(container: str) -> bool:
    result = podman("inspect", "--format", "{{.State.Running}}", container, check=False, timeout=30)
    return result.stdout.strip() == "true"


def wait_healthy(container: str, timeout: float = 90) -> None:
    """Run the container's own health check until it passes (nothing else runs it here)."""
    def probe() -> bool:
        if not running(container):
            raise AssertionError(f"{container} stopped before it was healthy\n{logs(container)}")
        return podman("healthcheck", "run", container, check=False, timeout=60).returncode == 0

    wait_for(f"{container} healthy", probe, timeout, diagnose=lambda: logs(container))


# --- images ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def podman_ready() -> None:
    if shutil.which("podman") is None:
        missing("podman is not installed (apt-get install podman buildah runc mmdebstrap)")
    if not (SHARED / "base-image.sh").exists():
        missing(f"no {SHARED.name}/base-image.sh beside the repository (../shared/containers)")
    if shutil.which("mmdebstrap") is None and podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        missing(f"mmdebstrap is not installed and there is no {BASE_IMAGE} to build on")


@dataclass
class Images:
    app: str
    stand_ins: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


def image_id(name: str) -> str | None:
    result = podman("image", "inspect", "--format", "{{.Id}}", name, check=False, timeout=60)
    return result.stdout.strip() or None if result.returncode == 0 else None


@pytest.fixture(scope="session")
def images(podman_ready: None) -> Images:
    """The base image (once per machine), then the stand-ins and the API image, in parallel."""
    seconds: dict[str, float] = {}
    started = time.monotonic()
    base = subprocess.run(["bash", str(SHARED / "base-image.sh")], capture_output=True, text=True,
                          timeout=600, env=podman_env())
    assert base.returncode == 0, f"base-image.sh failed:\n{base.stdout[-2000:]}{base.stderr[-3000:]}"
    seconds["base"] = time.monotonic() - started

    builds = {APP_IMAGE: ["build", "--format", "docker", "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
                          "-t", APP_IMAGE, str(ROOT)]}
    for name, context in STAND_INS.items():
        builds[name] = ["build", "--format", "docker", "-t", name, str(context)]
    before = {name: image_id(name) for name in builds}
    with tempfile.TemporaryDirectory(prefix="tenantry-builds-") as log_dir:
        running_builds = {}
        for name, args in builds.items():
            log = open(Path(log_dir) / (name.replace("/", "_").replace(":", "_") + ".log"), "w+")
            running_builds[name] = (subprocess.Popen(["podman", *args], stdout=log, stderr=subprocess.STDOUT,
                                                     env=podman_env()), log, time.monotonic())
        failures = []
        for name, (process, log, began) in running_builds.items():
            try:
                code = process.wait(timeout=900)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            seconds[name] = time.monotonic() - began
            log.seek(0)
            if code != 0:
                failures.append(f"podman build {name} exited {code}:\n{log.read()[-3000:]}")
            log.close()
    assert not failures, "\n".join(failures)
    # The image each tag named before, when a build replaced it (not the cached layers the
    # next build reuses; nor an image a container still uses: rmi without --force).
    for name, old in before.items():
        if old and image_id(name) != old:
            podman("rmi", old, check=False, timeout=120)
    return Images(app=APP_IMAGE, stand_ins=list(STAND_INS), seconds=seconds)


# --- the compose stack ----------------------------------------------------------------


@dataclass
class Stack:
    """A running compose stack: what the tests (and the attack checks) get."""

    project: str
    base_url: str
    admin_token: str
    postgres_password: str
    env: dict[str, str]
    compose_cmd: list[str]

    def container(self, service: str) -> str:
        """The container podman-compose named for ``service`` (one replica)."""
        return f"{self.project}_{service}_1"

    def compose(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.compose_cmd, *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
        return result

    def psql(self, sql: str, timeout: float = 60, database: str = "tenantry") -> str:
        """Run ``sql`` in the stack's PostgreSQL (database tenantry unless told, as tenantry); its rows, unaligned."""
        result = podman("exec", self.container("postgres"), "psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1",
                        "-U", "tenantry", "-d", database, "-At", "-c", sql, timeout=timeout, check=False)
        if result.returncode != 0:
            raise AssertionError(f"psql exited {result.returncode}: {result.stderr}")
        return result.stdout.strip()

    def request(self, method: str, path: str, token: str | None = None, body: Any = None,
                timeout: float = 30) -> tuple[int, Any]:
        return request(self.base_url, method, path, token, body, timeout)


def teardown(stack: Stack) -> None:
    """Everything the project created, even if podman-compose down leaves something behind."""
    stack.compose("down", "--volumes", "-t", "10", check=False, timeout=300)
    label = f"label=io.podman.compose.project={stack.project}"
    ids = podman("ps", "-a", "-q", "--filter", label, check=False).stdout.split()
    if ids:
        podman("rm", "-f", "-t", "0", *ids, check=False)
    volumes = podman("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
    if volumes:
        podman("volume", "rm", "-f", *volumes, check=False)
    podman("network", "rm", "-f", f"{stack.project}_default", check=False)
    podman("pod", "rm", "-f", f"pod_{stack.project}", check=False)



def wait_until_ready(stack: Stack, what: str) -> None:
    """Until /readyz answers 200 through the proxy (60 s), else fail with both services' logs."""

    def ready() -> bool:
        try:
            return stack.request("GET", "/readyz", timeout=5)[0] == 200
        except OSError:
            return False

    wait_for(what, ready, 60, diagnose=lambda: logs(stack.container("proxy")) + logs(stack.container("app")))

@pytest.fixture(scope="session")
def stack(images: Images) -> Iterator[Stack]:
    """compose.yaml (+ .ci/compose.local.yaml) up, in stages; torn down at the end of the session."""
    compose = podman_compose_path()
    if compose is None:
        missing("podman-compose is not installed (.ci/run installs it into .venv-compose from "
                ".ci/podman-compose.lock)")
    project = f"tenantry-ci-{secrets.token_hex(4)}"
    port = free_port()
    env = podman_env()
    for name in ("WEB_CONCURRENCY", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"):
        env.pop(name, None)
    admin_token = secrets.token_urlsafe(24)
    postgres_password = secrets.token_hex(16)  # goes into URLs: letters and digits only
    env.update(POSTGRES_PASSWORD=postgres_password, ADMIN_TOKEN=admin_token, TENANTRY_PORT=str(port),
               SECRET_KEY=secrets.token_urlsafe(32), TENANTRY_CI_NET=free_network())
    # No pod: in one, every container would share one network namespace, and app and
    # proxy both listen on 8000.
    cmd = [compose, "--in-pod", "false", "-p", project, "-f", str(ROOT / "compose.yaml"), "-f", str(LOCAL_COMPOSE)]
    stack = Stack(project=project, base_url=f"http://127.0.0.1:{port}", admin_token=admin_token,
                  postgres_password=postgres_password, env=env, compose_cmd=cmd)
    try:
        # The images exist (fixture images): nothing is built or pulled here.
        stack.compose("up", "-d", "--no-build", "postgres", "redis")
        wait_healthy(stack.container("postgres"))
        wait_healthy(stack.container("redis"))
        stack.compose("up", "-d", "--no-build", "--no-deps", "pgbouncer")
        wait_healthy(stack.container("pgbouncer"))
        stack.compose("up", "-d", "--no-build", "--no-deps", "migrate")
        exit_code = podman("wait", stack.container("migrate"), timeout=300).stdout.strip()
        assert exit_code == "0", f"migrate exited {exit_code}\n{logs(stack.container('migrate'))}"
        stack.compose("up", "-d", "--no-build", "--no-deps", "app")
        wait_healthy(stack.container("app"))
        stack.compose("up", "-d", "--no-build", "--no-deps", "proxy")
        wait_healthy(stack.container("proxy"))

        wait_until_ready(stack, f"GET {stack.base_url}/readyz through the proxy")
        yield stack
    finally:
        teardown(stack)
