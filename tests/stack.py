"""The production stack on loopback for e2e tests: gunicorn as shipped, nginx in front.

``gunicorn(...)`` runs ``gunicorn -c gunicorn.conf.py wsgi:app`` (the image's CMD) on a
free port; ``nginx(...)`` runs Debian's nginx with deploy/nginx.conf, rewriting only its
``listen`` line, its upstream ``server`` line and its /tmp paths. Both are stopped, and
waited for, whatever happens; a test that needs them skips when nginx is not installed
(``.ci/run`` installs it).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.config import SETTINGS
from app.testing import ADMIN_TOKEN, SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx.conf"


@dataclass(frozen=True)
class Server:
    port: int
    pid: int
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_of(port: int, path: str, timeout: float = 5) -> int:
    """The status of ``GET path``, or 0 when nothing answers."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()
    except OSError:
        return 0


#: The local Redis CI starts (the rate limiter's and usage's shared storage in the tests).
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    """Whether a Redis answers PING there (.ci/run starts one on 127.0.0.1:6379)."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stop(process: subprocess.Popen, grace: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # anything left of the group this harness started
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=15)


def _wait_until(ready, process: subprocess.Popen, log: Path, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert process.poll() is None, f"{what} exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} did not get ready:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


@contextmanager
def gunicorn(database_url: str, tmp_path: Path, ready: str = "/readyz", root: Path = ROOT,
             **settings: str) -> Iterator[Server]:
    """gunicorn as the image runs it, on ``database_url``, once ``ready`` answers 200;
    ``settings`` are extra environment. ``root``: the project to serve (a copy, first on
    the path), this one by default."""
    port = free_port()
    ours = {s.env for s in SETTINGS} | {"PORT", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"}
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("GUNICORN_")}
    env.update({
        "DATABASE_URL": database_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TENANT_ROLES": os.environ.get("TEST_TENANT_ROLES", "auto"),
    })
    if root != ROOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env.update(settings)
    log = tmp_path / f"gunicorn-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                   cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_until(lambda: status_of(port, ready) == 200, process, log, "gunicorn")
        yield Server(port, process.pid, log)
    finally:
        _stop(process)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


@contextmanager
def nginx(upstream: Server) -> Iterator[Server]:
    """deploy/nginx.conf in front of ``upstream``, listening on a free loopback port."""
    binary = nginx_binary()
    assert binary, "nginx is not installed (apt-get install nginx-light)"
    port = free_port()
    # A directory of its own that nginx's unprivileged workers can enter (pytest's tmp_path cannot).
    scratch = Path(tempfile.mkdtemp(prefix="tenantry-nginx-"))
    scratch.chmod(0o755)
    conf = NGINX_CONF.read_text()
    for old, new in (("listen 8000 default_server;", f"listen 127.0.0.1:{port} default_server;"),
                     ("server app:8000;", f"server 127.0.0.1:{upstream.port};"),
                     ("/tmp/nginx", f"{scratch}/nginx")):
        assert old in conf, f"deploy/nginx.conf no longer has {old!r}"
        conf = conf.replace(old, new)
    (scratch / "nginx.conf").write_text(conf)
    log = scratch / "nginx.log"
    argv = [binary, "-p", str(scratch), "-c", str(scratch / "nginx.conf"), "-e", "stderr", "-g", "daemon off;"]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until(lambda: status_of(port, "/healthz") == 200, process, log, "nginx", seconds=20)
        yield Server(port, process.pid, log)
    finally:
        _stop(process, grace=10)
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def serve_in_thread(app) -> Iterator[str]:  # noqa: ANN001 - a Flask app
    """``app`` served by werkzeug's threaded server on a free loopback port, in this process; its base URL.

    For tests that need real HTTP against the app they already hold (its database, its
    fixtures): shut down and joined on the way out.
    """
    import threading

    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - one line per request: no
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="tenantry-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
