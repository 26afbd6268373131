"""Usage counted in Redis (USAGE_STORAGE_URI=redis://...), through HTTP on real Redis and PostgreSQL.

The monthly limit exact across worker processes, nothing served lost to a killed worker,
totals seeded from PostgreSQL, idempotent flushes, and an outage served from memory.
Each test counts under a key prefix of its own and deletes its keys. Skipped when no
Redis answers on 127.0.0.1:6379 (CI starts one).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import psutil
import pytest
import redis
from sqlalchemy import text

from app.config import ConfigError, from_env
from app.tenancy import usage
from app.testing import assert_problem
from tests.e2e.test_rate_limits import _Outage, logged
from tests.e2e.test_usage_processes import counted
from tests.stack import REDIS_URL, gunicorn


@pytest.fixture
def prefix(redis_prefix):
    """The test's own key prefix in the local Redis (``redis_prefix``, tests/e2e/conftest.py)."""
    return redis_prefix


@pytest.fixture
def in_redis(app, engine, make_app, prefix, monkeypatch):
    """``in_redis(url=REDIS_URL, **settings)``: an app whose process counts in Redis under the test's prefix.

    usage.configure is per process and its first call wins (the session's app, in
    memory): the session's flusher is stopped (writing what it holds) and a fresh
    configuration and buffer swapped in; stopped and written again after the test. No
    flush runs by itself meanwhile (USAGE_FLUSH_SECONDS=3600): the test flushes.
    """
    usage.shutdown()
    monkeypatch.setattr(usage, "_settings", usage._Settings())  # noqa: SLF001
    monkeypatch.setattr(usage, "_BUFFER", usage.UsageBuffer())  # noqa: SLF001
    made = []

    def factory(url: str = REDIS_URL, **settings):
        settings.setdefault("USAGE_FLUSH_SECONDS", 3600)
        made.append(make_app(USAGE_STORAGE_URI=url, USAGE_KEY_PREFIX=prefix, **settings))
        return made[-1]

    yield factory
    configured = usage._settings  # noqa: SLF001
    try:
        usage.shutdown()
    finally:
        if configured.engine is not None:
            configured.engine.dispose()
        for application in made:
            if application.extensions["tenantry_usage_counts"] is not None:
                application.extensions["tenantry_usage_counts"].close()


def store() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def month() -> str:
    return usage.format_period(usage.period_of(usage.now()))


def total(prefix: str, tenant) -> int | None:
    client = store()
    try:
        value = client.hget(f"{prefix}:{month()}", f"{tenant.tenant_id}:api_requests")
    finally:
        client.close()
    return None if value is None else int(value)


def dirty(prefix: str) -> dict[bytes, bytes]:
    client = store()
    try:
        return client.hgetall(f"{prefix}:dirty")
    finally:
        client.close()


