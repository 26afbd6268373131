"""The billing outbox on real PostgreSQL: events with their change or not at all, claims, crashes, closed months."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.tenancy import billing, lifecycle, usage
from app.testing import assert_problem


def last_id(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(max(id), 0) FROM public.billing_events")).scalar())


def events_since(admin_client, after: int, tenant_id: int | None = None) -> list[dict]:
    page = admin_client.get(f"/v1/admin/billing-events?after={after}&limit=1000")
    assert page.status_code == 200, page.json
    return [e for e in page.json["items"] if tenant_id is None or e["tenant_id"] == tenant_id]


@pytest.fixture
def drained(engine) -> None:
    """Every event other tests left behind is settled: a claim here sees only this test's."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE public.billing_events SET acked_at = now() WHERE acked_at IS NULL"))


def at(monkeypatch, moment: str) -> None:
    monkeypatch.setattr(usage, "now", lambda: datetime.fromisoformat(moment).replace(tzinfo=UTC))


def test_plan_change_suspend_resume_and_delete_each_write_one_event(admin_client, make_tenant, make_plan, engine):
    t = make_tenant(plan="free")
    start = last_id(engine)
    assert admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"plan": "pro"}).status_code == 200
    assert admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"status": "suspended"}).status_code == 200
    assert admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"status": "active"}).status_code == 200
    assert admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"name": "Renamed"}).status_code == 200  # not billed
    assert admin_client.delete(f"/v1/admin/tenants/{t.slug}").status_code == 204

    events = events_since(admin_client, start, t.tenant_id)
    assert [e["type"] for e in events] == [
        "tenant.plan_changed", "tenant.suspended", "tenant.resumed", "tenant.deleted"]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    plan, suspended, resumed, deleted = (e["data"] for e in events)
    assert (plan["previous_plan"], plan["plan"]) == ("free", "pro")
    assert (suspended["previous_status"], suspended["status"], suspended["plan"]) == ("active", "suspended", "pro")
    assert (resumed["previous_status"], resumed["status"]) == ("suspended", "active")
    assert (deleted["plan"], deleted["status"]) == ("pro", "active")
    assert all(e["tenant_slug"] == t.slug and e["data"]["actor"] == "admin-api" for e in events)
    assert len({e["idempotency_key"] for e in events}) == 4
    assert not any(e["acknowledged"] for e in events) and all(e["attempts"] == 0 for e in events)


def test_a_change_that_fails_writes_no_event_and_changes_nothing(admin_client, make_tenant, engine):
    t = make_tenant(plan="free")
    start = last_id(engine)
    refused = admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"status": "suspended", "plan": "no-such"})
    assert refused.status_code in (404, 422), refused.json
    assert events_since(admin_client, start, t.tenant_id) == []
    detail = admin_client.get(f"/v1/admin/tenants/{t.slug}").json
    assert (detail["plan"], detail["status"]) == ("free", "active")


def test_the_stream_pages_with_next_after_and_refuses_bad_input(admin_client, make_tenant, engine):
    t = make_tenant(plan="free")
    start = last_id(engine)
    for plan in ("pro", "enterprise", "free"):
        admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"plan": plan})
    first = admin_client.get(f"/v1/admin/billing-events?after={start}&limit=2").json
    second = admin_client.get(f"/v1/admin/billing-events?after={first['next_after']}&limit=2").json
    ids = [e["id"] for e in first["items"] + second["items"] if e["tenant_id"] == t.tenant_id]
    assert len(ids) == 3 and ids == sorted(ids)
    empty = admin_client.get(f"/v1/admin/billing-events?after={last_id(engine)}").json
    assert empty == {"items": [], "next_after": last_id(engine)}
    for query in ("after=-1", "after=x", "limit=0", "limit=1001", "after=１"):
        assert_problem(admin_client.get(f"/v1/admin/billing-events?{query}"), 422, "validation-error")
    assert admin_client.get("/v1/admin/billing-events", headers={"Authorization": "Bearer nope"}).status_code == 401


def claim(admin_client, consumer: str, limit: int = 100, lease: int | None = None) -> dict:
    body: dict = {"consumer": consumer, "limit": limit}
    if lease is not None:
        body["lease_seconds"] = lease
    response = admin_client.post("/v1/admin/billing-events/claim", json=body)
    assert response.status_code == 200, response.json
    return response.json


def ack(admin_client, token: str, ids: list[int]) -> dict:
    response = admin_client.post("/v1/admin/billing-events/ack", json={"claim_token": token, "ids": ids})
    assert response.status_code == 200, response.json
    return response.json


