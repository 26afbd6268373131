"""/v1/api-keys and key roles, through HTTP on real PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from app.models.tenant import AuditEvent
from app.tenancy import tenant_scope
from app.tenancy.api_keys import hash_secret

ROLES = ("viewer", "member", "admin")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def issue(client, tenant, role: str, name: str | None = None) -> dict:
    body = {"role": role} if name is None else {"role": role, "name": name}
    response = client.post("/v1/api-keys", json=body, headers=tenant.auth)
    assert response.status_code == 201, response.json
    return response.json


def listed(client, tenant) -> dict[int, dict]:
    response = client.get("/v1/api-keys", headers=tenant.auth)
    assert response.status_code == 200, response.json
    return {k["id"]: k for k in response.json["items"]}


def own_key_id(client, tenant) -> int:
    prefix = tenant.token.split("_")[1]
    [key_id] = [k["id"] for k in listed(client, tenant).values() if k["prefix"] == prefix]
    return key_id


def assert_problem(response, status: int, type_slug: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert response.json["type"] == f"https://tenantry.dev/problems/{type_slug}"
    return response.json


def active_admins(engine, tenant) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT id FROM public.api_keys WHERE tenant_id = :t AND role = 'admin'"
            " AND revoked_at IS NULL ORDER BY id"), {"t": tenant.tenant_id}).scalars())


# --- issuing and listing ------------------------------------------------------------


def test_an_admin_lists_the_tenants_keys_without_secrets(client, tenant):
    [key] = listed(client, tenant).values()
    assert set(key) == {"id", "prefix", "name", "role", "created_at", "last_used_at", "revoked_at",
                        "created_by_member_id"}
    assert key["prefix"] == tenant.token.split("_")[1]
    assert (key["role"], key["name"], key["revoked_at"]) == ("admin", None, None)


def test_a_new_key_shows_its_token_once_and_works_at_once(client, tenant):
    created = issue(client, tenant, "viewer", name="ci reader")
    assert created["token"].startswith(f"tnt_{created['prefix']}_")
    assert (created["role"], created["name"], created["last_used_at"], created["revoked_at"]) == (
        "viewer", "ci reader", None, None)
    assert client.get("/v1/repositories", headers=bearer(created["token"])).status_code == 200
    shown = listed(client, tenant)[created["id"]]
    assert "token" not in shown
    same = ("id", "prefix", "name", "role", "created_at", "revoked_at")
    assert [shown[f] for f in same] == [created[f] for f in same]


def test_keys_are_paginated_in_id_order(client, tenant):
    ids = [issue(client, tenant, "viewer")["id"] for _ in range(4)]
    first = client.get("/v1/api-keys?limit=3", headers=tenant.auth).json
    second = client.get(f"/v1/api-keys?limit=3&cursor={first['next_cursor']}", headers=tenant.auth).json
    seen = [k["id"] for k in first["items"] + second["items"]]
    assert seen == sorted(seen) and seen[1:] == ids and second["next_cursor"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "owner"}, "role"),
        ({}, "role"),
        ({"role": 3}, "role"),
        ({"role": "viewer", "name": ""}, "name"),
        ({"role": "viewer", "name": "x" * 101}, "name"),
    ],
)
def test_a_bad_role_or_name_is_422_and_issues_nothing(client, tenant, body, field):
    problem = assert_problem(client.post("/v1/api-keys", json=body, headers=tenant.auth), 422, "validation-error")
    assert field in problem["errors"]
    assert len(listed(client, tenant)) == 1


def test_key_endpoints_need_a_key(client, tenant):
    assert_problem(client.get("/v1/api-keys"), 401, "unauthorized")
    assert_problem(client.post("/v1/api-keys", json={"role": "admin"}), 401, "unauthorized")
    assert_problem(client.get("/v1/api-keys", headers={"Authorization": "Bearer test-admin-token"}),
                   401, "unauthorized")


# --- roles --------------------------------------------------------------------------


@pytest.fixture
def tokens(client, tenant) -> dict[str, str]:
    """One key per role in one tenant."""
    return {"viewer": issue(client, tenant, "viewer")["token"],
            "member": issue(client, tenant, "member")["token"],
            "admin": tenant.token}


@pytest.fixture
def repo(client, tenant) -> dict:
    response = client.post("/v1/repositories", json={"github_repo_id": 7, "owner": "octo", "name": "seven"},
                           headers=tenant.auth)
    assert response.status_code == 201
    return response.json


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_repositories(client, tokens, repo, role):
    assert client.get("/v1/repositories", headers=bearer(tokens[role])).json["items"] == [repo]
    assert client.get(f"/v1/repositories/{repo['id']}", headers=bearer(tokens[role])).json == repo


def test_a_viewer_cannot_write_repositories(client, tenant, tokens, repo):
    viewer = bearer(tokens["viewer"])
    attempts = [
        client.post("/v1/repositories", json={"github_repo_id": 8, "owner": "o", "name": "n"}, headers=viewer),
        client.patch(f"/v1/repositories/{repo['id']}", json={"name": "renamed"}, headers=viewer),
        client.delete(f"/v1/repositories/{repo['id']}", headers=viewer),
    ]
    for response in attempts:
        problem = assert_problem(response, 403, "forbidden")
        assert "'viewer'" in problem["detail"] and "'member'" in problem["detail"]
    assert client.get("/v1/repositories", headers=tenant.auth).json["items"] == [repo]


@pytest.mark.parametrize("role", ["member", "admin"])
def test_members_and_admins_write_repositories(client, tokens, repo, role):
    auth = bearer(tokens[role])
    created = client.post("/v1/repositories", json={"github_repo_id": 8, "owner": "o", "name": "n"}, headers=auth)
    assert created.status_code == 201
    patched = client.patch(f"/v1/repositories/{repo['id']}", json={"name": "renamed"}, headers=auth)
    assert patched.status_code == 200 and patched.json["name"] == "renamed"
    assert client.delete(f"/v1/repositories/{created.json['id']}", headers=auth).status_code == 204


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_only_admins_manage_keys(client, tenant, tokens, role):
    auth = bearer(tokens[role])
    before = listed(client, tenant)
    admin_id = own_key_id(client, tenant)
    for response in (
        client.get("/v1/api-keys", headers=auth),
        client.post("/v1/api-keys", json={"role": "admin"}, headers=auth),
        client.post("/v1/api-keys", json={"role": role}, headers=auth),
        client.delete(f"/v1/api-keys/{admin_id}", headers=auth),
    ):
        problem = assert_problem(response, 403, "forbidden")
        assert f"'{role}'" in problem["detail"] and "'admin'" in problem["detail"]
    after = listed(client, tenant)
    assert after.keys() == before.keys() and after[admin_id]["revoked_at"] is None


# --- revocation ---------------------------------------------------------------------


def test_a_revoked_key_is_refused_at_once_and_stays_listed(client, tenant):
    key = issue(client, tenant, "member")
    assert client.get("/v1/repositories", headers=bearer(key["token"])).status_code == 200
    response = client.delete(f"/v1/api-keys/{key['id']}", headers=tenant.auth)
    assert response.status_code == 204 and response.get_data() == b""
    assert "revoked" in assert_problem(
        client.get("/v1/repositories", headers=bearer(key["token"])), 401, "unauthorized")["detail"]
    revoked_at = datetime.fromisoformat(listed(client, tenant)[key["id"]]["revoked_at"])
    assert abs(datetime.now(UTC) - revoked_at) < timedelta(minutes=1)


def test_a_revocation_is_seen_by_every_process(client, tenant, make_app):
    key = issue(client, tenant, "viewer")
    elsewhere = make_app().test_client()  # another app: its own engine, pool and sessions
    assert elsewhere.get("/v1/repositories", headers=bearer(key["token"])).status_code == 200
    assert client.delete(f"/v1/api-keys/{key['id']}", headers=tenant.auth).status_code == 204
    assert_problem(elsewhere.get("/v1/repositories", headers=bearer(key["token"])), 401, "unauthorized")
    assert elsewhere.get("/v1/repositories", headers=tenant.auth).status_code == 200


def test_revoking_twice_is_409(client, tenant):
    key = issue(client, tenant, "viewer")
    assert client.delete(f"/v1/api-keys/{key['id']}", headers=tenant.auth).status_code == 204
    revoked_at = listed(client, tenant)[key["id"]]["revoked_at"]
    assert_problem(client.delete(f"/v1/api-keys/{key['id']}", headers=tenant.auth), 409, "api-key-revoked")
    assert listed(client, tenant)[key["id"]]["revoked_at"] == revoked_at


def test_another_tenants_key_does_not_exist_from_here(client, make_tenant):
    a, b = make_tenant(), make_tenant()
    b_viewer = issue(client, b, "viewer")
    b_admin_id = own_key_id(client, b)
    for key_id in (b_viewer["id"], b_admin_id, 10**9, 2**63):
        assert_problem(client.delete(f"/v1/api-keys/{key_id}", headers=a.auth), 404, "not-found")
    assert b_viewer["id"] not in listed(client, a) and b_admin_id not in listed(client, a)
    assert client.get("/v1/repositories", headers=bearer(b_viewer["token"])).status_code == 200
    assert all(k["revoked_at"] is None for k in listed(client, b).values())


def test_the_last_active_admin_key_cannot_be_revoked(client, tenant, engine):
    admin_id = own_key_id(client, tenant)
    problem = assert_problem(client.delete(f"/v1/api-keys/{admin_id}", headers=tenant.auth), 409, "last-admin-key")
    assert "last active admin key" in problem["detail"]
    # Keys of other roles do not count as admins, and do not need one to remain.
    member = issue(client, tenant, "member")
    assert_problem(client.delete(f"/v1/api-keys/{admin_id}", headers=tenant.auth), 409, "last-admin-key")
    assert client.delete(f"/v1/api-keys/{member['id']}", headers=tenant.auth).status_code == 204
    assert active_admins(engine, tenant) == [admin_id]
    assert client.get("/v1/api-keys", headers=tenant.auth).status_code == 200


def test_an_admin_may_revoke_its_own_key_while_another_admin_remains(client, tenant, engine):
    admin_id = own_key_id(client, tenant)
    other = issue(client, tenant, "admin")
    assert client.delete(f"/v1/api-keys/{admin_id}", headers=tenant.auth).status_code == 204
    assert_problem(client.get("/v1/api-keys", headers=tenant.auth), 401, "unauthorized")
    assert_problem(client.delete(f"/v1/api-keys/{other['id']}", headers=bearer(other["token"])),
                   409, "last-admin-key")
    assert active_admins(engine, tenant) == [other["id"]]


def test_two_admins_revoking_each_other_at_once_leave_one_admin(app, client, tenant, engine):
    first_id = own_key_id(client, tenant)
    second = issue(client, tenant, "admin")
    with engine.begin() as conn:  # neither key used lately: both requests would refresh last_used_at
        conn.execute(text("UPDATE public.api_keys SET last_used_at = NULL WHERE tenant_id = :t"),
                     {"t": tenant.tenant_id})
    requests = {  # each admin revokes the other's key
        "first": (second["id"], tenant.token),
        "second": (first_id, second["token"]),
    }
    results: dict[str, object] = {}

    def revoke(who: str) -> None:
        key_id, token = requests[who]
        try:
            results[who] = app.test_client().delete(f"/v1/api-keys/{key_id}", headers=bearer(token))
        except BaseException as exc:  # reported by the assertions below
            results[who] = exc

    # Hold both admin rows, so that both requests are inside their revocation, waiting,
    # before either may go on; then let go and let the database order them.
    blocker = engine.connect()
    try:
        blocker.execute(text("SELECT id FROM public.api_keys WHERE tenant_id = :t FOR UPDATE"),
                        {"t": tenant.tenant_id})
        threads = [threading.Thread(target=revoke, args=(who,)) for who in requests]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while waiting_on_locks(engine) < 2:
            assert time.monotonic() < deadline, f"both requests should wait on the lock: {results}"
            time.sleep(0.05)
    finally:
        blocker.rollback()
        blocker.close()
    for thread in threads:
        thread.join(timeout=30)
    statuses = sorted(getattr(r, "status_code", r) for r in results.values())
    assert statuses == [204, 409], {who: getattr(r, "json", r) for who, r in results.items()}
    loser = next(r for r in results.values() if r.status_code == 409)
    assert loser.json["type"].endswith("/last-admin-key")
    assert len(active_admins(engine, tenant)) == 1


def waiting_on_locks(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'")).scalar()


# --- last_used_at -------------------------------------------------------------------


def test_using_a_key_records_when_at_most_once_a_minute(client, tenant, engine):
    key = issue(client, tenant, "viewer")
    assert listed(client, tenant)[key["id"]]["last_used_at"] is None
    assert client.get("/v1/repositories", headers=bearer(key["token"])).status_code == 200
    first = listed(client, tenant)[key["id"]]["last_used_at"]
    assert first is not None
    assert abs(datetime.now(UTC) - datetime.fromisoformat(first)) < timedelta(minutes=1)

    assert client.get("/v1/repositories", headers=bearer(key["token"])).status_code == 200
    assert listed(client, tenant)[key["id"]]["last_used_at"] == first  # within the minute: no write

    with engine.begin() as conn:
        conn.execute(text("UPDATE public.api_keys SET last_used_at = now() - interval '2 minutes'"
                          " WHERE id = :id"), {"id": key["id"]})
    stale = listed(client, tenant)[key["id"]]["last_used_at"]
    assert client.get("/v1/repositories", headers=bearer(key["token"])).status_code == 200
    fresh = listed(client, tenant)[key["id"]]["last_used_at"]
    assert datetime.fromisoformat(fresh) - datetime.fromisoformat(stale) > timedelta(seconds=90)


# --- audit --------------------------------------------------------------------------


def tenant_events(session_factory, tenant) -> list[AuditEvent]:
    with tenant_scope(tenant.binding), session_factory() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_issuing_and_revoking_are_audited_in_the_tenant_without_secrets(client, tenant, session_factory):
    admin_id = own_key_id(client, tenant)
    created = client.post("/v1/api-keys", json={"role": "viewer", "name": "ci"},
                          headers={**tenant.auth, "X-Request-ID": "req-issue"}).json
    assert client.delete(f"/v1/api-keys/{created['id']}",
                         headers={**tenant.auth, "X-Request-ID": "req-revoke"}).status_code == 204
    # Refused changes leave no event: they rolled back with their transaction.
    assert client.delete(f"/v1/api-keys/{created['id']}", headers=tenant.auth).status_code == 409
    assert client.delete(f"/v1/api-keys/{admin_id}", headers=tenant.auth).status_code == 409

    events = tenant_events(session_factory, tenant)
    assert [(e.action, e.resource, e.resource_id, e.api_key_id, e.role, e.request_id) for e in events] == [
        ("api_key.created", "api_key", str(created["id"]), admin_id, "admin", "req-issue"),
        ("api_key.revoked", "api_key", str(created["id"]), admin_id, "admin", "req-revoke"),
    ]
    assert events[0].changes == {"before": None,
                                 "after": {"prefix": created["prefix"], "name": "ci", "role": "viewer"}}
    revoked_at = listed(client, tenant)[created["id"]]["revoked_at"]
    assert events[1].changes == {"before": {"revoked_at": None}, "after": {"revoked_at": revoked_at}}
    secret = created["token"].split("_", 2)[2]
    trail = json.dumps([e.changes for e in events])
    assert secret not in trail and hash_secret(secret) not in trail
