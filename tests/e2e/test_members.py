"""Members through HTTP and the CLI, on real PostgreSQL: the first owner, invitations, roles, the last
owner (also under two concurrent demotions), and members signing in with a JWT of the identity provider.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import jwt
import pytest
from flask import Flask
from sqlalchemy import Engine, text

from app.testing import assert_problem

SECRET = "members-test-secret-long-enough-for-hs256"  # noqa: S105 - a fixture value
AUDIENCE = "tenantry-api"


@pytest.fixture
def member_app(make_app) -> Flask:
    """An app whose JWTs sign in as members (JWT_ROLE_SOURCE=member)."""
    return make_app(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ROLE_SOURCE="member")


def member_jwt(slug: str, sub: str, **claims: Any) -> dict[str, str]:
    payload = {"sub": sub, "tenant": slug, "aud": AUDIENCE, "exp": int(time.time()) + 300, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, SECRET, algorithm='HS256')}"}


def invite(client, auth: dict[str, str], email: str, role: str = "member", **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/members", json={"email": email, "role": role, **extra}, headers=auth)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json


def join(client, auth: dict[str, str], email: str, role: str = "member", sub: str | None = None) -> dict[str, Any]:
    """Invite and accept: an active member linked to ``sub``."""
    invited = invite(client, auth, email, role)
    accepted = client.post("/v1/invitations/accept", headers=auth,
                           json={"token": invited["invitation_token"], "subject": sub or f"sub-{invited['id']}"})
    assert accepted.status_code == 200, accepted.get_data(as_text=True)
    return accepted.json


def events(engine: Engine, schema: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            f'SELECT action, resource_id, actor, member_id, api_key_id, role FROM "{schema}".audit_events '
            "WHERE resource = 'member' ORDER BY id"))]


# --- the first owner --------------------------------------------------------------------


def test_provisioning_with_owner_email_creates_an_active_owner_in_the_same_transaction(admin_client, engine):
    slug = f"own_{uuid.uuid4().hex[:8]}"
    created = admin_client.post("/v1/admin/tenants", json={
        "slug": slug, "name": "Owned", "owner_email": "  Ann@Example.COM "})
    assert created.status_code == 201, created.json
    owner = created.json["owner"]
    assert owner == {"id": 1, "email": "ann@example.com", "role": "owner", "status": "active"}
    try:
        with engine.connect() as conn:
            listed = conn.execute(text(f'SELECT email, role, status, invited_by FROM "t_{slug}".members')).all()
        assert [tuple(m) for m in listed] == [("ann@example.com", "owner", "active", "admin-api")]
        assert events(engine, f"t_{slug}") == [("member.created", "1", "admin-api", None, None, None)]
        # Without owner_email: no member, and owner is null in the response.
        bare = admin_client.post("/v1/admin/tenants", json={"slug": slug + "_b", "name": "Bare"})
        assert bare.status_code == 201 and bare.json["owner"] is None
    finally:
        admin_client.delete(f"/v1/admin/tenants/{slug}")
        admin_client.delete(f"/v1/admin/tenants/{slug}_b")


@pytest.mark.parametrize("email", ["no-at-sign", "a@b", "two@@example.com", "a b@example.com", "ann@exa_mple.com",
                                   ".ann@example.com", "x" * 65 + "@example.com"])
def test_a_bad_owner_email_is_422_and_creates_nothing(admin_client, engine, email):
    slug = f"bad_{uuid.uuid4().hex[:8]}"
    body = assert_problem(admin_client.post("/v1/admin/tenants", json={
        "slug": slug, "name": "Bad", "owner_email": email}), 422, "validation-error")
    assert list(body["errors"]) == ["owner_email"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM public.tenants WHERE slug = :s"), {"s": slug}).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"),
                            {"s": f"t_{slug}"}).scalar() == 0


def test_an_owner_that_cannot_be_written_rolls_the_whole_provisioning_back(app, engine):
    """All or nothing: at revision t0002 there is no members table, so the owner's INSERT fails
    after the schema, the tenant row and the key were written, and none of them stays."""
    from app.extensions import db
    from app.tenancy.errors import ProvisioningFailed
    from app.tenancy.provisioning import provision_tenant

    slug = f"atomic_{uuid.uuid4().hex[:8]}"
    with app.app_context(), pytest.raises(ProvisioningFailed):
        try:
            provision_tenant(db.session(), slug=slug, name="Atomic", revision="t0002", owner_email="a@example.com")
        finally:
            db.session.remove()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM public.tenants WHERE slug = :s"), {"s": slug}).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"),
                            {"s": f"t_{slug}"}).scalar() == 0


def test_with_the_role_layer_on_the_owner_is_written_as_the_tenants_role(make_app, engine, citus):
    if citus:
        from app.tenancy import roles

        pytest.skip(f"the role layer is off on Citus: {roles.CITUS_REASON}")
    roles_app = make_app(TENANT_ROLES="on")
    slug = f"roled_{uuid.uuid4().hex[:8]}"
    admin = roles_app.test_client()
    admin.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {roles_app.config['ADMIN_TOKEN']}"
    created = admin.post("/v1/admin/tenants", json={"slug": slug, "name": "Roled", "owner_email": "r@example.com"})
    try:
        assert created.status_code == 201, created.json
        with engine.connect() as conn:
            table_owner = conn.execute(text(
                f'SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = \'"t_{slug}".members\'::regclass'
            )).scalar()
        assert table_owner.endswith(slug)  # the tenant role's table; the owner row is written as that role
        listed = roles_app.test_client().get("/v1/members", headers={
            "Authorization": f"Bearer {created.json['api_key']['token']}"}).json["items"]
        assert [m["email"] for m in listed] == ["r@example.com"]
        check = roles_app.test_cli_runner().invoke(args=["tenants", "check", "--tenant", slug])
        assert check.exit_code == 0, check.output
    finally:
        admin.delete(f"/v1/admin/tenants/{slug}")


def test_flask_tenants_create_takes_an_owner_email(app, engine):
    slug = f"cli_{uuid.uuid4().hex[:8]}"
    runner = app.test_cli_runner()
    try:
        result = runner.invoke(args=["tenants", "create", slug, "--name", "Cli", "--owner-email", "Bob@Example.com",
                                     "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["owner"] == {"id": 1, "email": "bob@example.com", "role": "owner",
                                                      "status": "active"}
        assert events(engine, f"t_{slug}")[0][:3] == ("member.created", "1", events(engine, f"t_{slug}")[0][2])
        assert events(engine, f"t_{slug}")[0][2].startswith("cli:")
        refused = runner.invoke(args=["tenants", "create", slug + "_x", "--name", "X", "--owner-email", "nope"])
        assert refused.exit_code == 1 and "owner_email" in refused.stderr
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM public.tenants WHERE slug = :s"),
                                {"s": slug + "_x"}).scalar() == 0
    finally:
        app.test_client().delete(f"/v1/admin/tenants/{slug}",
                                 headers={"Authorization": f"Bearer {app.config['ADMIN_TOKEN']}"})


# --- what operators see -------------------------------------------------------------------


def test_operators_list_a_tenants_members_over_the_admin_api_and_the_cli(app, client, admin_client, make_tenant):
    tenant = make_tenant(owner_email="o@example.com")
    other = make_tenant(owner_email="someone-else@example.com")
    invited = invite(client, tenant.auth, "Guest@Example.com", "viewer", display_name="Guest")
    page = admin_client.get(f"/v1/admin/tenants/{tenant.slug}/members")
    assert page.status_code == 200, page.json
    assert [(m["email"], m["role"], m["status"]) for m in page.json["items"]] == [
        ("o@example.com", "owner", "active"), ("guest@example.com", "viewer", "invited")]
    assert page.json["items"] == client.get("/v1/members", headers=tenant.auth).json["items"]  # the tenant's view
    assert "invitation_token" not in page.json["items"][1] and invited["invitation_token"] not in page.text
    first = admin_client.get(f"/v1/admin/tenants/{tenant.slug}/members?limit=1").json
    rest = admin_client.get(f"/v1/admin/tenants/{tenant.slug}/members?limit=1&cursor={first['next_cursor']}").json
    assert [m["email"] for m in first["items"] + rest["items"]] == ["o@example.com", "guest@example.com"]
    # The operator's request is bound to the tenant for the read only: the next one reads another's.
    assert [m["email"] for m in admin_client.get(f"/v1/admin/tenants/{other.slug}/members").json["items"]] == [
        "someone-else@example.com"]
    assert_problem(admin_client.get("/v1/admin/tenants/no_such_tenant/members"), 404, "not-found")
    assert_problem(client.get(f"/v1/admin/tenants/{tenant.slug}/members", headers=tenant.auth), 403, "forbidden")

    runner = app.test_cli_runner()
    listed = runner.invoke(args=["tenants", "members", tenant.slug, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(m["email"], m["status"], m["display_name"]) for m in json.loads(listed.stdout)] == [
        ("o@example.com", "active", None), ("guest@example.com", "invited", "Guest")]
    table = runner.invoke(args=["tenants", "members", tenant.slug])
    assert "guest@example.com" in table.stdout and "someone-else" not in table.stdout
    missing = runner.invoke(args=["tenants", "members", "no_such_tenant"])
    assert missing.exit_code == 1 and "no_such_tenant" in missing.stderr


# --- invitations ------------------------------------------------------------------------


def test_invite_accept_and_a_reused_token_is_409(client, make_tenant, engine):
    tenant = make_tenant(owner_email="owner@example.com")
    invited = invite(client, tenant.auth, "Cat@Example.com", "admin", display_name="Cat")
    assert invited["status"] == "invited" and invited["email"] == "cat@example.com"
    assert invited["invitation_token"].startswith("tni_") and invited["invited_by"].startswith("api-key:")
    with engine.connect() as conn:  # only the hash is stored
        stored = conn.execute(text(f'SELECT token_hash FROM "{tenant.schema_name}".invitations')).scalar()
    assert invited["invitation_token"] not in stored and len(stored) == 64
    # The same address again, in another case: 409.
    assert_problem(client.post("/v1/members", json={"email": "CAT@example.com", "role": "member"},
                               headers=tenant.auth), 409, "conflict")
    # Another address than the invited one: 409, and the invitation stays usable.
    assert_problem(client.post("/v1/invitations/accept", headers=tenant.auth, json={
        "token": invited["invitation_token"], "email": "dog@example.com"}), 409, "conflict")
    accepted = client.post("/v1/invitations/accept", headers=tenant.auth, json={
        "token": invited["invitation_token"], "subject": "idp|cat", "email": " cat@EXAMPLE.com"})
    assert accepted.status_code == 200, accepted.json
    assert (accepted.json["status"], accepted.json["subject"]) == ("active", "idp|cat")
    reused = assert_problem(client.post("/v1/invitations/accept", headers=tenant.auth, json={
        "token": invited["invitation_token"], "subject": "idp|someone-else"}), 409, "invitation-used")
    assert "once" in reused["detail"]
    assert_problem(client.post("/v1/invitations/accept", headers=tenant.auth, json={
        "token": "tni_unknown", "subject": "x"}), 404, "not-found")
    assert_problem(client.post("/v1/invitations/accept", headers=tenant.auth, json={"token": "tni_x"}),
                   422, "validation-error")
    assert [e[0] for e in events(engine, tenant.schema_name)] == ["member.created", "member.invited",
                                                                  "member.joined"]


def test_an_expired_invitation_is_410_and_the_ttl_is_the_setting(make_app, make_tenant, engine):
    short = make_app(INVITATION_TTL_HOURS=2)
    client = short.test_client()
    tenant = make_tenant()
    invited = invite(client, tenant.auth, "late@example.com")
    from datetime import datetime
    expires = datetime.fromisoformat(invited["invitation_expires_at"])
    assert 7190 < (expires - datetime.fromisoformat(invited["created_at"])).total_seconds() < 7210
    with engine.begin() as conn:
        conn.execute(text(f'UPDATE "{tenant.schema_name}".invitations SET expires_at = now() - interval \'1 s\''))
    body = assert_problem(client.post("/v1/invitations/accept", headers=tenant.auth, json={
        "token": invited["invitation_token"], "subject": "late"}), 410, "invitation-expired")
    assert "invite again" in body["detail"]
    member = client.get(f"/v1/members/{invited['id']}", headers=tenant.auth).json
    assert member["status"] == "invited" and member["subject"] is None


def test_a_new_invitation_replaces_an_expired_one(client, make_tenant, engine):
    tenant = make_tenant()
    invited = invite(client, tenant.auth, "again@example.com")
    with engine.begin() as conn:
        conn.execute(text(f'UPDATE "{tenant.schema_name}".invitations SET expires_at = now() - interval \'1 s\''))
    renewed = client.post(f"/v1/members/{invited['id']}/invitation", headers=tenant.auth)
    assert renewed.status_code == 201, renewed.json
    assert renewed.json["invitation_token"] != invited["invitation_token"] and renewed.json["status"] == "invited"
    # The old token is gone (404), the new one works, once.
    assert_problem(client.post("/v1/invitations/accept", headers=tenant.auth, json={
        "token": invited["invitation_token"], "subject": "again"}), 404, "not-found")
    assert client.post("/v1/invitations/accept", headers=tenant.auth, json={
        "token": renewed.json["invitation_token"], "subject": "again"}).status_code == 200
    assert_problem(client.post(f"/v1/members/{invited['id']}/invitation", headers=tenant.auth), 409, "conflict")
    assert_problem(client.post("/v1/members/999/invitation", headers=tenant.auth), 404, "not-found")
    assert [e[0] for e in events(engine, tenant.schema_name)][-2:] == ["member.reinvited", "member.joined"]


def test_two_accepts_of_one_token_at_once_one_wins(client, make_tenant, engine):
    tenant = make_tenant()
    invited = invite(client, tenant.auth, "race@example.com")
    holder = engine.connect()
    holder.begin()
    holder.execute(text(f'SELECT id FROM "{tenant.schema_name}".invitations FOR UPDATE'))
    statuses: list[tuple[int, str]] = []

    def accept(sub: str) -> None:
        response = client.application.test_client().post("/v1/invitations/accept", headers=tenant.auth, json={
            "token": invited["invitation_token"], "subject": sub})
        statuses.append((response.status_code, response.json.get("type", "").rsplit("/", 1)[-1]))

    threads = [threading.Thread(target=accept, args=(f"racer-{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    holder.rollback()
    holder.close()
    for t in threads:
        t.join(timeout=30)
    # The second waited on the invitation's row and saw it accepted.
    assert sorted(statuses) == [(200, ""), (409, "invitation-used")]


def test_another_tenants_members_and_invitations_do_not_exist_from_here(client, make_tenant):
    a, b = make_tenant(owner_email="a@example.com"), make_tenant()
    invited = invite(client, a.auth, "x@example.com")
    assert_problem(client.get(f"/v1/members/{a.owner_id}", headers=b.auth), 404, "not-found")
    assert_problem(client.patch(f"/v1/members/{invited['id']}", json={"role": "admin"}, headers=b.auth), 404)
    # A's token accepted with B's credential: no such invitation in B's schema.
    assert_problem(client.post("/v1/invitations/accept", headers=b.auth, json={
        "token": invited["invitation_token"], "subject": "x"}), 404, "not-found")
    assert client.get("/v1/members", headers=b.auth).json["items"] == []
    assert client.post("/v1/invitations/accept", headers=a.auth, json={
        "token": invited["invitation_token"], "subject": "x"}).status_code == 200


# --- roles and the last owner -----------------------------------------------------------


def test_admins_manage_members_up_to_admin_and_only_owners_touch_owners(client, member_app, make_tenant, engine):
    tenant = make_tenant(owner_email="boss@example.com")
    c = member_app.test_client()
    owner = member_jwt(tenant.slug, "idp|boss", email="boss@example.com", email_verified=True)
    admin = join(c, tenant.auth, "adm@example.com", "admin", sub="idp|adm")
    member = join(c, tenant.auth, "mem@example.com", "member", sub="idp|mem")
    as_admin = member_jwt(tenant.slug, "idp|adm")
    # An admin promotes a member to admin, demotes, disables and enables them.
    assert c.patch(f"/v1/members/{member['id']}", json={"role": "admin"}, headers=as_admin).json["role"] == "admin"
    assert c.patch(f"/v1/members/{member['id']}", json={"role": "viewer"}, headers=as_admin).status_code == 200
    assert c.patch(f"/v1/members/{member['id']}", json={"status": "disabled"},
                   headers=as_admin).json["status"] == "disabled"
    assert c.patch(f"/v1/members/{member['id']}", json={"status": "active"}, headers=as_admin).status_code == 200
    # But neither grants nor revokes owner, nor invites one; nor does an admin API key.
    for auth in (as_admin, tenant.auth):
        assert_problem(c.patch(f"/v1/members/{member['id']}", json={"role": "owner"}, headers=auth), 403, "forbidden")
        assert_problem(c.patch(f"/v1/members/{tenant.owner_id}", json={"status": "disabled"}, headers=auth),
                       403, "forbidden")
        assert_problem(c.delete(f"/v1/members/{tenant.owner_id}", headers=auth), 403, "forbidden")
        assert_problem(c.post("/v1/members", json={"email": "o2@example.com", "role": "owner"}, headers=auth),
                       403, "forbidden")
    # A member (or viewer) manages nobody; a viewer does not even list.
    assert_problem(c.patch(f"/v1/members/{admin['id']}", json={"role": "viewer"},
                           headers=member_jwt(tenant.slug, "idp|mem")), 403, "forbidden")
    # The owner does: promotes the admin to owner.
    promoted = c.patch(f"/v1/members/{admin['id']}", json={"role": "owner"}, headers=owner)
    assert promoted.status_code == 200 and promoted.json["role"] == "owner"
    assert [e[:4] for e in events(engine, tenant.schema_name)][-1] == (
        "member.role_changed", str(admin["id"]), f"member:{tenant.owner_id}", tenant.owner_id)


def test_an_admin_key_may_make_the_first_owner_of_a_tenant_without_one(client, make_tenant):
    tenant = make_tenant()  # no owner_email: no owner, as every tenant from before members
    first = invite(client, tenant.auth, "first@example.com", "owner")
    assert first["role"] == "owner"
    client.post("/v1/invitations/accept", headers=tenant.auth, json={"token": first["invitation_token"],
                                                                    "subject": "first"})
    # From now on the tenant has an active owner: an admin key makes no more.
    assert_problem(client.post("/v1/members", json={"email": "second@example.com", "role": "owner"},
                               headers=tenant.auth), 403, "forbidden")


def test_the_last_active_owner_cannot_be_demoted_disabled_or_removed(member_app, make_tenant):
    tenant = make_tenant(owner_email="solo@example.com")
    c = member_app.test_client()
    owner = member_jwt(tenant.slug, "solo", email="solo@example.com", email_verified=True)
    for change in ({"role": "admin"}, {"status": "disabled"}):
        body = assert_problem(c.patch(f"/v1/members/{tenant.owner_id}", json=change, headers=owner), 409, "last-owner")
        assert "last active owner" in body["detail"]
    assert_problem(c.delete(f"/v1/members/{tenant.owner_id}", headers=owner), 409, "last-owner")
    # With a second owner, one may step down.
    second = join(c, tenant.auth, "two@example.com", "member", sub="two")
    assert c.patch(f"/v1/members/{second['id']}", json={"role": "owner"}, headers=owner).status_code == 200
    assert c.patch(f"/v1/members/{tenant.owner_id}", json={"role": "admin"}, headers=owner).status_code == 200
    assert c.delete(f"/v1/members/{second['id']}", headers=member_jwt(tenant.slug, "two")).status_code == 409


def test_two_concurrent_demotions_of_the_last_two_owners_leave_one_owner(member_app, make_tenant, engine):
    """Each owner demotes the other at the same moment: the owners' rows are locked before deciding,
    so the second change sees the first and gets 409; without the lock both would pass."""
    for _ in range(3):
        tenant = make_tenant(owner_email="a@example.com")
        c = member_app.test_client()
        b = join(c, tenant.auth, "b@example.com", "member", sub="b")
        as_a = member_jwt(tenant.slug, "a", email="a@example.com", email_verified=True)
        assert c.patch(f"/v1/members/{b['id']}", json={"role": "owner"}, headers=as_a).status_code == 200
        # Hold the owners' rows so that both requests are in flight before either decides.
        holder = engine.connect()
        holder.begin()
        holder.execute(text(f'SELECT id FROM "{tenant.schema_name}".members FOR UPDATE'))
        statuses: list[int] = []
        barrier = threading.Barrier(2)

        def demote(target: int, auth: dict[str, str], barrier=barrier, statuses=statuses) -> None:
            barrier.wait()
            statuses.append(member_app.test_client().patch(f"/v1/members/{target}", json={"role": "admin"},
                                                           headers=auth).status_code)

        threads = [threading.Thread(target=demote, args=(b["id"], as_a)),
                   threading.Thread(target=demote, args=(tenant.owner_id, member_jwt(tenant.slug, "b")))]
        for t in threads:
            t.start()
        time.sleep(0.5)
        holder.rollback()
        holder.close()
        for t in threads:
            t.join(timeout=30)
        assert sorted(statuses) == [200, 409]
        with engine.connect() as conn:
            owners = conn.execute(text(f'SELECT count(*) FROM "{tenant.schema_name}".members'
                                       " WHERE role = 'owner' AND status = 'active'")).scalar()
        assert owners == 1


# --- members signing in with a JWT ------------------------------------------------------


def test_a_member_jwt_takes_the_member_role_not_the_claim(member_app, make_tenant, engine):
    tenant = make_tenant(owner_email="o@example.com")
    c = member_app.test_client()
    viewer = join(c, tenant.auth, "v@example.com", "viewer", sub="idp|v")
    as_viewer = member_jwt(tenant.slug, "idp|v", role="admin")  # the claim is ignored
    assert c.get("/v1/repositories", headers=as_viewer).status_code == 200
    assert_problem(c.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"},
                          headers=as_viewer), 403, "forbidden")
    assert c.patch(f"/v1/members/{viewer['id']}", json={"role": "member"},
                   headers=tenant.auth).status_code == 200
    created = c.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"}, headers=as_viewer)
    assert created.status_code == 201  # the new role applies at the next request
    with engine.connect() as conn:
        actor = conn.execute(text(f'SELECT actor, member_id, role, api_key_id FROM "{tenant.schema_name}".audit_events'
                                  " WHERE action = 'repository.created'")).one()
        seen = conn.execute(text(f'SELECT last_seen_at FROM "{tenant.schema_name}".members WHERE id = :i'),
                            {"i": viewer["id"]}).scalar()
    assert tuple(actor) == (f"member:{viewer['id']}", viewer["id"], "member", None)
    assert seen is not None
    audit = c.get("/v1/audit-events", headers=member_jwt(tenant.slug, "o", email="o@example.com",
                                                         email_verified=True)).json["items"][0]
    assert (audit["actor"], audit["member_id"]) == (f"member:{viewer['id']}", viewer["id"])


def test_a_verified_email_signs_in_an_unverified_one_or_a_stranger_does_not(member_app, make_tenant):
    tenant = make_tenant(owner_email="Émile@Example.com")
    c = member_app.test_client()
    ok = member_jwt(tenant.slug, "idp|emile", email="émile@example.com", email_verified=True)
    assert c.get("/v1/members", headers=ok).status_code == 200
    for refused in (member_jwt(tenant.slug, "idp|emile", email="émile@example.com"),
                    member_jwt(tenant.slug, "idp|emile", email="émile@example.com", email_verified="true"),
                    member_jwt(tenant.slug, "idp|stranger")):
        assert_problem(c.get("/v1/members", headers=refused), 401, "unauthorized")
    # An invited member (never accepted) is not signed in either.
    invited = invite(c, tenant.auth, "inv@example.com")
    assert_problem(c.get("/v1/members", headers=member_jwt(tenant.slug, "x", email="inv@example.com",
                                                            email_verified=True)), 401, "unauthorized")
    assert invited["status"] == "invited"


def test_a_disabled_member_is_refused_at_once_by_another_app_instance(member_app, make_app, make_tenant):
    tenant = make_tenant(owner_email="o@example.com")
    first, second = member_app.test_client(), make_app(
        JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE, JWT_ROLE_SOURCE="member").test_client()
    worker = join(first, tenant.auth, "w@example.com", "member", sub="idp|w")
    as_worker = member_jwt(tenant.slug, "idp|w")
    assert second.get("/v1/repositories", headers=as_worker).status_code == 200
    assert first.patch(f"/v1/members/{worker['id']}", json={"status": "disabled"},
                       headers=tenant.auth).status_code == 200
    body = assert_problem(second.get("/v1/repositories", headers=as_worker), 401, "unauthorized")
    assert "disabled" in body["detail"]
    assert first.patch(f"/v1/members/{worker['id']}", json={"status": "active"},
                       headers=tenant.auth).status_code == 200
    assert second.get("/v1/repositories", headers=as_worker).status_code == 200
    assert first.delete(f"/v1/members/{worker['id']}", headers=tenant.auth).status_code == 204
    assert_problem(second.get("/v1/repositories", headers=as_worker), 401, "unauthorized")


def test_with_role_source_claim_a_jwt_still_acts_by_its_role_claim(make_app, make_tenant):
    claim_app = make_app(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE)
    tenant = make_tenant()
    c = claim_app.test_client()
    assert c.get("/v1/members", headers=member_jwt(tenant.slug, "svc", role="member")).status_code == 200
    assert_problem(c.get("/v1/members", headers=member_jwt(tenant.slug, "svc")), 401, "unauthorized")


def test_an_invited_person_accepts_with_their_own_jwt_and_nothing_else_opens_to_it(member_app, make_tenant, engine):
    tenant = make_tenant(owner_email="o@example.com")
    c = member_app.test_client()
    invited = invite(c, tenant.auth, "Ada@Example.com", "admin")
    ada = member_jwt(tenant.slug, "idp|ada", email="ada@EXAMPLE.com", email_verified=True)
    # Not a member yet: every other route refuses the person's token.
    for method, path in (("get", "/v1/members"), ("get", "/v1/repositories"), ("get", "/v1/tenant"),
                         ("post", "/v1/api-keys")):
        assert_problem(getattr(c, method)(path, headers=ada, json={}), 401, "unauthorized")
    # A body naming someone else than the token: 422, nothing accepted.
    body = assert_problem(c.post("/v1/invitations/accept", headers=ada, json={
        "token": invited["invitation_token"], "subject": "idp|mallory", "email": "mallory@example.com"}),
        422, "validation-error")
    assert set(body["errors"]) == {"subject", "email"}
    # The token's own identity, body left out (or repeated): the member joins, linked to its sub.
    accepted = c.post("/v1/invitations/accept", headers=ada,
                      json={"token": invited["invitation_token"], "email": "ada@example.com"})
    assert accepted.status_code == 200, accepted.json
    assert (accepted.json["status"], accepted.json["subject"], accepted.json["role"]) == ("active", "idp|ada", "admin")
    assert events(engine, tenant.schema_name)[-1][:3] == ("member.joined", str(invited["id"]), "jwt:idp|ada")
    # Now a member: the same token signs in with the member's role.
    assert c.get("/v1/members", headers=ada).status_code == 200
    assert c.post("/v1/members", headers=ada, json={"email": "x@example.com", "role": "member"}).status_code == 201


def test_a_jwt_accepts_only_an_invitation_its_identity_fits(member_app, make_tenant):
    tenant = make_tenant(owner_email="o@example.com")
    c = member_app.test_client()
    join(c, tenant.auth, "m@example.com", "member", sub="idp|m")
    for_bea = invite(c, tenant.auth, "bea@example.com")["invitation_token"]
    # A verified email other than the invited one: 409, and the invitation stays usable.
    assert_problem(c.post("/v1/invitations/accept", json={"token": for_bea}, headers=member_jwt(
        tenant.slug, "idp|eve", email="eve@example.com", email_verified=True)), 409, "conflict")
    # A member's token (its sub is linked already) cannot take a second membership.
    assert_problem(c.post("/v1/invitations/accept", json={"token": for_bea},
                          headers=member_jwt(tenant.slug, "idp|m")), 409, "conflict")
    # An unverified email is no identity to compare: the token's sub alone is linked.
    accepted = c.post("/v1/invitations/accept", json={"token": for_bea}, headers=member_jwt(
        tenant.slug, "idp|bea", email="bea@example.com"))
    assert (accepted.status_code, accepted.json["subject"]) == (200, "idp|bea")
    # Another tenant's token: no such invitation there.
    other = make_tenant()
    again = invite(c, other.auth, "bea@example.com")["invitation_token"]
    assert_problem(c.post("/v1/invitations/accept", json={"token": again},
                          headers=member_jwt(tenant.slug, "idp|newbie")), 404, "not-found")


def test_a_key_a_member_creates_is_labelled_with_that_member(member_app, make_tenant):
    tenant = make_tenant(owner_email="o@example.com")
    c = member_app.test_client()
    admin = join(c, tenant.auth, "a@example.com", "admin", sub="idp|a")
    by_member = c.post("/v1/api-keys", json={"role": "viewer", "name": "ci"}, headers=member_jwt(tenant.slug, "idp|a"))
    assert by_member.status_code == 201, by_member.json
    assert by_member.json["created_by_member_id"] == admin["id"]
    by_key = c.post("/v1/api-keys", json={"role": "viewer"}, headers=tenant.auth).json
    assert by_key["created_by_member_id"] is None
    listed = {k["id"]: k["created_by_member_id"] for k in c.get("/v1/api-keys", headers=tenant.auth).json["items"]}
    assert listed[by_member.json["id"]] == admin["id"] and listed[by_key["id"]] is None
    # A label, not a link: the member's removal leaves it.
    assert c.delete(f"/v1/members/{admin['id']}", headers=tenant.auth).status_code == 204
    listed = {k["id"]: k["created_by_member_id"] for k in c.get("/v1/api-keys", headers=tenant.auth).json["items"]}
    assert listed[by_member.json["id"]] == admin["id"]