def test_claim_then_acknowledge_settles_events_once(admin_client, make_tenant, drained):
    t = make_tenant(plan="free")
    for status in ("suspended", "active"):
        admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"status": status})
    taken = claim(admin_client, "invoicing-1", lease=60)
    assert [e["type"] for e in taken["items"]] == ["tenant.suspended", "tenant.resumed"]
    assert all(e["attempts"] == 1 for e in taken["items"]) and taken["claimed_until"] is not None
    assert claim(admin_client, "invoicing-2")["items"] == []  # held by the live claim
    ids = [e["id"] for e in taken["items"]]
    assert ack(admin_client, taken["claim_token"], ids + [2**40]) == {"acknowledged": ids, "refused": [2**40]}
    assert ack(admin_client, taken["claim_token"], ids) == {"acknowledged": ids, "refused": []}  # retried: same
    nothing = claim(admin_client, "invoicing-2")
    assert nothing["items"] == [] and nothing["claimed_until"] is None


def test_claims_and_acknowledgements_refuse_bad_input(admin_client):
    for body in ({}, {"consumer": ""}, {"consumer": "bad name"}, {"consumer": "x" * 101},
                 {"consumer": "ok", "limit": 0}, {"consumer": "ok", "lease_seconds": 3601}):
        assert_problem(admin_client.post("/v1/admin/billing-events/claim", json=body), 422, "validation-error")
    for body in ({"claim_token": "nope", "ids": [1]}, {"claim_token": "7d3f0c8e-1f7a-4d8e-9c55-3f1f2a4b5c6d"},
                 {"claim_token": "7d3f0c8e-1f7a-4d8e-9c55-3f1f2a4b5c6d", "ids": []}):
        assert_problem(admin_client.post("/v1/admin/billing-events/ack", json=body), 422, "validation-error")


def test_competing_consumers_never_share_an_event_and_settle_every_one(app, engine, make_tenant, drained):
    t = make_tenant(plan="free")
    with Session(engine) as session, session.begin():
        for _ in range(300):
            billing.record(session, "tenant.plan_changed", t.tenant_id, t.slug, {"plan": "free"})
    delivered: dict[str, list[int]] = {}

    def consume(name: str) -> None:
        mine = delivered.setdefault(name, [])
        while True:
            with engine.begin() as conn:
                taken = billing.claim(conn, name, 7, 60)
            if not taken.events:
                return
            mine.extend(e.id for e in taken.events)
            with engine.begin() as conn:
                assert billing.acknowledge(conn, taken.token, [e.id for e in taken.events]).refused == []

    consumers = [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(4)]
    for consumer in consumers:
        consumer.start()
    for consumer in consumers:
        consumer.join(60)
    every = [i for ids in delivered.values() for i in ids]
    assert len(every) == 300 and len(set(every)) == 300, {k: len(v) for k, v in delivered.items()}
    with engine.connect() as conn:
        assert billing.backlog(conn).unacknowledged == 0


def test_ids_become_visible_in_commit_order(app, engine, make_tenant):
    """A writer waits for the outbox lock of one not committed yet: a poller past its id never misses the first."""
    t = make_tenant(plan="free")
    first = Session(engine)
    first.begin()
    billing.record(first, "tenant.suspended", t.tenant_id, t.slug, {})
    second_done = threading.Event()

    def second_writer() -> None:
        with Session(engine) as session, session.begin():
            billing.record(session, "tenant.resumed", t.tenant_id, t.slug, {})
        second_done.set()

    writer = threading.Thread(target=second_writer)
    writer.start()
    assert not second_done.wait(1.0), "the second event committed while the first was still open"
    first.commit()
    first.close()
    writer.join(30)
    assert second_done.is_set()
    with engine.connect() as conn:
        mine = [e for e in billing.events_after(conn, 0, 1000, tenant_id=t.tenant_id)]
    assert [e.type for e in sorted(mine, key=lambda e: e.id)] == ["tenant.suspended", "tenant.resumed"]


