"""The audit trails: tenant events in the change's own transaction, platform events, and their APIs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, text

from app.extensions import db
from app.services import repositories
from app.tenancy import tenant_scope
from app.tenancy.api_keys import issue_api_key
from app.tenancy.directory import get_tenant


def problem(response, status: int, type_suffix: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert response.json["type"].endswith("/" + type_suffix), response.json
    return response.json


def key_for(app, tenant, role: str) -> dict[str, str]:
    with app.app_context():
        issued = issue_api_key(db.session(), get_tenant(db.session(), tenant.slug), role)
        db.session.commit()
    return {"Authorization": f"Bearer {issued.token}"}


def events(engine: Engine, tenant) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT action, resource_id, api_key_id, role, request_id, changes"
            f' FROM "{tenant.schema_name}".audit_events ORDER BY id'
        )).mappings().all()
    return [dict(r) for r in rows]


def walk(client, url: str, headers: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        sep = "&" if "?" in url else "?"
        response = client.get(url + (f"{sep}cursor={cursor}" if cursor else ""), headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        items += response.json["items"]
        pages += 1
        cursor = response.json["next_cursor"]
        if cursor is None:
            return items, pages


# --- tenant events ----------------------------------------------------------------


def test_every_change_writes_one_event_with_its_key_role_request_and_a_compact_diff(client, tenant, engine):
    created = client.post("/v1/repositories", json={"github_repo_id": 7, "owner": "octo", "name": "one"},
                          headers={**tenant.auth, "X-Request-ID": "req-create-1"})
    assert created.status_code == 201 and created.headers["X-Request-ID"] == "req-create-1"
    rid = created.json["id"]
    patched = client.patch(f"/v1/repositories/{rid}", json={"enabled": False}, headers=tenant.auth)
    assert patched.status_code == 200
    assert client.get(f"/v1/repositories/{rid}", headers=tenant.auth).status_code == 200  # reads: no event
    assert client.delete(f"/v1/repositories/{rid}", headers=tenant.auth).status_code == 204

    with engine.connect() as conn:
        key_id = conn.execute(text("SELECT id FROM public.api_keys WHERE tenant_id = :t"),
                              {"t": tenant.tenant_id}).scalar()
    got = events(engine, tenant)
    assert [e["action"] for e in got] == ["repository.created", "repository.updated", "repository.deleted"]
    assert {(e["resource_id"], e["api_key_id"], e["role"]) for e in got} == {(str(rid), key_id, "admin")}
    assert got[0]["request_id"] == "req-create-1"
    assert got[1]["request_id"] == patched.headers["X-Request-ID"] != got[0]["request_id"]
    assert got[0]["changes"] == {"before": None, "after": {
        "github_repo_id": 7, "owner": "octo", "name": "one", "full_name": "octo/one", "enabled": True}}
    assert got[1]["changes"] == {"before": {"enabled": True}, "after": {"enabled": False}}  # only what changed
    assert got[2]["changes"]["after"] is None and got[2]["changes"]["before"]["name"] == "one"


def test_a_refused_change_leaves_no_event(client, tenant, engine):
    body = {"github_repo_id": 9, "owner": "octo", "name": "dup"}
    assert client.post("/v1/repositories", json=body, headers=tenant.auth).status_code == 201
    problem(client.post("/v1/repositories", json=body, headers=tenant.auth), 409, "conflict")
    problem(client.patch("/v1/repositories/999", json={"name": "x"}, headers=tenant.auth), 404, "not-found")
    assert [e["action"] for e in events(engine, tenant)] == ["repository.created"]


def test_a_change_that_rolls_back_takes_its_event_with_it(app, tenant, engine):
    with app.app_context(), tenant_scope(tenant.binding):
        session = db.session()
        repositories.create_repository(session, github_repo_id=11, owner="o", name="rolled-back")
        session.flush()  # the event row went to the server too, in the same transaction
        assert session.execute(text("SELECT count(*) FROM audit_events")).scalar() == 1
        session.rollback()
        db.session.remove()
    assert events(engine, tenant) == []
    with engine.connect() as conn:
        assert conn.execute(text(f'SELECT count(*) FROM "{tenant.schema_name}".repositories')).scalar() == 0


def test_an_event_that_cannot_be_written_takes_the_change_with_it(client, tenant, engine):
    with engine.begin() as conn:  # a broken deployment: the trail cannot be written
        conn.exec_driver_sql(f'ALTER TABLE "{tenant.schema_name}".audit_events ADD CONSTRAINT never CHECK (false)'
                             " NOT VALID")
    response = client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "orphan"},
                           headers=tenant.auth)
    assert response.status_code == 500 and response.content_type == "application/problem+json"
    assert "Traceback" not in response.get_data(as_text=True)
    with engine.connect() as conn:
        assert conn.execute(text(f'SELECT count(*) FROM "{tenant.schema_name}".repositories')).scalar() == 0


def test_tenant_admins_page_through_their_own_events_newest_first_with_filters(app, client, make_tenant):
    tenant, other = make_tenant(), make_tenant()
    for i in range(1, 5):
        assert client.post("/v1/repositories", json={"github_repo_id": i, "owner": "o", "name": f"r{i}"},
                           headers=tenant.auth).status_code == 201
    assert client.patch("/v1/repositories/1", json={"name": "renamed"}, headers=tenant.auth).status_code == 200
    assert client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "theirs"},
                       headers=other.auth).status_code == 201

    items, pages = walk(client, "/v1/audit-events?limit=2", tenant.auth)
    assert pages == 3 and len(items) == 5
    assert [e["id"] for e in items] == sorted((e["id"] for e in items), reverse=True)
    assert items[0]["action"] == "repository.updated" and items[0]["changes"]["after"] == {
        "name": "renamed", "full_name": "o/renamed"}

    updated, _ = walk(client, "/v1/audit-events?action=repository.updated", tenant.auth)
    assert [e["action"] for e in updated] == ["repository.updated"]
    theirs, _ = walk(client, "/v1/audit-events", other.auth)
    assert [(e["action"], e["changes"]["after"]["name"]) for e in theirs] == [("repository.created", "theirs")]

    now = datetime.now(UTC)
    future = quote((now + timedelta(hours=1)).isoformat())
    past = quote((now - timedelta(hours=1)).isoformat())
    assert walk(client, f"/v1/audit-events?since={future}", tenant.auth)[0] == []
    assert len(walk(client, f"/v1/audit-events?since={past}&until={future}", tenant.auth)[0]) == 5
    assert walk(client, f"/v1/audit-events?until={past}", tenant.auth)[0] == []


@pytest.mark.parametrize("query", ["since=yesterday", "until=2026-01-01T00:00:00", "limit=0", "cursor=nope",
                                   "since=2026-02-01T00:00:00%2B00:00&until=2026-01-01T00:00:00%2B00:00"])
def test_bad_audit_queries_are_422(client, tenant, query):
    problem(client.get(f"/v1/audit-events?{query}", headers=tenant.auth), 422, "validation-error")


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_only_tenant_admins_read_the_trail(app, client, tenant, role):
    headers = key_for(app, tenant, role)
    problem(client.get("/v1/audit-events", headers=headers), 403, "forbidden")
    assert client.get("/v1/repositories", headers=headers).status_code == 200


def test_members_write_and_viewers_only_read(app, client, tenant, engine):
    member, viewer = key_for(app, tenant, "member"), key_for(app, tenant, "viewer")
    body = {"github_repo_id": 3, "owner": "o", "name": "by-member"}
    assert client.post("/v1/repositories", json=body, headers=member).status_code == 201
    problem(client.post("/v1/repositories", json={**body, "github_repo_id": 4}, headers=viewer), 403, "forbidden")
    problem(client.patch("/v1/repositories/1", json={"name": "x"}, headers=viewer), 403, "forbidden")
    problem(client.delete("/v1/repositories/1", headers=viewer), 403, "forbidden")
    assert [r["name"] for r in client.get("/v1/repositories", headers=viewer).json["items"]] == ["by-member"]
    assert [(e["action"], e["role"]) for e in events(engine, tenant)] == [("repository.created", "member")]


# --- platform events --------------------------------------------------------------


def test_platform_actions_are_listed_for_the_admin_with_actor_and_request(admin_client, client, tenant):
    created = admin_client.post("/v1/admin/tenants", json={"slug": "audited", "name": "Audited"},
                                headers={"X-Request-ID": "onboard-42"})
    assert created.status_code == 201
    assert admin_client.patch("/v1/admin/tenants/audited", json={"status": "suspended"}).status_code == 200
    assert admin_client.delete("/v1/admin/tenants/audited").status_code == 204

    items, _ = walk(admin_client, "/v1/admin/audit-events?tenant=audited", {})
    assert [e["action"] for e in items] == ["tenant.deleted", "tenant.suspended", "tenant.provisioned"]
    assert {e["actor"] for e in items} == {"admin-api"}
    assert items[-1]["request_id"] == "onboard-42"
    assert items[-1]["changes"]["after"]["plan"] == "free"
    suspended, _ = walk(admin_client, "/v1/admin/audit-events?action=tenant.suspended&tenant=audited", {})
    assert [e["changes"] for e in suspended] == [{"before": {"status": "active"}, "after": {"status": "suspended"}}]
    problem(client.get("/v1/admin/audit-events", headers=tenant.auth), 403, "forbidden")
