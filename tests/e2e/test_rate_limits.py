"""Per-tenant rate limits from the plan, through HTTP: 429 with Retry-After, keyed by tenant."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy import text

from app.models.public import Tenant
from app.tenancy import api_keys
from app.testing import assert_problem
from tests.stack import REDIS_URL


def get(client, tenant_or_token, path: str = "/v1/repositories"):
    token = tenant_or_token if isinstance(tenant_or_token, str) else tenant_or_token.token
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def assert_rate_limited(response, per_minute: int) -> int:
    problem = assert_problem(response, 429, "too-many-requests")
    assert f"{per_minute} requests per minute" in problem["detail"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


def issue_key(session_factory, tenant, role: str) -> str:
    with session_factory() as session:
        issued = api_keys.issue_api_key(session, session.get(Tenant, tenant.tenant_id), role=role)
        session.commit()
    return issued.token


def test_over_the_plan_limit_is_429_with_retry_after_and_other_tenants_go_on(
    client, make_plan, make_tenant
):
    plan = make_plan(rate_limit_per_minute=3)
    busy, quiet = make_tenant(plan=plan), make_tenant(plan=plan)
    for _ in range(3):
        assert get(client, busy).status_code == 200
    assert_rate_limited(get(client, busy), 3)
    assert_rate_limited(get(client, busy), 3)
    # Same client, same address, same plan: another tenant has a budget of its own.
    for _ in range(3):
        assert get(client, quiet).status_code == 200
    assert_rate_limited(get(client, quiet), 3)


def test_the_budget_is_the_tenants_across_keys_and_endpoints(client, make_plan, make_tenant, session_factory):
    t = make_tenant(plan=make_plan(rate_limit_per_minute=4))
    viewer = issue_key(session_factory, t, "viewer")
    assert get(client, t).status_code == 200
    assert client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"},
                       headers=t.auth).status_code == 201
    assert get(client, viewer, "/v1/tenant").status_code == 200
    assert get(client, viewer, "/v1/repositories/1").status_code == 200
    assert_rate_limited(get(client, viewer, "/v1/tenant"), 4)
    assert_rate_limited(get(client, t, "/v1/repositories/1"), 4)


def test_a_limited_request_does_nothing(client, make_plan, make_tenant, engine):
    t = make_tenant(plan=make_plan(rate_limit_per_minute=1))
    assert get(client, t).status_code == 200
    refused = client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"},
                          headers=t.auth)
    assert_rate_limited(refused, 1)
    with engine.connect() as conn:
        assert conn.execute(text(f'SELECT count(*) FROM "{t.schema_name}".repositories')).scalar() == 0


def test_plan_changes_apply_at_once_and_null_is_unlimited(client, admin_client, make_plan, make_tenant):
    plan = make_plan(rate_limit_per_minute=2)
    t = make_tenant(plan=plan)
    for _ in range(2):
        assert get(client, t).status_code == 200
    assert_rate_limited(get(client, t), 2)
    assert admin_client.patch(f"/v1/admin/plans/{plan}", json={"rate_limit_per_minute": 5}).status_code == 200
    assert get(client, t).status_code == 200
    assert admin_client.patch(f"/v1/admin/plans/{plan}", json={"rate_limit_per_minute": None}).status_code == 200
    for _ in range(20):
        assert get(client, t).status_code == 200


def test_the_admin_api_is_not_counted_against_tenants(admin_client, client, make_plan, make_tenant):
    t = make_tenant(plan=make_plan(rate_limit_per_minute=2))
    for _ in range(5):
        assert admin_client.get(f"/v1/admin/tenants/{t.slug}").status_code == 200
    assert get(client, t).status_code == 200
    assert get(client, t).status_code == 200
    assert_rate_limited(get(client, t), 2)


def test_in_memory_counters_are_per_process(make_app, make_plan, make_tenant):
    """Two apps stand for two worker processes: with memory:// each counts on its own."""
    t = make_tenant(plan=make_plan(rate_limit_per_minute=2))
    first, second = make_app().test_client(), make_app().test_client()
    for _ in range(2):
        assert get(first, t).status_code == 200
    assert_rate_limited(get(first, t), 2)
    assert get(second, t).status_code == 200


