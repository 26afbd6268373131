"""Repository sync from the GitHub REST API, through the CLI, against a local fake GitHub.

The real client code runs (githubkit: the App's JWT, the installation token, pages,
rate-limit back-off); only the server at the other end is ours (tests/fake_github.py).
"""

from __future__ import annotations

import json

import pytest

from app.config import ConfigError
from app.testing import ADMIN_TOKEN, assert_problem
from tests.e2e.test_github_webhooks import (
    SECRET,
    created,
    deliver,
    new_ids,
    repo,
    repositories,
    repositories_event,
    tenant_events,
)
from tests.fake_github import FakeGitHub, new_app_key, repository, serve

APP_ID = 424242


@pytest.fixture(scope="module")
def app_key() -> tuple[str, str]:
    return new_app_key()


@pytest.fixture
def fake(app_key):
    fake = FakeGitHub(app_id=APP_ID, public_key=app_key[1])
    with serve(fake):
        yield fake


@pytest.fixture
def synced_app(make_app, fake, app_key):
    application = make_app(GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_APP_ID=APP_ID, GITHUB_PRIVATE_KEY=app_key[0],
                           GITHUB_API_URL=fake.url, GITHUB_RATE_LIMIT_MAX_WAIT=5)
    yield application
    make_app()  # flask-smorest's Api is one object: leave the document as the session's app has it


