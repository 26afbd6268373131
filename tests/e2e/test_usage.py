"""Usage metering through HTTP on real PostgreSQL: exact counts, batched writes, the monthly limit."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import create_engine, text

from app.tenancy import usage
from app.testing import assert_problem


def stored(engine, tenant, metric: str = "api_requests", period: date | None = None) -> int | None:
    with engine.connect() as conn:
        query = "SELECT value FROM public.usage_counters WHERE tenant_id = :t AND metric = :m"
        params = {"t": tenant.tenant_id, "m": metric}
        if period is not None:
            query += " AND period = :p"
            params["p"] = period
        return conn.execute(text(query), params).scalar()


def at(monkeypatch, moment: str) -> None:
    """Set the metering clock."""
    monkeypatch.setattr(usage, "now", lambda: datetime.fromisoformat(moment).replace(tzinfo=UTC))


def test_requests_from_many_threads_are_counted_exactly_once_flushed(app, make_plan, make_tenant, engine):
    t = make_tenant(plan=make_plan())  # no rate limit: every request is served
    threads, per_thread = 8, 60
    statuses: list[int] = []

    def hammer() -> None:
        client = app.test_client()
        for _ in range(per_thread):
            statuses.append(client.get("/v1/tenant", headers=t.auth).status_code)

    for _ in range(2):  # two rounds, a flush after each: the second adds to the stored row
        workers = [threading.Thread(target=hammer) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        usage.flush(engine)
    assert statuses == [200] * (2 * threads * per_thread)
    assert stored(engine, t) == 2 * threads * per_thread


def test_nothing_is_written_per_request(app, make_tenant, engine):
    t = make_tenant()
    usage.flush(engine)
    with app.test_client() as client:
        for _ in range(5):
            assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    # The flusher runs every USAGE_FLUSH_SECONDS (5 here): nothing is stored yet, all is pending.
    assert stored(engine, t) in (None, 5)
    assert usage.flush(engine) >= 0
    assert stored(engine, t) == 5


def test_refused_requests_are_not_counted(app, make_tenant, engine):
    t = make_tenant()
    client = app.test_client()
    assert client.get("/v1/tenant", headers={"Authorization": "Bearer tnt_nope_nope"}).status_code == 401
    assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    usage.flush(engine)
    assert stored(engine, t) == 1


def test_over_the_monthly_limit_is_429_until_the_next_month(app, make_plan, make_tenant, engine, monkeypatch):
    t = make_tenant(plan=make_plan(max_api_requests_per_month=3))
    client = app.test_client()
    at(monkeypatch, "2026-12-31T23:59:50")
    for _ in range(3):
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    refused = client.get("/v1/tenant", headers=t.auth)
    problem = assert_problem(refused, 429, "quota-exceeded")
    assert (problem["quota"], problem["limit"], problem["usage"]) == ("api_requests", 3, 3)
    assert problem["resets_at"] == "2027-01-01T00:00:00Z"
    assert refused.headers["Retry-After"] == "10"
    usage.flush(engine)  # the stored count refuses too, not only this process's pending one
    assert client.get("/v1/tenant", headers=t.auth).status_code == 429

    at(monkeypatch, "2027-01-01T00:00:00")
    assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    usage.flush(engine)
    assert stored(engine, t, period=date(2026, 12, 1)) == 3  # refused requests were not counted
    assert stored(engine, t, period=date(2027, 1, 1)) == 1


def test_counts_of_other_processes_apply_within_one_flush_interval(make_app, make_plan, make_tenant, engine):
    application = make_app(USAGE_FLUSH_SECONDS=1)
    t = make_tenant(plan=make_plan(max_api_requests_per_month=100))
    client = application.test_client()
    assert client.get("/v1/tenant", headers=t.auth).status_code == 200  # reads the stored count: none
    usage.flush(engine)
    with engine.begin() as conn:  # another process flushes 99 more
        conn.execute(text("UPDATE public.usage_counters SET value = value + 99 WHERE tenant_id = :t"),
                     {"t": t.tenant_id})
    assert client.get("/v1/tenant", headers=t.auth).status_code == 200  # within the interval: cached
    time.sleep(1.1)
    problem = assert_problem(client.get("/v1/tenant", headers=t.auth), 429, "quota-exceeded")
    assert problem["usage"] == 101


def test_the_tenant_and_the_console_show_this_months_requests_against_the_limit(
        app, make_plan, make_tenant, engine, operator):
    tenant = make_tenant(plan=make_plan(max_api_requests_per_month=40))
    client = app.test_client()
    for _ in range(7):
        assert client.get("/v1/repositories", headers=tenant.auth).status_code == 200
    usage.flush(engine)
    shown = client.get("/v1/tenant", headers=tenant.auth).json["usage"]["api_requests_this_month"]
    assert shown["limit"] == 40 and shown["used"] in (7, 8)  # as flushed (the flusher may take this GET too)
    page = operator.get(f"/console/tenants/{tenant.slug}").get_data(as_text=True)
    used = int(re.search(r'id="usage-api_requests_this_month">(\d+)<', page).group(1))
    assert used in (7, 8) and re.search(r'api requests this month</th>\s*<td[^>]*>\d+</td>\s*<td class="num">40</td>',
                                        page), page


def test_an_unlimited_plan_is_counted_and_never_refused(app, make_plan, make_tenant, engine):
    t = make_tenant(plan=make_plan(max_api_requests_per_month=None))
    client = app.test_client()
    for _ in range(4):
        assert client.get("/v1/tenant", headers=t.auth).status_code == 200
    usage.flush(engine)
    assert stored(engine, t) == 4


def test_the_seeded_plans_have_their_monthly_limits(engine):
    with engine.connect() as conn:
        limits = dict(conn.execute(text("SELECT name, max_api_requests_per_month FROM public.plans"
                                        " WHERE name IN ('free', 'pro', 'enterprise')")).all())
    assert limits == {"free": 10_000, "pro": 100_000, "enterprise": None}


def test_a_failed_flush_keeps_its_counts_for_the_next(app, make_tenant, engine):
    t = make_tenant()
    usage.flush(engine)
    usage.record_for(t.tenant_id, "exports", 7)
    broken = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the driver raises
        usage.flush(broken)
    usage.flush(engine)
    assert stored(engine, t, "exports") == 7


def test_a_gauge_keeps_the_months_peak(app, make_tenant, engine):
    t = make_tenant()
    for level in (5, 3):
        usage.record_for(t.tenant_id, "repositories", level)
    usage.flush(engine)
    assert stored(engine, t, "repositories") == 5
    usage.record_for(t.tenant_id, "repositories", 2)
    usage.flush(engine)
    assert stored(engine, t, "repositories") == 5
    usage.record_for(t.tenant_id, "repositories", 9)
    usage.flush(engine)
    assert stored(engine, t, "repositories") == 9


@pytest.mark.parametrize("metric, amount", [("Bad-Name", 1), ("x" * 41, 1), ("exports", -1)])
def test_a_bad_metric_or_amount_is_refused(metric, amount):
    with pytest.raises(ValueError):  # noqa: PT011
        usage.record_for(1, metric, amount)


def test_a_tenant_reads_its_usage_month_by_month(app, make_tenant, engine, monkeypatch):
    t = make_tenant()
    client = app.test_client()
    at(monkeypatch, "2030-02-27T12:00:00")
    for _ in range(2):
        client.get("/v1/tenant", headers=t.auth)
    at(monkeypatch, "2030-04-01T00:00:00")
    client.get("/v1/tenant", headers=t.auth)
    usage.flush(engine)
    response = client.get("/v1/tenant/usage?from=2030-02&to=2030-04", headers=t.auth)
    assert response.status_code == 200, response.json
    assert response.json["periods"] == [
        {"period": "2030-02", "metrics": {"api_requests": 2}},
        {"period": "2030-03", "metrics": {}},
        {"period": "2030-04", "metrics": {"api_requests": 1}},  # this read is counted, not flushed yet
    ]
    usage.flush(engine)
    only = client.get("/v1/tenant/usage?to=2030-04", headers=t.auth).json["periods"]
    assert only == [{"period": "2030-04", "metrics": {"api_requests": 2}}]  # the first read, flushed


@pytest.mark.parametrize("query", ["from=2030-13", "from=30-01", "to=2030-1", "from=2030-05&to=2030-04",
                                   "from=2030-01&to=2033-01"])
def test_a_bad_usage_range_is_422(tenant_client, tenant, query):
    response = tenant_client.get(f"/v1/tenant/usage?{query}", headers=tenant.auth)
    problem = assert_problem(response, 422, "validation-error")
    assert set(problem["errors"]) <= {"from", "to"}, problem


def test_the_admin_lists_a_months_top_tenants_and_shows_usage_on_the_detail(
        app, admin_client, make_plan, make_tenant, engine, monkeypatch):
    plan = make_plan()
    busy, quiet = make_tenant(plan=plan), make_tenant(plan=plan)
    client = app.test_client()
    at(monkeypatch, "2031-05-10T08:00:00")  # a month no other test counts in
    for tenant, requests in ((busy, 3), (quiet, 1)):
        for _ in range(requests):
            client.get("/v1/tenant", headers=tenant.auth)
    usage.record_for(quiet.tenant_id, "exports", 8)
    usage.flush(engine)

    top = admin_client.get("/v1/admin/usage?period=2031-05").json
    assert top["period"] == "2031-05" and top["metric"] == "api_requests"
    assert [(i["slug"], i["value"]) for i in top["items"]] == [(busy.slug, 3), (quiet.slug, 1)]
    by_exports = admin_client.get("/v1/admin/usage?period=2031-05&sort=exports&limit=1").json["items"]
    assert [(i["slug"], i["value"]) for i in by_exports] == [(quiet.slug, 8)]
    assert_problem(admin_client.get("/v1/admin/usage?period=2031-5"), 422, "validation-error")

    detail = admin_client.get(f"/v1/admin/tenants/{quiet.slug}").json
    assert detail["usage"] == {"period": "2031-05", "metrics": {"api_requests": 1, "exports": 8}}


def test_flask_tenants_usage_prints_a_tenant_or_the_top(app, make_plan, make_tenant, engine, monkeypatch):
    plan = make_plan()
    t = make_tenant(plan=plan)
    at(monkeypatch, "2032-07-01T00:00:00")
    for _ in range(4):
        app.test_client().get("/v1/tenant", headers=t.auth)
    usage.flush(engine)
    runner = app.test_cli_runner()
    one = runner.invoke(args=["tenants", "usage", t.slug, "--period", "2032-07", "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.output) == {"slug": t.slug, "period": "2032-07", "metrics": {"api_requests": 4}}
    assert "api_requests" in runner.invoke(args=["tenants", "usage", t.slug, "--period", "2032-07"]).output
    top = json.loads(runner.invoke(args=["tenants", "usage", "--period", "2032-07", "--json"]).output)
    assert top["items"] == [{"tenant_id": t.tenant_id, "slug": t.slug, "value": 4}]
    bad = runner.invoke(args=["tenants", "usage", "--period", "July"])
    assert bad.exit_code == 1 and "YYYY-MM" in bad.output
    missing = runner.invoke(args=["tenants", "usage", "nobody_here"])
    assert missing.exit_code == 1


def test_repositories_are_a_gauge_the_months_peak_counted_on_commit(app, make_plan, make_tenant, engine):
    t = make_tenant(plan=make_plan())
    client = app.test_client()

    def create(repo_id: int):
        return client.post("/v1/repositories", json={"github_repo_id": repo_id, "owner": "o", "name": f"r{repo_id}"},
                           headers=t.auth)

    first = create(1).json
    create(2)
    client.delete(f"/v1/repositories/{first['id']}", headers=t.auth)
    assert create(3).status_code == 201  # two again: the peak stays 2
    assert create(3).status_code == 409  # a refused create records nothing
    usage.flush(engine)
    assert stored(engine, t, "repositories") == 2
    create(4)
    usage.flush(engine)
    assert stored(engine, t, "repositories") == 3


def test_the_flusher_writes_on_a_connection_of_its_own(app, make_tenant, engine):
    """Not through the request pool: a flush never takes a connection a request could use."""
    t = make_tenant()
    assert app.test_client().get("/v1/tenant", headers=t.auth).status_code == 200
    usage.flush()  # where the flusher writes: the engine the first app configured
    with engine.connect() as conn:
        own = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tenantry-usage'"
                                " AND datname = current_database()")).scalar()
    assert own == 1
    assert stored(engine, t) == 1
