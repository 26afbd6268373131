"""Many tenants at once: every row a request gets back belongs to the tenant that asked.

Repository names carry their tenant's slug, and ids collide across tenants (every
tenant has a repository 1), so a row served from the wrong schema shows at once.

- In process: dozens of threads, each with its own test client, interleave lists,
  reads, creates, updates and deletes of many tenants on one app (one connection pool,
  smaller than the number of threads). At the end each tenant holds exactly what its
  own successful writes left.
- Over loopback: gunicorn with several worker processes on the test database, driven
  by threads with http.client for a few seconds; then a suspension and a revocation
  made through one request apply to every worker's next request.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import SETTINGS
from app.testing import ADMIN_TOKEN, SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SEEDS = 3


class Soak:
    """What the threads found: wrong rows, unexpected statuses; and what they left behind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.problems: list[str] = []
        self.statuses: Counter[int] = Counter()
        self.created: dict[str, set[int]] = {}

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def saw(self, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1


def check_rows(soak: Soak, slug: str, rows: list[dict[str, Any]], where: str) -> None:
    for row in rows:
        if not row["name"].startswith(slug + "-"):
            soak.problem(f"{where}: tenant {slug} got {row['name']!r} (id {row['id']})")


# --- in process -------------------------------------------------------------------------


def test_dozens_of_threads_on_many_tenants_see_only_their_own_rows(app, make_tenant):
    rng = random.Random(20240611)
    tenants = [make_tenant(f"soak_{n}", plan="enterprise") for n in range(8)]
    seed_client = app.test_client()
    for tenant in tenants:
        for n in range(SEEDS):
            body = {"github_repo_id": n + 1, "owner": "octo", "name": f"{tenant.slug}-seed-{n}"}
            assert seed_client.post("/v1/repositories", json=body, headers=tenant.auth).status_code == 201
    soak = Soak()
    soak.created = {t.slug: set() for t in tenants}
    threads_n, rounds = 24, 25
    barrier = threading.Barrier(threads_n)

    def work(number: int) -> None:
        client = app.test_client()
        mine: dict[str, list[int]] = {t.slug: [] for t in tenants}
        rand = random.Random(rng.random() + number)
        barrier.wait()
        for i in range(rounds):
            tenant = rand.choice(tenants)
            slug, auth = tenant.slug, tenant.auth
            op = rand.choice(["list", "list", "get", "create", "create", "update", "delete", "account", "keys"])
            if op in {"update", "delete"} and not mine[slug]:
                op = "create"
            if op == "list":
                response = client.get("/v1/repositories?limit=200", headers=auth)
                if response.status_code == 200:
                    check_rows(soak, slug, response.json["items"], "list")
            elif op == "get":
                repo_id = rand.randint(1, SEEDS)  # every tenant has these ids, each its own row
                response = client.get(f"/v1/repositories/{repo_id}", headers=auth)
                if response.status_code == 200 and response.json["name"] != f"{slug}-seed-{repo_id - 1}":
                    soak.problem(f"get: tenant {slug} id {repo_id} is {response.json['name']!r}")
            elif op == "create":
                github_id = 1000 + number * 1000 + i
                body = {"github_repo_id": github_id, "owner": "octo", "name": f"{slug}-t{number}-{i}"}
                response = client.post("/v1/repositories", json=body, headers=auth)
                if response.status_code == 201:
                    check_rows(soak, slug, [response.json], "create")
                    mine[slug].append(response.json["id"])
            elif op == "update":
                repo_id = rand.choice(mine[slug])
                response = client.patch(f"/v1/repositories/{repo_id}", json={"enabled": rand.random() < 0.5},
                                        headers=auth)
                if response.status_code == 200:
                    check_rows(soak, slug, [response.json], "update")
            elif op == "delete":
                repo_id = mine[slug].pop(rand.randrange(len(mine[slug])))
                response = client.delete(f"/v1/repositories/{repo_id}", headers=auth)
            elif op == "account":
                response = client.get("/v1/tenant", headers=auth)
                if response.status_code == 200 and response.json["slug"] != slug:
                    soak.problem(f"account: tenant {slug} was told it is {response.json['slug']}")
            else:
                response = client.get("/v1/api-keys", headers=auth)
                prefix = tenant.token.split("_")[1]
                if response.status_code == 200 and [k["prefix"] for k in response.json["items"]] != [prefix]:
                    soak.problem(f"keys: tenant {slug} listed {response.json['items']}")
            soak.saw(response.status_code)
            if response.status_code != {"create": 201, "delete": 204}.get(op, 200):
                soak.problem(f"{op}: tenant {slug} got {response.status_code} {response.get_data(as_text=True)[:200]}")
        with soak.lock:
            for slug, ids in mine.items():
                soak.created[slug].update(ids)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not soak.problems, soak.problems[:20]
    assert sum(soak.statuses.values()) == threads_n * rounds
    # No lost or phantom write: each tenant holds its seeds and what its threads created and kept.
    for tenant in tenants:
        rows = seed_client.get("/v1/repositories?limit=200", headers=tenant.auth).json["items"]
        assert {r["id"] for r in rows} == set(range(1, SEEDS + 1)) | soak.created[tenant.slug], tenant.slug
        check_rows(soak, tenant.slug, rows, "final")
    assert not soak.problems, soak.problems[:20]


# --- gunicorn, several worker processes ---------------------------------------------------


class Http:
    """A tiny JSON client over loopback; one connection per request (gunicorn's sync workers close them)."""

    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid  # gunicorn's master

    def __call__(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            content_type = response.getheader("Content-Type", "")
        finally:
            conn.close()
        if response.status >= 400:
            assert content_type == "application/problem+json", (response.status, content_type, raw[:200])
        return response.status, json.loads(raw) if raw else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn(app, tenantry_database_url, tmp_path) -> Iterator[Http]:
    """``gunicorn -w 3 wsgi:app`` on the test database; stopped (and waited for) whatever happens."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
    env.update({
        "DATABASE_URL": tenantry_database_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "INSTANCE_PATH": str(tmp_path),
        "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "4",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "3", "--bind", f"127.0.0.1:{port}",
             "--timeout", "60", "--graceful-timeout", "5", "wsgi:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            client = Http(port, process.pid)
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if client("GET", "/readyz")[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "gunicorn did not get ready:\n" + log_path.read_text()
                time.sleep(0.1)
            yield client
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the master stops its workers
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=15)
            try:  # a worker outliving its master (it would notice, in time): the group this fixture started
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    log_text = log_path.read_text()
    assert "Traceback" not in log_text, log_text


def workers_of(gunicorn_pid: int) -> list[int]:
    children = Path(f"/proc/{gunicorn_pid}/task/{gunicorn_pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def test_gunicorn_workers_serve_each_tenant_only_its_own_rows(gunicorn):
    call = gunicorn
    assert len(workers_of(call.pid)) == 3
    tenants: dict[str, str] = {}
    for n in range(6):
        status, body = call("POST", "/v1/admin/tenants", ADMIN_TOKEN,
                            {"slug": f"gsoak_{n}", "name": f"G {n}", "plan": "enterprise"})
        assert status == 201, body
        tenants[body["tenant"]["slug"]] = body["api_key"]["token"]
        for i in range(2):
            status, body = call("POST", "/v1/repositories", tenants[f"gsoak_{n}"],
                                {"github_repo_id": i + 1, "owner": "octo", "name": f"gsoak_{n}-seed-{i}"})
            assert status == 201, body
    soak = Soak()
    stop = time.monotonic() + 3.0

    def work(number: int) -> None:
        rand = random.Random(number)
        i = 0
        while time.monotonic() < stop:
            i += 1
            slug = rand.choice(sorted(tenants))
            token = tenants[slug]
            try:
                op = rand.random()
                if op < 0.5:
                    status, body = call("GET", "/v1/repositories?limit=200", token)
                    if status == 200:
                        check_rows(soak, slug, body["items"], "list")
                elif op < 0.75:
                    repo_id = rand.randint(1, 2)
                    status, body = call("GET", f"/v1/repositories/{repo_id}", token)
                    if status == 200 and body["name"] != f"{slug}-seed-{repo_id - 1}":
                        soak.problem(f"get: {slug} id {repo_id} is {body['name']!r}")
                elif op < 0.9:
                    status, body = call("POST", "/v1/repositories", token, {
                        "github_repo_id": 10_000 + number * 10_000 + i, "owner": "octo", "name": f"{slug}-w{number}"})
                    if status == 201:
                        check_rows(soak, slug, [body], "create")
                        delete_status, _ = call("DELETE", f"/v1/repositories/{body['id']}", token)
                        if delete_status != 204:
                            soak.problem(f"delete: {slug} got {delete_status}")
                else:
                    status, body = call("GET", "/v1/tenant", token)
                    if status == 200 and body["slug"] != slug:
                        soak.problem(f"account: {slug} was told it is {body['slug']}")
            except (OSError, AssertionError) as exc:
                soak.problem(f"{slug}: {exc!r}")
                continue
            soak.saw(status)
            if status >= 300:
                soak.problem(f"{slug}: {status} {body}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not soak.problems, soak.problems[:20]
    assert sum(soak.statuses.values()) > 50, soak.statuses
    for slug, token in tenants.items():
        status, body = call("GET", "/v1/repositories", token)
        assert status == 200 and [r["name"] for r in body["items"]] == [f"{slug}-seed-0", f"{slug}-seed-1"]

    # A suspension and a revocation made through one worker hold in every worker from the next request.
    victim = "gsoak_0"
    status, spare = call("POST", "/v1/api-keys", tenants[victim], {"role": "viewer"})
    assert status == 201
    assert call("DELETE", f"/v1/api-keys/{spare['id']}", tenants[victim])[0] == 204
    assert call("PATCH", f"/v1/admin/tenants/{victim}", ADMIN_TOKEN, {"status": "suspended"})[0] == 200
    results = [(call("GET", "/v1/tenant", tenants[victim])[0], call("GET", "/v1/tenant", spare["token"])[0],
                call("GET", "/v1/tenant", tenants["gsoak_1"])[0]) for _ in range(12)]
    assert set(results) == {(403, 401, 200)}, Counter(results)
    assert call("PATCH", f"/v1/admin/tenants/{victim}", ADMIN_TOKEN, {"status": "active"})[0] == 200
    assert {call("GET", "/v1/tenant", tenants[victim])[0] for _ in range(12)} == {200}