def sync(application, *args: str):  # noqa: ANN001
    result = application.test_cli_runner().invoke(args=["tenants", "github-sync", *args, "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, (json.loads(result.stdout) if result.stdout.startswith("[") else result.output)


def installed(client, login: str, repos=()) -> tuple[int, str]:  # noqa: ANN001
    inst, acct = new_ids()
    slug = deliver(client, "installation", created(inst, login + str(inst), acct, list(repos))).json["tenant"]
    return inst, slug


def test_a_sync_pages_through_hundreds_of_repositories_and_waits_out_rate_limits(synced_app, fake, engine):
    client = synced_app.test_client()
    inst, slug = installed(client, "pager")
    login = f"pager{inst}"
    fake.installations[inst] = [repository(7000 + i, login, f"repo-{i}") for i in range(260)]
    fake.rate_limits[(inst, 2)] = ("primary", 1)  # X-RateLimit-Reset in 1 s
    fake.rate_limits[(inst, 3)] = ("secondary", 1)  # Retry-After: 1
    code, reports = sync(synced_app, "--tenant", slug)
    assert code == 0, reports
    [report] = reports
    assert (report["slug"], report["discovered"], report["registered"], report["errors"]) == (slug, 260, 260, [])
    rows = repositories(engine, f"t_{slug}")
    assert len(rows) == 260 and rows[7259] == (f"{login}/repo-259", True)
    pages = [entry for entry in fake.log if entry.path.startswith("/installation/repositories")]
    assert [(p.path.rsplit("=", 1)[1], p.status) for p in pages] == [
        ("1", 200), ("2", 403), ("2", 200), ("3", 429), ("3", 200)]
    assert pages[2].at - pages[1].at >= 0.9 and pages[4].at - pages[3].at >= 0.9  # it waited, then went on
    assert sum(1 for e in fake.log if e.path.startswith("/app/installations/")) == 1  # one token, reused
    # A second run finds everything in place.
    code, reports = sync(synced_app, "--all")
    [again] = [r for r in reports if r["slug"] == slug]
    assert (again["discovered"], again["registered"], again["updated"], again["deactivated"]) == (260, 0, 0, 0)


def test_a_sync_reconciles_an_event_that_came_before_its_installation(synced_app, fake, engine):
    client = synced_app.test_client()
    inst, acct = new_ids()
    login = f"early{inst}"
    early = deliver(client, "installation_repositories", repositories_event(
        "added", inst, login, acct, [repo(81, f"{login}/early")]))
    assert early.status_code == 202
    slug = deliver(client, "installation", created(inst, login, acct, [
        repo(82, f"{login}/renamed-since"), repo(83, f"{login}/removed-since")])).json["tenant"]
    fake.installations[inst] = [repository(81, login, "early"), repository(82, login, "renamed-now"),
                                repository(84, "other-owner", "transferred-in")]
    code, [report] = sync(synced_app, "--tenant", slug)
    assert code == 0, report
    assert {k: report[k] for k in ("discovered", "registered", "updated", "deactivated")} == {
        "discovered": 3, "registered": 2, "updated": 1, "deactivated": 1}
    assert repositories(engine, f"t_{slug}") == {
        81: (f"{login}/early", True), 82: (f"{login}/renamed-now", True),
        83: (f"{login}/removed-since", False), 84: ("other-owner/transferred-in", True)}
    actions = [e[0] for e in tenant_events(engine, f"t_{slug}")][-4:]
    assert sorted(actions) == ["repository.created", "repository.created", "repository.disabled",
                               "repository.updated"]
    assert all(e[2].startswith("github-sync:") for e in tenant_events(engine, f"t_{slug}")[-4:])


def test_a_sync_reports_errors_per_tenant_and_goes_on(synced_app, fake, make_tenant, engine):
    client = synced_app.test_client()
    good_inst, good = installed(client, "good")
    fake.installations[good_inst] = [repository(91, f"good{good_inst}", "one")]
    _, gone = installed(client, "gone")  # GitHub does not know it: 404 for its token
    slow_inst, slow = installed(client, "slow")
    fake.installations[slow_inst] = [repository(92, f"slow{slow_inst}", "one")]
    fake.rate_limits[(slow_inst, 1)] = ("secondary", 3600)  # longer than allowed
    plain = make_tenant().slug  # provisioned by an operator: no installation
    code, reports = sync(synced_app, "--tenant", good, "--tenant", gone, "--tenant", slow, "--tenant", plain,
                         "--jobs", "3")
    assert code == 1
    by_slug = {r["slug"]: r for r in reports}
    assert by_slug[good]["errors"] == [] and by_slug[good]["registered"] == 1
    assert "404" in by_slug[gone]["errors"][0]
    assert "rate limit" in by_slug[slow]["errors"][0] and repositories(engine, f"t_{slow}") == {}
    assert "not linked" in by_slug[plain]["errors"][0]


def test_without_app_credentials_a_sync_is_refused_as_bad_usage(make_app):
    application = make_app()
    result = application.test_cli_runner().invoke(args=["tenants", "github-sync", "--all"])
    assert result.exit_code == 2 and "GITHUB_APP_ID" in result.output
    result = application.test_cli_runner().invoke(args=["tenants", "github-sync"])
    assert result.exit_code == 2


def test_the_app_credentials_are_checked_at_startup(make_app, app_key):
    with pytest.raises(ConfigError, match="GITHUB_APP_ID and GITHUB_PRIVATE_KEY"):
        make_app(GITHUB_APP_ID=1)
    with pytest.raises(ConfigError, match="GITHUB_PRIVATE_KEY"):
        make_app(GITHUB_APP_ID=1, GITHUB_PRIVATE_KEY=app_key[1])  # a public key


def test_an_operator_can_sync_one_tenant_over_the_admin_api(synced_app, fake, make_app, make_tenant, engine):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    client = synced_app.test_client()
    inst, slug = installed(client, "overhttp", [repo(95, "overhttp/x")])
    fake.installations[inst] = [repository(96, "overhttp", "y")]
    response = client.post(f"/v1/admin/tenants/{slug}/github-sync", headers=admin)
    assert response.status_code == 200, response.json
    assert {k: response.json[k] for k in ("slug", "discovered", "registered", "deactivated", "errors")} == {
        "slug": slug, "discovered": 1, "registered": 1, "deactivated": 1, "errors": []}
    assert repositories(engine, f"t_{slug}") == {95: ("overhttp/x", False), 96: ("overhttp/y", True)}
    assert_problem(client.post("/v1/admin/tenants/nosuchtenant/github-sync", headers=admin), 404)
    plain = make_tenant().slug
    assert_problem(client.post(f"/v1/admin/tenants/{plain}/github-sync", headers=admin), 409,
                   "github-sync-unavailable")
    unconfigured = make_app().test_client()
    assert_problem(unconfigured.post(f"/v1/admin/tenants/{slug}/github-sync", headers=admin), 409,
                   "github-sync-unavailable")
    assert_problem(client.post(f"/v1/admin/tenants/{slug}/github-sync"), 401)
