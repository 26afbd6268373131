"""Every error is application/problem+json with the right status; nothing half-done remains."""

from __future__ import annotations

import base64
import threading

import pytest
from flask import Flask

TENANT_ENDPOINTS = [
    ("get", "/v1/repositories"),
    ("post", "/v1/repositories"),
    ("get", "/v1/repositories/1"),
    ("patch", "/v1/repositories/1"),
    ("delete", "/v1/repositories/1"),
]
ADMIN_ENDPOINTS = [
    ("get", "/v1/admin/tenants"),
    ("post", "/v1/admin/tenants"),
    ("get", "/v1/admin/tenants/acme"),
]


def assert_problem(response, status: int, type_suffix: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.json
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert "Traceback" not in response.get_data(as_text=True)
    if type_suffix:
        assert body["type"].endswith("/" + type_suffix)
    return body


@pytest.mark.parametrize(("method", "path"), TENANT_ENDPOINTS)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer nonsense", "Bearer tnt_000000000000_wrong",
     "Bearer test-admin-token"],
)
def test_tenant_api_needs_a_valid_key(client, tenant, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = getattr(client, method)(path, headers=headers, json={} if method in {"post", "patch"} else None)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_key_with_the_right_prefix_and_a_wrong_secret_is_refused(client, tenant):
    prefix = tenant.token.split("_")[1]
    forged = {"Authorization": f"Bearer tnt_{prefix}_not-the-secret"}
    assert_problem(client.get("/v1/repositories", headers=forged), 401)


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_admin_api_refuses_missing_and_wrong_tokens_and_tenant_keys(client, tenant, method, path):
    call = getattr(client, method)
    assert_problem(call(path), 401)
    assert_problem(call(path, headers={"Authorization": "Bearer wrong"}), 401)
    assert_problem(call(path, headers=tenant.auth), 403, "forbidden")


def test_admin_api_is_closed_when_no_admin_token_is_configured(make_app):
    closed = make_app(ADMIN_TOKEN=None).test_client()
    body = assert_problem(closed.get("/v1/admin/tenants", headers={"Authorization": "Bearer x"}), 401)
    assert "ADMIN_TOKEN" in body["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"owner": "o", "name": "n"}, "github_repo_id"),
        ({"github_repo_id": "12", "owner": "o", "name": "n"}, "github_repo_id"),
        ({"github_repo_id": 1.5, "owner": "o", "name": "n"}, "github_repo_id"),
        ({"github_repo_id": True, "owner": "o", "name": "n"}, "github_repo_id"),
        ({"github_repo_id": -1, "owner": "o", "name": "n"}, "github_repo_id"),
        ({"github_repo_id": 2**63, "owner": "o", "name": "n"}, "github_repo_id"),
        ({"github_repo_id": 1, "owner": "bad owner", "name": "n"}, "owner"),
        ({"github_repo_id": 1, "owner": "o", "name": "x" * 101}, "name"),
        ({"github_repo_id": 1, "owner": "o", "name": "n", "tenant": "other"}, "tenant"),
        ({"github_repo_id": 1, "owner": "o", "name": "n", "enabled": "maybe"}, "enabled"),
    ],
)
def test_invalid_repository_fields_get_422_with_field_errors(tenant_client, body, field):
    problem = assert_problem(tenant_client.post("/v1/repositories", json=body), 422, "validation-error")
    assert field in problem["errors"]
    assert tenant_client.get("/v1/repositories").json["items"] == []


@pytest.mark.parametrize("body", [{}, {"github_repo_id": 5}, {"tenant": "x"}])
def test_invalid_patches_get_422(tenant_client, body):
    tenant_client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"})
    assert_problem(tenant_client.patch("/v1/repositories/1", json=body), 422)
    assert tenant_client.get("/v1/repositories/1").json["name"] == "n"


@pytest.mark.parametrize(
    ("slug", "plan", "field"),
    [("Acme", "free", "slug"), ("a", "free", "slug"), ("pg_x", "free", "slug"),
     ("x'; DROP TABLE public.tenants; --", "free", "slug"), ("public", "free", "slug"),
     ("fine_slug", "platinum", "plan")],
)
def test_invalid_tenants_get_422_with_the_field(admin_client, slug, plan, field):
    response = admin_client.post("/v1/admin/tenants", json={"slug": slug, "name": "N", "plan": plan})
    problem = assert_problem(response, 422, "validation-error")
    assert list(problem["errors"]) == [field]
    assert admin_client.get("/v1/admin/tenants").json["items"] == []


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_a_tenant_name_must_show_something(admin_client, name):
    response = admin_client.post("/v1/admin/tenants", json={"slug": "blank_name", "name": name})
    assert list(assert_problem(response, 422, "validation-error")["errors"]) == ["name"]
    assert admin_client.get("/v1/admin/tenants").json["items"] == []


def test_concurrent_duplicate_slugs_over_http_give_one_201_and_409s(app: Flask, admin_client):
    statuses: list[int] = []
    barrier = threading.Barrier(5)

    def attempt() -> None:
        c = app.test_client()
        barrier.wait()
        r = c.post("/v1/admin/tenants", json={"slug": "contested", "name": "C"},
                   headers={"Authorization": "Bearer test-admin-token"})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 409, 409, 409, 409]
    assert [t["slug"] for t in admin_client.get("/v1/admin/tenants").json["items"]] == ["contested"]


