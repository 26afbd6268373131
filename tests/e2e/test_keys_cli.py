"""flask tenants keys create|list|revoke, through Flask's CLI runner."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.models.public import PlatformAuditEvent
from app.models.tenant import AuditEvent
from app.tenancy import tenant_scope
from app.tenancy.api_keys import hash_secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def keys(runner, slug: str) -> dict[int, dict]:
    result = runner.invoke(args=["tenants", "keys", "list", slug, "--json"])
    assert result.exit_code == 0, result.output
    return {k["id"]: k for k in json.loads(result.stdout)}


def create(runner, slug: str, role: str, *extra: str) -> dict:
    result = runner.invoke(args=["tenants", "keys", "create", slug, "--role", role, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def platform_events(session_factory, slug: str) -> list[PlatformAuditEvent]:
    with session_factory() as session:
        return list(session.scalars(
            select(PlatformAuditEvent).where(PlatformAuditEvent.tenant_slug == slug,
                                             PlatformAuditEvent.resource == "api_key")
            .order_by(PlatformAuditEvent.id)))


def test_create_prints_a_working_token_once_and_list_never_shows_it(app, client, tenant):
    runner = app.test_cli_runner()
    created = create(runner, tenant.slug, "viewer", "--name", "ci reader")
    assert created["token"].startswith(f"tnt_{created['prefix']}_")
    assert (created["role"], created["name"]) == ("viewer", "ci reader")
    viewer = bearer(created["token"])
    assert client.get("/v1/repositories", headers=viewer).status_code == 200
    assert client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"},
                       headers=viewer).status_code == 403  # the role is the one asked for

    listed = keys(runner, tenant.slug)
    assert sorted(k["role"] for k in listed.values()) == ["admin", "viewer"]
    shown = listed[created["id"]]
    assert shown["name"] == "ci reader" and shown["revoked_at"] is None
    out = runner.invoke(args=["tenants", "keys", "list", tenant.slug]).output
    secret = created["token"].split("_", 2)[2]
    assert created["prefix"] in out and "ci reader" in out
    assert secret not in json.dumps(listed) + out and hash_secret(secret) not in json.dumps(listed) + out

    human = runner.invoke(args=["tenants", "keys", "create", tenant.slug, "--role", "member"])
    assert human.exit_code == 0
    [token_line] = [line for line in human.output.splitlines() if "shown once" in line]
    token = token_line.split()[-1]
    assert client.get("/v1/repositories", headers=bearer(token)).status_code == 200


def test_revoke_refuses_the_key_at_once_and_leaves_a_platform_event(app, client, tenant, session_factory):
    runner = app.test_cli_runner()
    created = create(runner, tenant.slug, "member")
    result = runner.invoke(args=["tenants", "keys", "revoke", tenant.slug, str(created["id"])])
    assert result.exit_code == 0, result.output
    assert f"revoked member key {created['id']}" in result.output
    assert client.get("/v1/repositories", headers=bearer(created["token"])).status_code == 401
    revoked_at = keys(runner, tenant.slug)[created["id"]]["revoked_at"]
    assert revoked_at is not None

    issued, revoked = platform_events(session_factory, tenant.slug)
    assert (issued.action, revoked.action) == ("api_key.created", "api_key.revoked")
    for event in (issued, revoked):
        assert event.actor.startswith("cli:") and "@" in event.actor
        assert (event.tenant_id, event.tenant_slug, event.resource_id) == (
            tenant.tenant_id, tenant.slug, str(created["id"]))
    assert revoked.changes["before"] == {"revoked_at": None}
    assert revoked.changes["after"]["revoked_at"] is not None
    secret = created["token"].split("_", 2)[2]
    trail = json.dumps([issued.changes, revoked.changes])
    assert secret not in trail and hash_secret(secret) not in trail
    # An operator's change is not the tenant's: nothing in the tenant's own trail.
    with tenant_scope(tenant.binding), session_factory() as session:
        assert session.scalars(select(AuditEvent).where(AuditEvent.resource == "api_key")).all() == []


def test_revoke_refuses_the_last_admin_key_with_one_line_and_status_1(app, client, tenant, session_factory):
    runner = app.test_cli_runner()
    [admin_id] = [k["id"] for k in keys(runner, tenant.slug).values() if k["role"] == "admin"]
    result = runner.invoke(args=["tenants", "keys", "revoke", tenant.slug, str(admin_id)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "last active admin key" in result.stderr
    assert client.get("/v1/api-keys", headers=tenant.auth).status_code == 200
    assert platform_events(session_factory, tenant.slug) == []  # rolled back with the refusal

    second = create(runner, tenant.slug, "admin")
    assert runner.invoke(args=["tenants", "keys", "revoke", tenant.slug, str(admin_id)]).exit_code == 0
    last = runner.invoke(args=["tenants", "keys", "revoke", tenant.slug, str(second["id"])])
    assert last.exit_code == 1 and "last active admin key" in last.stderr


@pytest.mark.parametrize("case", ["other tenant's key", "unknown key", "already revoked", "unknown tenant"])
def test_revoke_domain_errors_exit_1(app, make_tenant, case):
    runner = app.test_cli_runner()
    mine, other = make_tenant(), make_tenant()
    theirs = create(runner, other.slug, "viewer")
    slug, key_id, message = {
        "other tenant's key": (mine.slug, theirs["id"], "not found"),
        "unknown key": (mine.slug, 10**9, "not found"),
        "already revoked": (other.slug, theirs["id"], "already revoked"),
        "unknown tenant": ("nobody_here", theirs["id"], "no tenant"),
    }[case]
    if case == "already revoked":
        assert runner.invoke(args=["tenants", "keys", "revoke", other.slug, str(theirs["id"])]).exit_code == 0
    result = runner.invoke(args=["tenants", "keys", "revoke", slug, str(key_id)])
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and message in result.stderr
    expected_revoked = case == "already revoked"
    assert (keys(runner, other.slug)[theirs["id"]]["revoked_at"] is not None) is expected_revoked


@pytest.mark.parametrize(
    "args",
    [
        ["create", "{slug}", "--role", "owner"],
        ["create", "{slug}"],
        ["create", "{slug}", "--role", "viewer", "--name", "x" * 101],
        ["revoke", "{slug}", "not-a-number"],
    ],
)
def test_usage_errors_exit_2_and_issue_nothing(app, tenant, args):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tenants", "keys", *[a.format(slug=tenant.slug) for a in args]])
    assert result.exit_code == 2, result.output
    assert len(keys(runner, tenant.slug)) == 1


def test_list_and_create_for_an_unknown_tenant_exit_1(app):
    runner = app.test_cli_runner()
    for args in (["list", "nobody_here"], ["create", "nobody_here", "--role", "admin"]):
        result = runner.invoke(args=["tenants", "keys", *args])
        assert result.exit_code == 1 and "no tenant with slug 'nobody_here'" in result.stderr