_CRASH = textwrap.dedent("""
    import os, signal, sys
    from app.extensions import db
    from app.tenancy import lifecycle, billing
    from app.testing import make_test_app
    from sqlalchemy.orm import Session
    url, slug, when = sys.argv[1:4]
    app = make_test_app(url)
    with app.app_context():
        session = db.session()
        if when == "claim":
            with db.engine.begin() as conn:
                taken = billing.claim(conn, "doomed", 100, 2)
            print(",".join(str(e.id) for e in taken.events), flush=True)
        else:
            lifecycle.update_tenant(session, slug, plan="pro", status="suspended")
            session.flush()  # the change and its event are written, not committed
            if when == "after-commit":
                session.commit()
            print("written", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def crash(tenantry_database_url: str, slug: str, when: str) -> str:
    done = subprocess.run([sys.executable, "-c", _CRASH, tenantry_database_url, slug, when],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    return done.stdout.strip()


def test_a_process_killed_before_commit_leaves_neither_change_nor_event(
        admin_client, make_tenant, engine, tenantry_database_url):
    t = make_tenant(plan="free")
    start = last_id(engine)
    assert crash(tenantry_database_url, t.slug, "before-commit") == "written"
    detail = admin_client.get(f"/v1/admin/tenants/{t.slug}").json
    assert (detail["plan"], detail["status"]) == ("free", "active")
    assert events_since(admin_client, start, t.tenant_id) == []
    # The crashed transaction held the tenant's row and the outbox lock: both are free again.
    assert admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"plan": "pro"}).status_code == 200
    assert [e["type"] for e in events_since(admin_client, start, t.tenant_id)] == ["tenant.plan_changed"]


def test_events_committed_before_a_crash_reach_a_consumer_and_a_crashed_consumer_loses_none(
        admin_client, make_tenant, engine, tenantry_database_url, drained):
    t = make_tenant(plan="free")
    assert crash(tenantry_database_url, t.slug, "after-commit") == "written"
    detail = admin_client.get(f"/v1/admin/tenants/{t.slug}").json
    assert (detail["plan"], detail["status"]) == ("pro", "suspended")

    # A consumer claims both events (lease 2 s) and is killed before it acknowledges.
    claimed = [int(i) for i in crash(tenantry_database_url, t.slug, "claim").split(",")]
    assert len(claimed) == 2
    assert claim(admin_client, "next")["items"] == []  # the dead consumer's lease still runs
    time.sleep(2.2)
    retaken = claim(admin_client, "next", lease=60)
    assert [e["id"] for e in retaken["items"]] == claimed
    assert [e["type"] for e in retaken["items"]] == ["tenant.plan_changed", "tenant.suspended"]
    assert all(e["attempts"] == 2 for e in retaken["items"])
    assert ack(admin_client, retaken["claim_token"], claimed)["acknowledged"] == claimed
    assert claim(admin_client, "next")["items"] == []


def test_an_acknowledgement_after_another_consumer_reclaimed_is_refused(admin_client, make_tenant, drained):
    t = make_tenant(plan="free")
    admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"status": "suspended"})
    slow = claim(admin_client, "slow", lease=1)
    time.sleep(1.2)
    fast = claim(admin_client, "fast", lease=60)
    ids = [e["id"] for e in fast["items"]]
    assert ids == [e["id"] for e in slow["items"]] and len(ids) == 1
    assert ack(admin_client, slow["claim_token"], ids) == {"acknowledged": [], "refused": ids}
    assert ack(admin_client, fast["claim_token"], ids) == {"acknowledged": ids, "refused": []}


def test_closing_a_month_writes_one_event_per_tenant_once(app, admin_client, make_tenant, engine, monkeypatch):
    live, gone = make_tenant(plan="pro"), make_tenant(plan="free")
    client = app.test_client()
    at(monkeypatch, "2032-03-15T10:00:00")  # a month no other test counts in
    for tenant, requests in ((live, 3), (gone, 2)):
        for _ in range(requests):
            assert client.get("/v1/tenant", headers=tenant.auth).status_code == 200
    usage.record_for(live.tenant_id, "exports", 4)
    usage.flush(engine)
    assert admin_client.delete(f"/v1/admin/tenants/{gone.slug}").status_code == 204
    runner = app.test_cli_runner()

    at(monkeypatch, "2032-04-01T00:04:00")  # the month ended, the grace (300 s) has not
    early = runner.invoke(args=["usage", "close-period", "2032-03"])
    assert early.exit_code == 1 and "cannot be closed before 2032-04-01T00:05:00Z" in early.output, early.output
    start = last_id(engine)

    at(monkeypatch, "2032-04-01T00:05:00")
    closed = runner.invoke(args=["usage", "close-period", "2032-03", "--json"])
    assert closed.exit_code == 0, closed.output
    summary = json.loads(closed.output)
    assert summary["created"] >= 2 and summary["existing"] == 0
    again = json.loads(runner.invoke(args=["usage", "close-period", "2032-03", "--json"]).output)
    assert again == {"period": "2032-03", "created": 0, "existing": summary["created"]}

    events = {e["tenant_id"]: e for e in events_since(admin_client, start) if e["type"] == "usage.period_closed"}
    assert len(events) == summary["created"]
    assert events[live.tenant_id]["data"]["metrics"] == {"api_requests": 3, "exports": 4}
    assert events[live.tenant_id]["data"]["plan"] == "pro" and events[live.tenant_id]["data"]["status"] == "active"
    assert events[live.tenant_id]["idempotency_key"] == f"usage.period_closed:{live.tenant_id}:2032-03"
    # Deleted during the month: still billed, named from its tenant.deleted event.
    assert events[gone.tenant_id]["tenant_slug"] == gone.slug
    assert events[gone.tenant_id]["data"] == {"period": "2032-03", "plan": "free", "status": "deleted",
                                               "metrics": {"api_requests": 2},
                                               "actor": events[gone.tenant_id]["data"]["actor"]}
    assert events[gone.tenant_id]["data"]["actor"].startswith("cli:")


def test_closing_a_month_on_two_nodes_at_once_writes_each_event_once(app, make_tenant, engine, monkeypatch):
    for _ in range(3):
        make_tenant(plan="free")
    at(monkeypatch, "2033-02-01T01:00:00")
    results: list[billing.ClosedPeriod] = []

    def close() -> None:
        with Session(engine) as session, session.begin():
            results.append(billing.close_period(session, usage.parse_period("2033-01"), 300))

    nodes = [threading.Thread(target=close) for _ in range(2)]
    for node in nodes:
        node.start()
    for node in nodes:
        node.join(60)
    assert len(results) == 2
    assert sorted(r.created for r in results)[0] == 0
    assert sum(r.created for r in results) == results[0].created + results[0].existing
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT count(*), count(DISTINCT tenant_id) FROM public.billing_events"
                                 " WHERE type = 'usage.period_closed' AND data->>'period' = '2033-01'")).one()
    assert keys[0] == keys[1]


def test_a_bad_period_is_refused_by_the_cli(app):
    runner = app.test_cli_runner()
    for period in ("2032-13", "32-01", "now"):
        result = runner.invoke(args=["usage", "close-period", period])
        assert result.exit_code == 1 and "invalid PERIOD" in result.output, result.output


def test_the_cli_lists_the_stream_and_the_backlog(app, make_tenant, engine, drained):
    t = make_tenant(plan="free")
    start = last_id(engine)
    with app.app_context():
        from app.extensions import db

        lifecycle.update_tenant(db.session(), t.slug, plan="pro")
        db.session.commit()
    runner = app.test_cli_runner()
    listed = json.loads(runner.invoke(args=["billing", "events", "--after", str(start), "--json"]).output)
    assert [(e["type"], e["tenant_slug"]) for e in listed] == [("tenant.plan_changed", t.slug)]
    human = runner.invoke(args=["billing", "events", "--after", str(start)]).output
    assert "tenant.plan_changed" in human and t.slug in human
    backlog = json.loads(runner.invoke(args=["billing", "backlog", "--json"]).output)
    assert backlog["unacknowledged"] == 1 and backlog["claimed"] == 0 and backlog["oldest"]


def test_a_bad_id_in_an_acknowledgement_is_named_by_its_position(admin_client):
    body = {"claim_token": "7d3f0c8e-1f7a-4d8e-9c55-3f1f2a4b5c6d", "ids": [5, 2**63, "x"]}
    problem = assert_problem(admin_client.post("/v1/admin/billing-events/ack", json=body), 422, "validation-error")
    assert set(problem["errors"]) == {"ids.1", "ids.2"}, problem


def test_purge_deletes_old_acknowledged_events_only(app, admin_client, make_tenant, engine, drained):
    t = make_tenant(plan="free")
    start = last_id(engine)
    for status in ("suspended", "active", "suspended"):
        admin_client.patch(f"/v1/admin/tenants/{t.slug}", json={"status": status})
    taken = claim(admin_client, "old", limit=2, lease=60)
    ack(admin_client, taken["claim_token"], [e["id"] for e in taken["items"]])
    with engine.begin() as conn:  # all three were written long ago; two of them acknowledged
        conn.execute(text("UPDATE public.billing_events SET occurred_at = now() - interval '400 days'"
                          " WHERE tenant_id = :t"), {"t": t.tenant_id})
    runner = app.test_cli_runner()
    assert runner.invoke(args=["billing", "purge", "--older-than", "30"]).exit_code == 2  # below the floor
    result = runner.invoke(args=["billing", "purge", "--older-than", "365"])
    assert result.exit_code == 0 and "deleted" in result.output, result.output
    left = [e["type"] for e in events_since(admin_client, start, t.tenant_id)]
    assert left == ["tenant.suspended"]  # the unacknowledged one stays