def test_unknown_tenant_is_404(admin_client):
    assert_problem(admin_client.get("/v1/admin/tenants/nobody"), 404, "not-found")


def test_routing_errors_are_problems(client, tenant_client):
    assert_problem(client.get("/no/such/route"), 404, "not-found")
    response = tenant_client.put("/v1/repositories", json={})
    assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_a_repository_id_beyond_bigint_is_404_not_500(tenant_client, method):
    kwargs = {"json": {"name": "x"}} if method == "patch" else {}
    response = getattr(tenant_client, method)(f"/v1/repositories/{2**63}", **kwargs)
    assert_problem(response, 404, "not-found")


def test_a_forged_cursor_beyond_bigint_is_422_not_500(tenant_client):
    forged = base64.urlsafe_b64encode(f"int:{10**30}".encode()).decode().rstrip("=")
    assert "cursor" in assert_problem(tenant_client.get(f"/v1/repositories?cursor={forged}"), 422)["errors"]


def test_malformed_json_is_400(tenant_client):
    response = tenant_client.post("/v1/repositories", data="{not json", content_type="application/json")
    assert_problem(response, 400, "bad-request")


def test_a_body_that_is_not_json_is_415(tenant_client):
    response = tenant_client.post("/v1/repositories", data="github_repo_id=1", content_type="text/plain")
    assert_problem(response, 415, "unsupported-media-type")


def test_an_oversized_body_is_413(tenant_client):
    huge = '{"owner": "' + "x" * (2 * 1024 * 1024) + '"}'
    response = tenant_client.post("/v1/repositories", data=huge, content_type="application/json")
    assert_problem(response, 413, "payload-too-large")


def test_an_invalid_cursor_is_422(tenant_client):
    problem = assert_problem(tenant_client.get("/v1/repositories?cursor=garbage"), 422)
    assert "cursor" in problem["errors"]


def test_unexpected_exceptions_are_500_problems_without_internals(make_app):
    app = make_app(TESTING=False)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    response = app.test_client().get("/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "secret internal detail" not in response.get_data(as_text=True)
    assert body["detail"] == body["title"]


def test_the_guard_fails_closed_and_logs_the_refusal_with_the_request_id(make_app, caplog):
    """A tenant model touched with no tenant bound: refused before any SQL, 500, logged."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models.tenant import Repository

    app = make_app(TESTING=False)

    @app.get("/unbound")
    def unbound():
        return {"names": db.session.scalars(select(Repository.name)).all()}

    with caplog.at_level("ERROR", logger="app.api.errors"):
        response = app.test_client().get("/unbound", headers={"X-Request-ID": "req-guard-7"})
    assert_problem(response, 500, "internal-error")
    assert response.headers["X-Request-ID"] == "req-guard-7"
    assert any("tenant guard refused request req-guard-7" in r.getMessage() for r in caplog.records)


def test_database_down_is_503(make_app):
    app = make_app("postgresql://nobody@127.0.0.1:1/none", DB_POOL_TIMEOUT=1)
    response = app.test_client().get("/v1/admin/tenants", headers={"Authorization": "Bearer test-admin-token"})
    assert_problem(response, 503, "database-unavailable")


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["public_revision"] == ready.json["public_head"]


def test_readiness_fails_while_the_public_schema_is_behind(make_app, tenantry_database_url):
    import psycopg

    app = make_app()
    url = tenantry_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        head = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()[0]
        conn.execute("UPDATE public.alembic_version SET version_num = 'old'")
        try:
            body = assert_problem(app.test_client().get("/readyz"), 503)
            assert "flask db upgrade" in body["detail"]
        finally:
            conn.execute("UPDATE public.alembic_version SET version_num = %s", (head,))


def test_openapi_documents_every_endpoint(app, client):
    spec = client.get("/v1/openapi.json").json
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in {"static", "api-docs.openapi_json"} or rule.endpoint.startswith("console."):
            continue  # the operator console is HTML pages, not part of the JSON API's contract
        path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)


def test_an_unmigrated_database_is_503_saying_to_run_flask_db_upgrade(make_app, tenantry_database_url):
    """Before `flask db upgrade`, a tenant request and an admin request find no public
    tables: 503 naming the command, never a 500 (on a migrated database, the same missing
    table would be a bug: 500)."""
    from app.extensions import db
    from app.testing import fresh_database

    with fresh_database(tenantry_database_url) as url:
        app = make_app(url)
        c = app.test_client()
        key = "tnt_0123456789ab_" + "s" * 43  # well-formed, so it is looked up
        for path, token in (("/v1/repositories", key), ("/v1/admin/tenants", "test-admin-token")):
            body = assert_problem(c.get(path, headers={"Authorization": f"Bearer {token}"}), 503,
                                  "database-not-migrated")
            assert "flask db upgrade" in body["detail"], body
        with app.app_context():  # before the database is dropped (on Citus, workers too)
            db.engine.dispose()
