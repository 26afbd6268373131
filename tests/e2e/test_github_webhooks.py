"""GitHub App webhooks through HTTP and the CLI, on real PostgreSQL.

Payloads are shaped like GitHub's documented examples (docs.github.com, "Webhook events
and payloads": installation, installation_repositories, repository,
installation_target), trimmed to the fields GitHub always sends, and signed with the
configured secret as GitHub signs them (``X-Hub-Signature-256: sha256=<hex HMAC>``).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import random
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import text

from app.testing import assert_problem
from tests.stack import gunicorn, serve_in_thread

SECRET = "gh-webhook-secret-for-tests-0123456789"  # noqa: S105 - a fixture value
PREVIOUS = "gh-webhook-previous-secret-for-tests-987"  # noqa: S105 - a fixture value
URL = "/v1/webhooks/github"


# --- payloads, as GitHub documents them -----------------------------------------------


def account(login: str, account_id: int, kind: str = "Organization") -> dict[str, Any]:
    return {"login": login, "id": account_id, "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=", "type": kind,
            "site_admin": False, "html_url": f"https://github.com/{login}"}


def repo(repo_id: int, full_name: str) -> dict[str, Any]:
    """A repository as installation payloads list it (no owner object: full_name carries it)."""
    return {"id": repo_id, "node_id": "MDEwOlJlcG9zaXRvcnkx", "name": full_name.split("/")[1],
            "full_name": full_name, "private": False}


def full_repo(repo_id: int, owner: str, name: str) -> dict[str, Any]:
    """A repository as repository events carry it (with its owner)."""
    return {**repo(repo_id, f"{owner}/{name}"), "owner": account(owner, 1000 + repo_id)}


def installation(inst_id: int, login: str, account_id: int, kind: str = "Organization") -> dict[str, Any]:
    return {"id": inst_id, "account": account(login, account_id, kind), "repository_selection": "selected",
            "app_id": 1234, "target_id": account_id, "target_type": kind,
            "permissions": {"metadata": "read", "contents": "read"}, "events": ["repository"],
            "created_at": "2026-12-07T10:00:00Z", "updated_at": "2026-12-07T10:00:00Z"}


def created(inst_id: int, login: str, account_id: int, repos: list[dict[str, Any]],
            kind: str = "Organization") -> dict[str, Any]:
    return {"action": "created", "installation": installation(inst_id, login, account_id, kind),
            "repositories": repos, "sender": account("octocat", 583231, "User")}


def installation_event(action: str, inst_id: int, login: str, account_id: int) -> dict[str, Any]:
    return {"action": action, "installation": installation(inst_id, login, account_id),
            "sender": account("octocat", 583231, "User")}


def repositories_event(action: str, inst_id: int, login: str, account_id: int,
                       repos: list[dict[str, Any]]) -> dict[str, Any]:
    return {"action": action, "installation": installation(inst_id, login, account_id),
            "repository_selection": "selected",
            "repositories_added": repos if action == "added" else [],
            "repositories_removed": repos if action == "removed" else [],
            "sender": account("octocat", 583231, "User")}


def repository_event(action: str, inst_id: int, repository: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"action": action, "repository": repository, "installation": {"id": inst_id, "node_id": "MDIz"},
            "sender": account("octocat", 583231, "User"), **extra}


# --- delivering ------------------------------------------------------------------------


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers_for(event: str, body: bytes, delivery: str | None = None, secret: str | None = SECRET) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "X-GitHub-Delivery": delivery or str(uuid.uuid4()), "User-Agent": "GitHub-Hookshot/abc123"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign(body, secret)
    return headers


def deliver(client, event: str, payload: dict[str, Any], delivery: str | None = None,  # noqa: ANN001
            secret: str | None = SECRET):
    body = json.dumps(payload).encode()
    return client.post(URL, data=body, headers=headers_for(event, body, delivery, secret))


def new_ids() -> tuple[int, int]:
    """An installation id and an account id no other test uses."""
    return random.randint(10**7, 10**9), random.randint(10**7, 10**9)


@pytest.fixture
def gh_app(make_app):
    application = make_app(GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_WEBHOOK_SECRET_PREVIOUS=PREVIOUS)
    yield application
    # flask-smorest's Api is one object: leave the OpenAPI document as the session's app has it.
    make_app()


@pytest.fixture
def gh(gh_app):
    return gh_app.test_client()


def delivery_row(engine, delivery_id: str) -> dict[str, Any] | None:  # noqa: ANN001
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM public.github_deliveries WHERE delivery_id = :d"),
                           {"d": delivery_id}).mappings().first()
    return dict(row) if row else None


def tenant_of(engine, inst_id: int) -> dict[str, Any] | None:  # noqa: ANN001
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT t.*, i.installation_id, i.account_login, i.account_type, i.suspended_at, i.uninstalled_at"
            " FROM public.tenants t JOIN public.tenant_installations i ON i.tenant_id = t.id"
            " WHERE i.installation_id = :i"), {"i": inst_id}).mappings().first()
    return dict(row) if row else None


def repositories(engine, schema: str) -> dict[int, tuple[str, bool]]:  # noqa: ANN001
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f'SELECT github_repo_id, full_name, enabled FROM "{schema}".repositories')
        return {r[0]: (r[1], r[2]) for r in rows}


def tenant_events(engine, schema: str) -> list[tuple[str, str | None, str | None]]:  # noqa: ANN001
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f'SELECT action, resource_id, request_id FROM "{schema}".audit_events ORDER BY id')
        return [tuple(r) for r in rows]


def issue_key(gh_app, slug: str) -> str:  # noqa: ANN001
    result = gh_app.test_cli_runner().invoke(args=["tenants", "keys", "create", slug, "--role", "admin", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["token"]


# --- signatures, the route, the body -------------------------------------------------


def test_only_a_body_signed_with_a_configured_secret_is_accepted(gh, engine):
    inst, acct = new_ids()
    payload = installation_event("new_permissions_accepted", inst, "sigcheck", acct)
    body = json.dumps(payload).encode()
    refused = {
        "missing": headers_for("installation", body, secret=None),
        "wrong secret": headers_for("installation", body, secret="not-the-secret"),
        "other body": {**headers_for("installation", body), "X-Hub-Signature-256": sign(body + b" ")},
        "sha1": {**headers_for("installation", body), "X-Hub-Signature-256": "sha1=" + sign(body)[7:]},
        "garbage": {**headers_for("installation", body), "X-Hub-Signature-256": "sha256=zz"},
    }
    for why, headers in refused.items():
        response = gh.post(URL, data=body, headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert delivery_row(engine, headers["X-GitHub-Delivery"]) is None, why
    # Not even parsed: a broken body with no signature is 401 too, not 400.
    assert_problem(gh.post(URL, data=b"{not json", headers={"Content-Type": "application/json"}), 401)

    for secret in (SECRET, PREVIOUS):  # the current one, and the previous one during a rotation
        headers = headers_for("installation", body, secret=secret)
        response = gh.post(URL, data=body, headers=headers)
        assert response.status_code == 202, response.json  # an action nothing handles
        assert response.json["outcome"] == "ignored"
        assert delivery_row(engine, headers["X-GitHub-Delivery"])["outcome"] == "ignored"


def test_without_a_secret_there_is_no_route_and_nothing_in_the_document(app, gh_app, make_app):
    assert "/v1/webhooks/github" in gh_app.test_client().get("/v1/openapi.json").json["paths"]
    plain = make_app()  # no GITHUB_WEBHOOK_SECRET
    assert_problem(deliver(plain.test_client(), "ping", {"zen": "Keep it logically awesome."}), 404)
    assert "/v1/webhooks/github" not in plain.test_client().get("/v1/openapi.json").json["paths"]


def test_bodies_over_the_limit_are_413_and_other_shapes_are_refused(make_app, engine):
    small = make_app(GITHUB_WEBHOOK_SECRET=SECRET, MAX_CONTENT_LENGTH=2048).test_client()
    inst, acct = new_ids()
    big = created(inst, "bigorg", acct, [repo(i, f"bigorg/r{i}") for i in range(200)])
    response = deliver(small, "installation", big)
    assert_problem(response, 413, "payload-too-large")
    assert tenant_of(engine, inst) is None
    body = b"[1, 2]"
    assert_problem(small.post(URL, data=body, headers=headers_for("installation", body)), 400)
    no_event = headers_for("installation", body)
    del no_event["X-GitHub-Event"]
    assert_problem(small.post(URL, data=body, headers=no_event), 400)
    form = {**headers_for("installation", b"payload=%7B%7D"), "Content-Type": "application/x-www-form-urlencoded"}
    assert_problem(small.post(URL, data=b"payload=%7B%7D", headers=form), 415)


# --- installation lifecycle -----------------------------------------------------------


def test_an_installation_becomes_a_pending_tenant_with_its_repositories(gh, gh_app, admin_client, engine):
    inst, acct = new_ids()
    login = f"Octo-Org-{inst}"
    delivery = str(uuid.uuid4())
    response = deliver(gh, "installation", created(inst, login, acct, [
        repo(1296269, f"{login}/Hello-World"), repo(1296270, f"{login}/Spoon-Knife")]), delivery)
    assert response.status_code == 200, response.json
    assert response.json["outcome"] == "applied"
    slug = f"octo_org_{inst}"
    assert response.json["tenant"] == slug

    tenant = tenant_of(engine, inst)
    assert (tenant["slug"], tenant["name"], tenant["status"]) == (slug, login, "pending")
    assert (tenant["account_login"], tenant["account_type"]) == (login, "Organization")
    assert repositories(engine, f"t_{slug}") == {
        1296269: (f"{login}/Hello-World", True), 1296270: (f"{login}/Spoon-Knife", True)}
    assert [e[0] for e in tenant_events(engine, f"t_{slug}")] == ["repository.created"] * 2
    assert {e[2] for e in tenant_events(engine, f"t_{slug}")} == {f"github:{delivery}"}
    row = delivery_row(engine, delivery)
    assert (row["outcome"], row["tenant_id"], row["payload"]) == ("applied", tenant["id"], None)
    with engine.connect() as conn:
        actor = conn.execute(text("SELECT actor FROM public.audit_events WHERE tenant_slug = :s"
                                  " AND action = 'tenant.provisioned'"), {"s": slug}).scalar_one()
    assert actor == f"github:{delivery}"

    # The admin API and the CLI show it pending; its keys are refused with a clear type.
    detail = admin_client.get(f"/v1/admin/tenants/{slug}").json
    assert detail["status"] == "pending"
    assert {k: detail["github"][k] for k in ("installation_id", "account_id", "account_login", "account_type",
                                             "suspended_at", "uninstalled_at")} == {
        "installation_id": inst, "account_id": acct, "account_login": login, "account_type": "Organization",
        "suspended_at": None, "uninstalled_at": None}
    listed = gh_app.test_cli_runner().invoke(args=["tenants", "list", "--json"])
    assert {t["slug"]: t["status"] for t in json.loads(listed.output)}[slug] == "pending"
    token = issue_key(gh_app, slug)
    refused = gh.get("/v1/repositories", headers={"Authorization": f"Bearer {token}"})
    assert_problem(refused, 403, "tenant-pending")
    # An operator activates it: the same key works, and sees the repositories.
    activated = admin_client.patch(f"/v1/admin/tenants/{slug}", json={"status": "active"})
    assert activated.json["status"] == "active"
    listing = gh.get("/v1/repositories", headers={"Authorization": f"Bearer {token}"})
    assert listing.status_code == 200
    assert {r["full_name"] for r in listing.json["items"]} == {f"{login}/Hello-World", f"{login}/Spoon-Knife"}


def test_a_redelivery_answers_from_the_record_and_changes_nothing(gh, engine):
    inst, acct = new_ids()
    payload = created(inst, f"redeliver{inst}", acct, [repo(11, f"redeliver{inst}/a")])
    delivery = str(uuid.uuid4())
    first = deliver(gh, "installation", payload, delivery)
    assert first.status_code == 200 and not first.json["redelivery"]
    again = deliver(gh, "installation", payload, delivery)
    assert again.status_code == 200
    assert {**again.json, "detail": None} == {**first.json, "redelivery": True, "detail": None}
    assert "not applied again" in again.json["detail"]
    # A second delivery id with the same installation (GitHub duplicates too) is a duplicate.
    other = deliver(gh, "installation", payload)
    assert (other.status_code, other.json["outcome"]) == (200, "duplicate")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM public.tenant_installations WHERE installation_id = :i"),
                            {"i": inst}).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM public.tenants WHERE slug LIKE :s"),
                            {"s": f"redeliver{inst}%"}).scalar_one() == 1


def test_slugs_follow_the_login_and_never_collide(gh, make_tenant, engine):
    inst, acct = new_ids()
    make_tenant(f"acme_{inst}")
    response = deliver(gh, "installation", created(inst, f"ACME.{inst}", acct, [], kind="User"))
    assert response.json["tenant"] == f"acme_{inst}_2"
    inst2, acct2 = new_ids()
    response = deliver(gh, "installation", created(inst2, f"{inst2}-admin", acct2, []))
    assert response.json["tenant"] == f"gh_{inst2}_admin"
    assert tenant_of(engine, inst)["account_type"] == "User"


def test_suspend_unsuspend_and_uninstall_follow_github(gh, gh_app, admin_client, engine):
    inst, acct = new_ids()
    login = f"suspender{inst}"
    slug = deliver(gh, "installation", created(inst, login, acct, [repo(5, f"{login}/x")])).json["tenant"]
    admin_client.patch(f"/v1/admin/tenants/{slug}", json={"status": "active"})
    auth = {"Authorization": f"Bearer {issue_key(gh_app, slug)}"}
    assert gh.get("/v1/repositories", headers=auth).status_code == 200

    assert deliver(gh, "installation", installation_event("suspend", inst, login, acct)).json["outcome"] == "applied"
    assert_problem(gh.get("/v1/repositories", headers=auth), 403, "tenant-suspended")
    assert tenant_of(engine, inst)["suspended_at"] is not None
    assert deliver(gh, "installation", installation_event("suspend", inst, login, acct)).json["outcome"] == "duplicate"
    assert deliver(gh, "installation", installation_event("unsuspend", inst, login, acct)).json["outcome"] == "applied"
    assert gh.get("/v1/repositories", headers=auth).status_code == 200

    assert deliver(gh, "installation", installation_event("deleted", inst, login, acct)).json["outcome"] == "applied"
    tenant = tenant_of(engine, inst)
    assert tenant["status"] == "suspended" and tenant["uninstalled_at"] is not None
    assert admin_client.get(f"/v1/admin/tenants/{slug}").json["github"]["uninstalled_at"] is not None
    assert_problem(gh.get("/v1/repositories", headers=auth), 403, "tenant-suspended")
    assert repositories(engine, f"t_{slug}") == {5: (f"{login}/x", True)}  # data kept
    # An unsuspend after the uninstall does not bring it back.
    deliver(gh, "installation", installation_event("suspend", inst, login, acct))
    deliver(gh, "installation", installation_event("unsuspend", inst, login, acct))
    assert tenant_of(engine, inst)["status"] == "suspended"


def test_a_pending_tenants_jwts_are_refused_with_the_same_type(make_app, gh, engine):
    inst, acct = new_ids()
    slug = deliver(gh, "installation", created(inst, f"jwtorg{inst}", acct, [])).json["tenant"]
    secret = "jwt-secret-for-the-pending-test-0123456789"
    client = make_app(GITHUB_WEBHOOK_SECRET=SECRET, JWT_SECRET=secret, JWT_AUDIENCE="tenantry-api").test_client()
    now = int(time.time())
    token = jwt.encode({"sub": "bot", "aud": "tenantry-api", "iat": now, "exp": now + 300, "tenant": slug,
                        "role": "viewer"}, secret, algorithm="HS256")
    assert_problem(client.get("/v1/repositories", headers={"Authorization": f"Bearer {token}"}), 403,
                   "tenant-pending")


def test_a_pending_tenant_stays_pending_through_a_suspension(gh, engine):
    inst, acct = new_ids()
    login = f"pendsusp{inst}"
    deliver(gh, "installation", created(inst, login, acct, []))
    deliver(gh, "installation", installation_event("suspend", inst, login, acct))
    assert tenant_of(engine, inst)["status"] == "pending"
    deliver(gh, "installation", installation_event("unsuspend", inst, login, acct))
    assert tenant_of(engine, inst)["status"] == "pending"


def test_uninstalled_tenants_are_purged_after_the_chosen_date(gh, gh_app, engine):
    inst, acct = new_ids()
    login = f"purgeme{inst}"
    slug = deliver(gh, "installation", created(inst, login, acct, [repo(9, f"{login}/r")])).json["tenant"]
    kept_inst, kept_acct = new_ids()
    kept = deliver(gh, "installation", created(kept_inst, f"kept{kept_inst}", kept_acct, [])).json["tenant"]
    deliver(gh, "installation", installation_event("deleted", inst, login, acct))
    runner = gh_app.test_cli_runner()
    today = datetime.now(UTC).date()

    early = runner.invoke(args=["tenants", "purge", "--uninstalled-before", today.isoformat(), "--yes"])
    assert early.exit_code == 0 and "no tenant to purge" in early.output
    tomorrow = (today + timedelta(days=1)).isoformat()
    declined = runner.invoke(args=["tenants", "purge", "--uninstalled-before", tomorrow], input="n\n")
    assert declined.exit_code == 1 and slug in declined.output
    assert tenant_of(engine, inst) is not None
    purged = runner.invoke(args=["tenants", "purge", "--uninstalled-before", tomorrow, "--yes", "--json"])
    assert purged.exit_code == 0, purged.output
    assert slug in json.loads(purged.output) and kept not in json.loads(purged.output)
    assert tenant_of(engine, inst) is None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"),
                            {"s": f"t_{slug}"}).scalar_one() == 0
    assert tenant_of(engine, kept_inst) is not None


def test_a_reinstallation_revives_the_uninstalled_tenant_with_its_data(gh, gh_app, admin_client, engine):
    inst, acct = new_ids()
    login = f"comeback{inst}"
    slug = deliver(gh, "installation", created(inst, login, acct, [
        repo(61, f"{login}/kept"), repo(62, f"{login}/dropped")])).json["tenant"]
    admin_client.patch(f"/v1/admin/tenants/{slug}", json={"status": "active"})
    deliver(gh, "installation", installation_event("deleted", inst, login, acct))
    new_inst = inst + 1
    again = deliver(gh, "installation", created(new_inst, login, acct, [
        repo(61, f"{login}/kept"), repo(63, f"{login}/new")]))
    assert (again.json["outcome"], again.json["tenant"]) == ("applied", slug)
    assert tenant_of(engine, inst) is None
    tenant = tenant_of(engine, new_inst)
    assert (tenant["slug"], tenant["status"], tenant["uninstalled_at"]) == (slug, "pending", None)
    assert repositories(engine, f"t_{slug}") == {
        61: (f"{login}/kept", True), 62: (f"{login}/dropped", False), 63: (f"{login}/new", True)}
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    purge = gh_app.test_cli_runner().invoke(args=["tenants", "purge", "--uninstalled-before", tomorrow, "--json",
                                                  "--yes"])
    assert slug not in json.loads(purge.output)


# --- repositories ---------------------------------------------------------------------


def test_repositories_added_and_removed_are_registered_and_disabled_never_deleted(gh, engine):
    inst, acct = new_ids()
    login = f"repos{inst}"
    slug = deliver(gh, "installation", created(inst, login, acct, [repo(1, f"{login}/one")])).json["tenant"]
    schema = f"t_{slug}"
    added = str(uuid.uuid4())
    response = deliver(gh, "installation_repositories", repositories_event(
        "added", inst, login, acct, [repo(1, f"{login}/one"), repo(2, f"{login}/two")]), added)
    assert (response.status_code, response.json["outcome"]) == (200, "applied")
    assert repositories(engine, schema) == {1: (f"{login}/one", True), 2: (f"{login}/two", True)}
    assert tenant_events(engine, schema)[-1] == ("repository.created", "2", f"github:{added}")

    removed = str(uuid.uuid4())
    deliver(gh, "installation_repositories", repositories_event("removed", inst, login, acct,
                                                                [repo(2, f"{login}/two")]), removed)
    assert repositories(engine, schema) == {1: (f"{login}/one", True), 2: (f"{login}/two", False)}
    assert tenant_events(engine, schema)[-1] == ("repository.disabled", "2", f"github:{removed}")
    again = deliver(gh, "installation_repositories", repositories_event(
        "removed", inst, login, acct, [repo(2, f"{login}/two")]))
    assert again.json["outcome"] == "duplicate"
    deliver(gh, "installation_repositories", repositories_event("added", inst, login, acct, [repo(2, f"{login}/two")]))
    assert repositories(engine, schema)[2] == (f"{login}/two", True)
    assert tenant_events(engine, schema)[-1][0] == "repository.enabled"


def test_renames_transfers_and_deletions_are_followed_slug_and_schema_stay(gh, admin_client, engine):
    inst, acct = new_ids()
    login = f"renamer{inst}"
    slug = deliver(gh, "installation", created(inst, login, acct, [
        repo(21, f"{login}/old-name"), repo(22, f"{login}/moving"), repo(23, f"{login}/doomed")])).json["tenant"]
    schema = f"t_{slug}"

    renamed = deliver(gh, "repository", repository_event(
        "renamed", inst, full_repo(21, login, "new-name"), changes={"repository": {"name": {"from": "old-name"}}}))
    assert renamed.json["outcome"] == "applied"
    deliver(gh, "repository", repository_event(
        "transferred", inst, full_repo(22, "elsewhere", "moving"),
        changes={"owner": {"from": {"organization": account(login, acct)}}}))
    deliver(gh, "repository", repository_event("deleted", inst, full_repo(23, login, "doomed")))
    assert repositories(engine, schema) == {
        21: (f"{login}/new-name", True), 22: ("elsewhere/moving", True), 23: (f"{login}/doomed", False)}
    unknown = deliver(gh, "repository", repository_event("renamed", inst, full_repo(99, login, "never-added")))
    assert unknown.json["outcome"] == "duplicate"

    target = deliver(gh, "installation_target", {
        "action": "renamed", "account": account(f"renamed-{login}", acct), "target_type": "Organization",
        "changes": {"login": {"from": login}}, "installation": {"id": inst, "node_id": "MDIz"},
        "sender": account("octocat", 583231, "User")})
    assert target.json["outcome"] == "applied"
    tenant = tenant_of(engine, inst)
    assert (tenant["slug"], tenant["schema_name"]) == (slug, schema)
    assert tenant["name"] == tenant["account_login"] == f"renamed-{login}"
    assert admin_client.get(f"/v1/admin/tenants/{slug}").json["name"] == f"renamed-{login}"


# --- what is not applied --------------------------------------------------------------


def test_unknown_events_and_actions_are_recorded_as_ignored(gh, engine):
    for event, payload in (("ping", {"zen": "Design for failure.", "hook_id": 1}),
                           ("installation", {"action": "new_permissions_accepted", "installation": {"id": 5}}),
                           ("push", {"ref": "refs/heads/main", "installation": {"id": 5}})):
        delivery = str(uuid.uuid4())
        response = deliver(gh, event, payload, delivery)
        assert (response.status_code, response.json["outcome"]) == (202, "ignored"), event
        row = delivery_row(engine, delivery)
        assert (row["event"], row["outcome"], row["payload"]) == (event, "ignored", None)


def test_an_event_before_its_installation_is_kept_and_replayed_once_it_is_known(gh, gh_app, engine):
    inst, acct = new_ids()
    login = f"early{inst}"
    early = str(uuid.uuid4())
    response = deliver(gh, "installation_repositories", repositories_event(
        "added", inst, login, acct, [repo(31, f"{login}/late")]), early)
    assert (response.status_code, response.json["outcome"]) == (202, "ignored")
    row = delivery_row(engine, early)
    assert row["installation_id"] == inst and row["payload"] is not None and "not linked" in row["error"]
    # A redelivery of it still changes nothing.
    assert deliver(gh, "installation_repositories", repositories_event(
        "added", inst, login, acct, [repo(31, f"{login}/late")]), early).json["redelivery"] is True

    slug = deliver(gh, "installation", created(inst, login, acct, [])).json["tenant"]
    assert repositories(engine, f"t_{slug}") == {}
    runner = gh_app.test_cli_runner()
    replayed = runner.invoke(args=["github", "deliveries", "replay", "--all", "--installation", str(inst), "--json"])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.output) == [{"delivery_id": early, "outcome": "applied",
                                            "detail": "1 of 1 repositories changed"}]
    assert repositories(engine, f"t_{slug}") == {31: (f"{login}/late", True)}
    assert (delivery_row(engine, early)["outcome"], delivery_row(engine, early)["payload"]) == ("applied", None)


def test_a_failed_delivery_leaves_nothing_is_recorded_and_applies_when_redelivered(make_app, gh, engine):
    broken = make_app(GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_DEFAULT_PLAN="no-such-plan").test_client()
    inst, acct = new_ids()
    payload = created(inst, f"failing{inst}", acct, [repo(41, f"failing{inst}/r")])
    delivery = str(uuid.uuid4())
    response = deliver(broken, "installation", payload, delivery)
    assert_problem(response, 500, "webhook-failed")
    assert tenant_of(engine, inst) is None
    row = delivery_row(engine, delivery)
    assert row["outcome"] == "failed" and "no-such-plan" in row["error"] and json.loads(row["payload"]) == payload
    # GitHub's "Redeliver" (same delivery id) applies it, once the setting is fixed.
    fixed = deliver(gh, "installation", payload, delivery)
    assert (fixed.status_code, fixed.json["outcome"], fixed.json["redelivery"]) == (200, "applied", False)
    assert tenant_of(engine, inst)["status"] == "pending"
    assert delivery_row(engine, delivery)["payload"] is None


def test_old_delivery_records_are_purged(gh, gh_app, engine):
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    deliver(gh, "ping", {"zen": "old"}, old)
    deliver(gh, "ping", {"zen": "recent"}, recent)
    with engine.begin() as conn:
        conn.execute(text("UPDATE public.github_deliveries SET received_at = now() - interval '31 days'"
                          " WHERE delivery_id = :d"), {"d": old})
    result = gh_app.test_cli_runner().invoke(args=["github", "deliveries", "purge"])
    assert result.exit_code == 0, result.output
    assert delivery_row(engine, old) is None and delivery_row(engine, recent) is not None
    listed = gh_app.test_cli_runner().invoke(args=["github", "deliveries", "list", "--json", "--limit", "500"])
    assert recent in {d["delivery_id"] for d in json.loads(listed.output)}


# --- concurrency, over real HTTP --------------------------------------------------------


def post_concurrently(base_url: str, requests: list[tuple[str, bytes, dict[str, str]]]) -> list[tuple[int, Any]]:
    """Every request on its own connection and thread, released together."""
    port = int(base_url.rsplit(":", 1)[1])
    barrier = threading.Barrier(len(requests))
    results: list[tuple[int, Any]] = [(0, None)] * len(requests)

    def send(i: int) -> None:
        event, body, headers = requests[i]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        barrier.wait()
        conn.request("POST", URL, body=body, headers=headers)
        response = conn.getresponse()
        results[i] = (response.status, json.loads(response.read() or b"null"))
        conn.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_created_racing_its_redeliveries_and_duplicates_gives_one_tenant(gh_app, engine):
    inst, acct = new_ids()
    login = f"racer{inst}"
    body = json.dumps(created(inst, login, acct, [repo(51, f"{login}/a"), repo(52, f"{login}/b")])).encode()
    same = headers_for("installation", body)
    requests = [("installation", body, same)] * 4 + [("installation", body, headers_for("installation", body))
                                                     for _ in range(2)]
    with serve_in_thread(gh_app) as base_url:
        results = post_concurrently(base_url, requests)
    assert {status for status, _ in results} == {200}, results
    outcomes = Counter((r["outcome"], r["redelivery"]) for _, r in results)
    # One of the three delivery ids provisioned; the other two found it done; the three
    # repeats of a delivery id were answered from its record, whichever it was.
    assert outcomes[("applied", False)] == 1 and outcomes[("duplicate", False)] == 2, outcomes
    assert sum(n for (_, redelivery), n in outcomes.items() if redelivery) == 3, outcomes
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM public.tenants WHERE name = :n"), {"n": login}).scalar_one() == 1
    assert repositories(engine, f"t_{tenant_of(engine, inst)['slug']}") == {
        51: (f"{login}/a", True), 52: (f"{login}/b", True)}


def test_repositories_added_racing_register_each_repository_once(gh, gh_app, engine):
    inst, acct = new_ids()
    login = f"addrace{inst}"
    slug = deliver(gh, "installation", created(inst, login, acct, [])).json["tenant"]
    requests = []
    for n in range(6):  # overlapping sets under distinct delivery ids
        repos = [repo(60 + i, f"{login}/r{i}") for i in range(n % 3, n % 3 + 4)]
        body = json.dumps(repositories_event("added", inst, login, acct, repos)).encode()
        requests.append(("installation_repositories", body, headers_for("installation_repositories", body)))
    with serve_in_thread(gh_app) as base_url:
        results = post_concurrently(base_url, requests)
    assert {status for status, _ in results} == {200}, results
    assert repositories(engine, f"t_{slug}") == {60 + i: (f"{login}/r{i}", True) for i in range(6)}
    created_events = [e for e in tenant_events(engine, f"t_{slug}") if e[0] == "repository.created"]
    assert sorted(int(e[1]) for e in created_events) == sorted(
        int(r) for r in {e[1] for e in created_events})  # one event per row
    assert len(created_events) == 6


def test_the_webhook_operation_is_documented_like_every_other(gh):
    spec = gh.get("/v1/openapi.json").json
    operation = spec["paths"][URL]["post"]
    assert operation["operationId"] == "receiveGithubWebhook" and operation["security"] == []
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header" and p["required"]}
    assert headers == {"X-Hub-Signature-256", "X-GitHub-Delivery", "X-GitHub-Event"}
    responses = operation["responses"]
    assert {"200", "202", "400", "401", "413", "415", "422", "500", "503", "default"} <= set(responses)
    for status, response in responses.items():
        if status == "default" or int(status) >= 400:
            assert list(response_of(spec, response)["content"]) == ["application/problem+json"], status
    result = spec["components"]["schemas"]["DeliveryResult"]
    assert set(result["required"]) == set(result["properties"])


def response_of(spec: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in obj:
        obj = spec["components"]["responses"][obj["$ref"].rsplit("/", 1)[1]]
    return obj


def test_deliveries_racing_across_server_processes_give_one_tenant_and_no_duplicate_rows(
        tenantry_database_url, tmp_path, engine):
    """The same races through gunicorn as production runs it: two worker processes of four
    threads each, so the copies of a delivery meet in different processes and pools."""
    inst, acct = new_ids()
    login = f"procrace{inst}"
    body = json.dumps(created(inst, login, acct, [repo(71, f"{login}/a")])).encode()
    same = headers_for("installation", body)
    adds = []
    for n in range(4):
        added = json.dumps(repositories_event("added", inst, login, acct,
                                              [repo(72 + (n + i) % 5, f"{login}/r{(n + i) % 5}") for i in range(3)]))
        adds.append(("installation_repositories", added.encode(),
                     headers_for("installation_repositories", added.encode())))
    with gunicorn(tenantry_database_url, tmp_path, GITHUB_WEBHOOK_SECRET=SECRET, WEB_CONCURRENCY="2",
                  GUNICORN_THREADS="4") as server:
        base_url = f"http://127.0.0.1:{server.port}"
        created_results = post_concurrently(base_url, [("installation", body, same)] * 6)
        added_results = post_concurrently(base_url, adds)
    assert {status for status, _ in created_results + added_results} == {200}, created_results + added_results
    assert sum(1 for _, r in created_results if not r["redelivery"]) == 1
    tenant = tenant_of(engine, inst)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM public.tenants WHERE name = :n"), {"n": login}).scalar_one() == 1
    rows = repositories(engine, tenant["schema_name"])
    assert set(rows) == {71, 72, 73, 74, 75, 76}
    created_events = [e for e in tenant_events(engine, tenant["schema_name"]) if e[0] == "repository.created"]
    assert len(created_events) == len(rows)
