"""Usage metering across gunicorn worker processes: exact after a graceful stop, bounded after a kill."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time

import psutil
import pytest
from sqlalchemy import text

from tests.stack import gunicorn


def serve(port: int, token: str, threads: int, per_thread: int) -> int:
    """Requests answered 200, from ``threads`` keep-alive connections (gunicorn spreads them over workers)."""
    served = [0] * threads

    def client(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(per_thread):
            conn.request("GET", "/v1/tenant", headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            served[slot] += response.status == 200
        conn.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(served)


def counted(engine, tenant) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT coalesce(sum(value), 0) FROM public.usage_counters"
                                 " WHERE tenant_id = :t AND metric = 'api_requests'"), {"t": tenant.tenant_id}).scalar()


def logged_requests(log, slug: str) -> int:
    """The request log's lines (LOG_FORMAT=json) for tenant ``slug`` answered 200: the access log's count."""
    lines = 0
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            lines += record.get("event") == "request" and record.get("tenant") == slug and record["status"] == 200
    return lines


def run_and_count(make_plan, make_tenant, engine, database_url, tmp_path, per_thread: int) -> None:
    """Requests from 8 threads over 3 worker processes: the stored count is the access log's and the clients'."""
    t = make_tenant(plan=make_plan())
    with gunicorn(database_url, tmp_path, WEB_CONCURRENCY="3", GUNICORN_THREADS="4",
                  LOG_FORMAT="json", LOG_LEVEL="INFO",
                  USAGE_FLUSH_SECONDS="2") as server:  # periodic flushes during the run, the stop writes the rest
        served = serve(server.port, t.token, threads=8, per_thread=per_thread)
        pids = [p.pid for p in psutil.Process(server.pid).children()]
    assert served == 8 * per_thread
    assert len(pids) == 3
    assert logged_requests(server.log, t.slug) == served
    assert counted(engine, t) == served


def test_three_workers_count_exactly_once_stopped_gracefully(make_plan, make_tenant, engine,
                                                             tenantry_database_url, tmp_path):
    run_and_count(make_plan, make_tenant, engine, tenantry_database_url, tmp_path, per_thread=250)


@pytest.mark.fullsize
def test_ten_thousand_requests_over_three_workers_match_the_access_log(make_plan, make_tenant, engine,
                                                                       tenantry_database_url, tmp_path):
    """The issue's size: 10,000 requests (about a minute here, so in one CI pass only)."""
    run_and_count(make_plan, make_tenant, engine, tenantry_database_url, tmp_path, per_thread=1250)


def test_a_killed_worker_loses_at_most_what_it_counted_since_its_last_flush(make_plan, make_tenant, engine,
                                                                            tenantry_database_url, tmp_path):
    t = make_tenant(plan=make_plan())
    with gunicorn(tenantry_database_url, tmp_path, WEB_CONCURRENCY="2", GUNICORN_THREADS="2",
                  USAGE_FLUSH_SECONDS="1") as server:
        flushed = serve(server.port, t.token, threads=4, per_thread=50)
        time.sleep(2.5)  # more than one interval: every worker flushed it
        unflushed = serve(server.port, t.token, threads=4, per_thread=25)
        for child in psutil.Process(server.pid).children():
            os.kill(child.pid, signal.SIGKILL)  # no worker_exit, no atexit
        time.sleep(0.5)
    stored = counted(engine, t)
    assert flushed <= stored <= flushed + unflushed, (flushed, unflushed, stored)