def logged(caplog, event: str) -> bool:
    """Whether a record with this ``event`` was logged during the test."""
    return any(getattr(record, "event", None) == event for record in caplog.records)



def test_redis_counters_are_shared_by_every_process(make_app, make_plan, make_tenant, redis_prefix):
    t, other = (make_tenant(plan=make_plan(rate_limit_per_minute=3)) for _ in range(2))
    settings = {"RATELIMIT_STORAGE_URI": REDIS_URL, "RATELIMIT_KEY_PREFIX": redis_prefix}
    first, second = make_app(**settings).test_client(), make_app(**settings).test_client()
    assert get(first, t).status_code == 200
    assert get(second, t).status_code == 200
    assert get(first, t).status_code == 200
    assert_rate_limited(get(second, t), 3)
    assert_rate_limited(get(first, t), 3)
    assert get(second, other).status_code == 200
    import redis

    stored = list(redis.Redis.from_url(REDIS_URL).scan_iter(match=f"*{redis_prefix}*"))
    assert any(f"tenant-{t.tenant_id}".encode() in key for key in stored), stored


def test_when_redis_is_down_limits_fall_back_to_memory_instead_of_failing(make_app, make_plan, make_tenant, caplog):
    t = make_tenant(plan=make_plan(rate_limit_per_minute=2))
    c = make_app(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0").test_client()  # nothing listens on port 1
    assert get(c, t).status_code == 200
    assert get(c, t).status_code == 200
    assert_rate_limited(get(c, t), 2)
    assert logged(caplog, "ratelimit.storage_down")


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter"])
def test_other_strategies_hold_the_same_budget(make_app, make_plan, make_tenant, strategy):
    t = make_tenant(plan=make_plan(rate_limit_per_minute=2))
    c = make_app(RATELIMIT_STRATEGY=strategy).test_client()
    assert get(c, t).status_code == 200
    assert get(c, t).status_code == 200
    assert_rate_limited(get(c, t), 2)


def test_an_unknown_strategy_stops_startup(make_app):
    with pytest.raises(ValueError, match="RATELIMIT_STRATEGY"):
        make_app(RATELIMIT_STRATEGY="token-bucket")


class _Outage:
    """A TCP relay to the local Redis that can be cut and restored on the same port: an outage to order."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.links: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", 6379))
            self.links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def cut(self) -> None:
        self.up = False
        for link in self.links:
            try:
                link.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.links.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_counting_falls_back_to_memory_during_an_outage_and_returns_to_redis_after(redis_prefix, caplog):
    import redis

    from app.api.ratelimit import TenantRateLimiter

    outage, limiter = _Outage(), None
    try:
        limiter = TenantRateLimiter(f"redis://127.0.0.1:{outage.port}/0", prefix=redis_prefix)
        assert limiter.hit(7, 5) is None  # counted in Redis
        outage.cut()
        assert limiter.hit(7, 5) is None  # Redis gone: counted in memory, the request goes on
        assert logged(caplog, "ratelimit.storage_down")
        outage.restore()
        time.sleep(1.1)  # the first retry comes after 1 s
        assert limiter.hit(7, 5) is None
        assert logged(caplog, "ratelimit.storage_up")
        # Back in Redis: its counter went on from 1 (the hit during the outage was counted in memory).
        stored = redis.Redis.from_url(REDIS_URL)
        [key] = list(stored.scan_iter(match=f"*{redis_prefix}*tenant-7*"))
        assert int(stored.get(key)) == 2
        stored.close()
    finally:
        if limiter is not None:
            limiter.storage.storage.connection_pool.disconnect()  # limits' RedisStorage: its redis client
        outage.close()
