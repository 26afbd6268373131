"""Plan quotas on repository creation, through HTTP: the limit holds, also under concurrency."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from werkzeug.serving import make_server

from app.tenancy.locks import lock_tenant, lock_tenant_quota
from app.testing import assert_problem


def repo(github_repo_id: int) -> dict:
    return {"github_repo_id": github_repo_id, "owner": "octo", "name": f"r{github_repo_id}"}


def create(client, tenant, github_repo_id: int):
    return client.post("/v1/repositories", json=repo(github_repo_id), headers=tenant.auth)


def count_rows(engine, tenant, table: str = "repositories") -> int:
    with engine.connect() as conn:
        return conn.execute(text(f'SELECT count(*) FROM "{tenant.schema_name}".{table}')).scalar()


def assert_quota_exceeded(response, limit: int, usage: int) -> None:
    problem = assert_problem(response, 403, "quota-exceeded")
    assert (problem["quota"], problem["limit"], problem["usage"]) == ("repositories", limit, usage)
    assert str(limit) in problem["detail"]


def test_creating_beyond_max_repositories_is_403_with_the_limit(client, make_plan, make_tenant, engine):
    t = make_tenant(plan=make_plan(max_repositories=3))
    for i in range(3):
        assert create(client, t, i + 1).status_code == 201
    assert_quota_exceeded(create(client, t, 99), limit=3, usage=3)
    assert count_rows(engine, t) == 3
    # The refused create left no audit event either: it rolled back whole.
    assert count_rows(engine, t, "audit_events") == 3


def test_the_free_plan_allows_five(client, tenant):
    for i in range(5):
        assert create(client, tenant, i + 1).status_code == 201
    assert_quota_exceeded(create(client, tenant, 6), limit=5, usage=5)


def test_a_zero_quota_refuses_the_first_and_an_unlimited_one_refuses_none(client, make_plan, make_tenant):
    none_allowed = make_tenant(plan=make_plan(max_repositories=0))
    assert_quota_exceeded(create(client, none_allowed, 1), limit=0, usage=0)
    unlimited = make_tenant(plan=make_plan(max_repositories=None))
    for i in range(8):  # more than the free plan allows
        assert create(client, unlimited, i + 1).status_code == 201


def test_usage_is_counted_per_tenant(client, make_plan, make_tenant):
    plan = make_plan(max_repositories=1)
    a, b = make_tenant(plan=plan), make_tenant(plan=plan)
    assert create(client, a, 1).status_code == 201
    assert create(client, b, 1).status_code == 201
    assert_quota_exceeded(create(client, a, 2), limit=1, usage=1)
    assert_quota_exceeded(create(client, b, 2), limit=1, usage=1)


def test_a_downgrade_below_usage_keeps_the_rows_and_blocks_creates_until_under(
    client, admin_client, make_plan, make_tenant
):
    plan = make_plan(max_repositories=5)
    t = make_tenant(plan=plan)
    ids = [create(client, t, i + 1).json["id"] for i in range(3)]
    assert admin_client.patch(f"/v1/admin/plans/{plan}", json={"max_repositories": 1}).status_code == 200
    assert len(client.get("/v1/repositories", headers=t.auth).json["items"]) == 3
    assert_quota_exceeded(create(client, t, 10), limit=1, usage=3)
    for used_after in (2, 1):
        assert client.delete(f"/v1/repositories/{ids.pop()}", headers=t.auth).status_code == 204
        assert_quota_exceeded(create(client, t, 10), limit=1, usage=used_after)
    assert client.delete(f"/v1/repositories/{ids.pop()}", headers=t.auth).status_code == 204
    assert create(client, t, 10).status_code == 201
    assert_quota_exceeded(create(client, t, 11), limit=1, usage=1)
    # An upgrade applies at once too.
    admin_client.patch(f"/v1/admin/plans/{plan}", json={"max_repositories": 2})
    assert create(client, t, 11).status_code == 201


@contextmanager
def served(app) -> Iterator[str]:
    """The app on a real threaded HTTP server on a free loopback port; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def http_post(url: str, token: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def test_twenty_parallel_creates_for_the_last_slot_give_exactly_one_201(make_app, make_plan, make_tenant, engine):
    app = make_app(DB_POOL_SIZE=5, DB_MAX_OVERFLOW=25)  # room for 20 requests waiting at once
    t = make_tenant(plan=make_plan(max_repositories=3))
    results: list[tuple[int, dict]] = []
    with served(app) as base:
        for i in range(2):
            assert http_post(f"{base}/v1/repositories", t.token, repo(i + 1))[0] == 201
        barrier = threading.Barrier(20)

        def attempt(n: int) -> None:
            barrier.wait()
            results.append(http_post(f"{base}/v1/repositories", t.token, repo(100 + n)))

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(20)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(90)
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [403] * 19, statuses
    for status, body in results:
        if status == 403:
            assert body["type"].endswith("/quota-exceeded")
            assert (body["limit"], body["usage"]) == (3, 3)
    assert count_rows(engine, t) == 3


def test_a_create_waits_for_the_quota_lock_and_not_for_the_migration_lock(app, engine, make_plan, make_tenant):
    """The quota lock is taken, and lives in a classid of its own (not the provisioning/fan-out one)."""
    t = make_tenant(plan=make_plan(max_repositories=5))
    outcome: list[int] = []

    def attempt(github_repo_id: int) -> None:
        outcome.append(create(app.test_client(), t, github_repo_id).status_code)

    with engine.connect() as holder:
        lock_tenant(holder, t.slug)  # what provisioning and the fan-out hold on the tenant
        free = threading.Thread(target=attempt, args=(1,))
        free.start()
        free.join(15)
        assert not free.is_alive(), "a create queued behind the tenant's migration lock"
        assert outcome == [201]
        holder.rollback()

        lock_tenant_quota(holder, t.slug)
        held = threading.Thread(target=attempt, args=(2,))
        held.start()
        held.join(1.0)
        assert held.is_alive(), "a create went ahead while another transaction held the quota lock"
        holder.rollback()
    held.join(15)
    assert outcome == [201, 201]