def hammer(port: int, token: str, threads: int, per_thread: int, keep_alive: bool = True) -> Counter:
    """Statuses (and problem types of 429s) of requests from ``threads`` clients.

    ``keep_alive``: one connection per client; else one per request (each accepted by any worker).
    """
    outcomes: Counter = Counter()
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(per_thread):
            if not keep_alive:
                conn.close()
            conn.request("GET", "/v1/tenant", headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            body = response.read()
            outcome = response.status
            if outcome == 429:
                outcome = (429, json.loads(body)["type"].rsplit("/", 1)[-1])
            with lock:
                outcomes[outcome] += 1
        conn.close()

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes


#: What gunicorn's master logs at start when several workers count usage in memory.
WARNING = "monthly usage is counted per worker process"


def test_the_monthly_limit_is_exact_across_worker_processes(make_plan, make_tenant, engine,
                                                           tenantry_database_url, tmp_path, prefix):
    """304 requests from 8 clients over 3 workers against a limit of 100: exactly 100 served.

    A connection per request, as in the memory-mode control below (which shows the load spreads over workers).
    """
    t = make_tenant(plan=make_plan(max_api_requests_per_month=100))
    with gunicorn(tenantry_database_url, tmp_path, WEB_CONCURRENCY="3", GUNICORN_THREADS="4",
                  USAGE_STORAGE_URI=REDIS_URL, USAGE_KEY_PREFIX=prefix, USAGE_FLUSH_SECONDS="1") as server:
        outcomes = hammer(server.port, t.token, threads=8, per_thread=38, keep_alive=False)
        workers = psutil.Process(server.pid).children()
    assert len(workers) == 3
    assert outcomes == {200: 100, (429, "quota-exceeded"): 204}, outcomes
    assert total(prefix, t) == 100
    assert counted(engine, t) == 100  # flushed while serving, and by each worker's graceful stop
    assert dirty(prefix) == {}
    assert WARNING not in server.log.read_text()


def test_memory_mode_lets_more_through_across_worker_processes(make_plan, make_tenant,
                                                               tenantry_database_url, tmp_path):
    """The control: each worker learns the others' counts only after flushes (none within this test).

    A connection per request, so that more than one worker serves (8 keep-alive
    connections may all land on one worker, which alone holds the limit exactly).
    """
    t = make_tenant(plan=make_plan(max_api_requests_per_month=100))
    with gunicorn(tenantry_database_url, tmp_path, WEB_CONCURRENCY="3", GUNICORN_THREADS="4",
                  USAGE_FLUSH_SECONDS="60") as server:
        outcomes = hammer(server.port, t.token, threads=8, per_thread=38, keep_alive=False)
    assert outcomes[200] > 100, outcomes
    assert WARNING in server.log.read_text()  # gunicorn's master said so at start


def test_a_killed_worker_loses_nothing_it_served(make_plan, make_tenant, engine, tenantry_database_url,
                                                 tmp_path, prefix, in_redis):
    t = make_tenant(plan=make_plan())
    with gunicorn(tenantry_database_url, tmp_path, WEB_CONCURRENCY="2", GUNICORN_THREADS="2",
                  USAGE_STORAGE_URI=REDIS_URL, USAGE_KEY_PREFIX=prefix,
                  USAGE_FLUSH_SECONDS="3600") as server:  # no flush while they live
        served = hammer(server.port, t.token, threads=4, per_thread=30)[200]
        for child in psutil.Process(server.pid).children():
            os.kill(child.pid, signal.SIGKILL)  # no worker_exit, no atexit: nothing flushed
        time.sleep(0.5)
        assert served == 120
        assert counted(engine, t) == 0  # in memory mode, all of it would be lost now
        assert total(prefix, t) == served  # counted on the request path
        in_redis()  # another process (this one) flushes
        usage.flush(engine)
        assert counted(engine, t) == served
    assert counted(engine, t) == served  # the respawned workers' graceful stops add nothing


def test_a_total_redis_lost_is_seeded_from_postgresql(make_plan, make_tenant, engine, prefix, in_redis):
    t = make_tenant(plan=make_plan(max_api_requests_per_month=10))
    with engine.begin() as conn:  # counted earlier this month, flushed; Redis holds nothing
        conn.execute(text("INSERT INTO public.usage_counters (tenant_id, metric, period, value)"
                          " VALUES (:t, 'api_requests', :p, 7)"), {"t": t.tenant_id, "p": usage.period_of(usage.now())})
    client = in_redis().test_client()
    for _ in range(3):
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    problem = assert_problem(client.get("/v1/tenant", headers=t.auth), 429, "quota-exceeded")
    assert (problem["limit"], problem["usage"]) == (10, 10)
    assert total(prefix, t) == 10
    usage.flush(engine)
    assert counted(engine, t) == 10

    store().delete(f"{prefix}:{month()}", f"{prefix}:dirty")  # Redis restarted empty
    assert_problem(client.get("/v1/tenant", headers=t.auth), 429, "quota-exceeded")  # seeded with 10 again
    assert total(prefix, t) == 10
    ttl = store().ttl(f"{prefix}:{month()}")
    assert 40 * 86400 < ttl <= 72 * 86400  # 40 days after the month ends


def test_flushing_twice_or_from_two_flushers_at_once_writes_each_count_once(make_plan, make_tenant, engine,
                                                                           prefix, in_redis):
    t = make_tenant(plan=make_plan())
    client = in_redis().test_client()
    for _ in range(5):
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    assert counted(engine, t) == 0  # nothing written per request
    flushers = [threading.Thread(target=usage.flush, args=(engine,)) for _ in range(4)]
    for flusher in flushers:
        flusher.start()
    for flusher in flushers:
        flusher.join()
    usage.flush(engine)
    assert counted(engine, t) == 5
    assert dirty(prefix) == {}


def test_a_crash_between_write_and_delete_writes_the_same_total_again(make_plan, make_tenant, engine, prefix,
                                                                      in_redis, monkeypatch):
    t = make_tenant(plan=make_plan())
    app = in_redis()
    shared = app.extensions["tenantry_usage_counts"]
    client = app.test_client()
    for _ in range(5):
        client.get("/v1/tenant", headers=t.auth)
    with monkeypatch.context() as patched:
        patched.setattr(shared, "clean", lambda written: False)  # the process died before deleting
        usage.flush(engine)
    assert counted(engine, t) == 5
    assert len(dirty(prefix)) == 1
    usage.flush(engine)  # the same absolute total: GREATEST, not added
    assert counted(engine, t) == 5
    assert dirty(prefix) == {}


def test_a_count_arriving_during_a_flush_stays_dirty_for_the_next(make_plan, make_tenant, engine, prefix,
                                                                  in_redis, monkeypatch):
    t = make_tenant(plan=make_plan())
    app = in_redis()
    shared = app.extensions["tenantry_usage_counts"]
    client = app.test_client()
    for _ in range(5):
        client.get("/v1/tenant", headers=t.auth)
    read_dirty = shared.dirty

    def dirty_then_a_request():
        found = read_dirty()
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200  # between the read and the delete
        return found

    with monkeypatch.context() as patched:
        patched.setattr(shared, "dirty", dirty_then_a_request)
        usage.flush(engine)
    assert counted(engine, t) == 5
    assert list(dirty(prefix).values()) == [b"6"]  # the compare-and-delete kept it
    usage.flush(engine)
    assert counted(engine, t) == 6
    assert dirty(prefix) == {}


def test_when_redis_is_away_requests_are_served_and_counted_in_memory(make_plan, make_tenant, engine, in_redis,
                                                                      caplog):
    t = make_tenant(plan=make_plan(max_api_requests_per_month=6))
    client = in_redis("redis://127.0.0.1:1/0").test_client()  # nothing listens on port 1
    for _ in range(4):
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    time.sleep(1.1)  # the request path tries again after 1 s: still refused, no second warning
    for _ in range(2):
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    assert_problem(client.get("/v1/tenant", headers=t.auth), 429, "quota-exceeded")  # this process's 6
    downs = [r for r in caplog.records if getattr(r, "event", None) == "usage.storage_down"]
    assert len(downs) == 1, downs
    usage.flush(engine)  # kept for Redis while the process lives
    assert counted(engine, t) == 0
    usage.flush(engine, final=True)  # the process stops with Redis away: added to PostgreSQL
    assert counted(engine, t) == 6


def test_after_an_outage_the_counts_reach_redis_and_postgresql_once(make_plan, make_tenant, engine, prefix,
                                                                    in_redis, caplog):
    t = make_tenant(plan=make_plan(max_api_requests_per_month=1000))
    outage = _Outage()
    try:
        client = in_redis(f"redis://127.0.0.1:{outage.port}/0").test_client()
        for _ in range(3):
            assert client.get("/v1/tenant", headers=t.auth).status_code == 200
        outage.cut()
        for _ in range(4):
            assert client.get("/v1/tenant", headers=t.auth).status_code == 200  # served from memory
        assert logged(caplog, "usage.storage_down")
        assert total(prefix, t) == 3
        usage.flush(engine)  # Redis still away: nothing lost, nothing written
        outage.restore()
        usage.flush(engine)  # the 4 go to Redis, then every dirty total to PostgreSQL
        assert logged(caplog, "usage.storage_up")
        assert total(prefix, t) == 7
        assert counted(engine, t) == 7
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200  # back in Redis
        usage.flush(engine)
        usage.flush(engine)
        assert (total(prefix, t), counted(engine, t)) == (8, 8)
    finally:
        outage.close()


@pytest.mark.parametrize("value", ["memcached://127.0.0.1:11211", "redis+sentinel://h/0", "127.0.0.1:6379",
                                   "memory://somewhere"])
def test_a_usage_storage_that_is_no_redis_stops_the_start(make_app, value):
    with pytest.raises(ConfigError, match="USAGE_STORAGE_URI=.* is invalid: must be memory:// or a Redis URL"):
        from_env({"USAGE_STORAGE_URI": value})
    with pytest.raises(ConfigError, match="USAGE_STORAGE_URI"):
        make_app(USAGE_STORAGE_URI=value)


def test_counts_held_for_redis_count_against_the_limit_once_it_answers(make_plan, make_tenant, engine, prefix,
                                                                       in_redis):
    t = make_tenant(plan=make_plan(max_api_requests_per_month=9))
    outage = _Outage()
    try:
        client = in_redis(f"redis://127.0.0.1:{outage.port}/0").test_client()
        for _ in range(3):
            assert client.get("/v1/tenant", headers=t.auth).status_code == 200
        outage.cut()
        for _ in range(4):
            assert client.get("/v1/tenant", headers=t.auth).status_code == 200  # held in memory for Redis
        outage.restore()
        time.sleep(1.1)  # the request path tries Redis again; no flush has handed it the 4 yet
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200
        problem = assert_problem(client.get("/v1/tenant", headers=t.auth), 429, "quota-exceeded")
        assert problem["usage"] == 9  # 5 in Redis, 4 on their way
        usage.flush(engine)
        assert (total(prefix, t), counted(engine, t)) == (9, 9)
    finally:
        outage.close()


def test_readyz_says_where_usage_is_counted(app, make_app, prefix, in_redis):
    assert app.test_client().get("/readyz").json["usage"]["storage"] == "memory"
    assert app.test_client().get("/readyz").json["usage"]["shared"] is False
    assert make_app(USAGE_METERING=False).test_client().get("/readyz").json["usage"]["storage"] == "off"
    assert in_redis().test_client().get("/readyz").json["usage"] == {"storage": "redis", "shared": True}
    away = in_redis("redis://127.0.0.1:1/0")  # this process counts with the first: its own report only
    away.extensions["tenantry_usage_counts"].count((1, "api_requests", usage.period_of(usage.now())), 1, None)
    report = away.test_client().get("/readyz").json["usage"]
    assert (report["storage"], report["shared"]) == ("redis", False) and "memory" in report["detail"]


def test_a_forked_child_counts_on_redis_connections_of_its_own(make_plan, make_tenant, prefix, in_redis):
    t = make_tenant(plan=make_plan())
    application = in_redis()
    shared = application.extensions["tenantry_usage_counts"]
    client = application.test_client()
    assert client.get("/v1/tenant", headers=t.auth).status_code == 200  # the parent's pool holds a connection
    parent_pool = shared._client.connection_pool  # noqa: SLF001
    key = (t.tenant_id, "api_requests", usage.period_of(usage.now()))
    child = os.fork()
    if child == 0:  # the child: its own pool (after usage's fork hook), counting works there
        code = 1
        try:
            own = shared._client.connection_pool is not parent_pool  # noqa: SLF001
            code = 0 if own and shared.count(key, 1, None).total == 2 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.get("/v1/tenant", headers=t.auth).status_code == 200  # the parent's connection still serves
    assert total(prefix, t) == 3


def test_closing_a_month_writes_the_totals_redis_holds_first_and_refuses_without_redis(
        make_plan, make_tenant, engine, prefix, in_redis, monkeypatch):
    t = make_tenant(plan=make_plan())
    app = in_redis()
    client = app.test_client()
    clock = "2034-05-15T10:00:00"  # a month no other test counts in
    monkeypatch.setattr(usage, "now", lambda: datetime.fromisoformat(clock).replace(tzinfo=UTC))
    for _ in range(6):
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    assert counted(engine, t) == 0  # in Redis only: no server process flushed (none may run at month's end)

    def closed_events() -> list[dict]:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text(
                "SELECT data FROM public.billing_events WHERE type = 'usage.period_closed' AND tenant_id = :t"
                " AND data->>'period' = '2034-05'"), {"t": t.tenant_id})]

    clock = "2034-06-01T00:06:00"  # past the month and its grace
    away = in_redis(url="redis://127.0.0.1:1/0").test_cli_runner().invoke(args=["usage", "close-period", "2034-05"])
    assert away.exit_code == 1 and "does not answer" in away.stderr and closed_events() == []
    done = app.test_cli_runner().invoke(args=["usage", "close-period", "2034-05", "--json"])
    assert done.exit_code == 0, done.output
    [event] = closed_events()
    assert event["metrics"] == {"api_requests": 6}
    assert dirty(prefix) == {}
