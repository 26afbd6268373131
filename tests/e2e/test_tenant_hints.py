"""Tenant hints (Host under TENANT_BASE_DOMAIN, X-Tenant) are verified, never trusted.

The credential picks the tenant. A hint naming another tenant is a 404 that looks like
any unknown URL (whether that tenant exists or not); without valid credentials a hint
changes nothing: 401.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import jwt
import pytest
from flask import Flask
from sqlalchemy import text

from app.extensions import db
from app.testing import ADMIN_TOKEN, assert_problem, make_test_app

BASE = "tenants.example.test"
SECRET = "hint-test-secret-that-is-long-enough-for-hs256"  # noqa: S105 - a fixture value
AUDIENCE = "tenantry-api"
REPO = {"github_repo_id": 1, "owner": "o", "name": "n"}


@pytest.fixture(scope="module")
def hint_app(app: Flask, tenantry_database_url: str) -> Iterator[Flask]:
    application = make_test_app(
        tenantry_database_url, TENANT_BASE_DOMAIN=BASE, JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE,
    )
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def hc(hint_app: Flask):
    return hint_app.test_client()


def jwt_auth(slug: str, role: str = "admin") -> dict[str, str]:
    now = int(time.time())
    token = jwt.encode({"sub": "s", "aud": AUDIENCE, "exp": now + 300, "tenant": slug, "role": role},
                       SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def not_found(response) -> dict:
    body = assert_problem(response, 404, "not-found")
    assert body == NOT_FOUND_BODY  # the same as any unknown URL: says nothing about the tenant
    return body


NOT_FOUND_BODY: dict = {}


@pytest.fixture(autouse=True)
def _routing_404_body(client) -> None:
    if not NOT_FOUND_BODY:
        NOT_FOUND_BODY.update(client.get("/no/such/route").json)


# --- Host ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["{slug}.tenants.example.test", "{SLUG}.TENANTS.Example.Test", "{slug}.tenants.example.test:8443",
     "{slug}.tenants.example.test.", "{slug}.tenants.example.test.:443"],
)
def test_a_host_naming_the_credentials_tenant_is_served(hc, tenant, host):
    headers = {**tenant.auth, "Host": host.format(slug=tenant.slug, SLUG=tenant.slug.upper())}
    assert hc.get("/v1/repositories", headers=headers).status_code == 200
    assert hc.post("/v1/repositories", json=REPO, headers=headers).status_code == 201


@pytest.mark.parametrize(
    "host",
    [BASE, BASE.upper() + ":8080", "localhost", "127.0.0.1:5000", "[::1]:5000", "api.other.test",
     "{slug}.example.test", "{slug}.tenants.example.test.evil.test", "{slug}tenants.example.test",
     "eviltenants.example.test", ""],
)
def test_a_host_that_is_the_bare_base_domain_or_outside_it_carries_no_hint(hc, tenant, host):
    headers = {**tenant.auth, "Host": host.format(slug=tenant.slug)}
    assert hc.get("/v1/repositories", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "host",
    ["{other}.tenants.example.test", "nobody.tenants.example.test", "{other}.TENANTS.EXAMPLE.TEST:8443",
     "x.{slug}.tenants.example.test", "{slug}.{slug}.tenants.example.test", "{slug}x.tenants.example.test",
     "{slug}_x.tenants.example.test", "{slug}.{other}.tenants.example.test"],
)
def test_a_host_naming_another_or_no_tenant_is_404(hc, make_tenant, host):
    tenant, other = make_tenant(), make_tenant()
    headers = {**tenant.auth, "Host": host.format(slug=tenant.slug, other=other.slug)}
    not_found(hc.get("/v1/repositories", headers=headers))
    not_found(hc.post("/v1/repositories", json=REPO, headers=headers))
    assert hc.get("/v1/repositories", headers=tenant.auth).json["items"] == []  # nothing was created
    assert hc.get("/v1/repositories", headers=other.auth).json["items"] == []


def test_a_404_for_an_existing_other_tenant_and_for_no_tenant_are_identical(hc, make_tenant):
    tenant, other = make_tenant(), make_tenant()
    existing = hc.get("/v1/repositories", headers={**tenant.auth, "Host": f"{other.slug}.{BASE}"})
    missing = hc.get("/v1/repositories", headers={**tenant.auth, "Host": f"zz{uuid.uuid4().hex[:8]}.{BASE}"})
    assert existing.status_code == missing.status_code == 404
    assert existing.get_data() == missing.get_data()


def test_underscore_slugs_are_named_with_hyphens_or_underscores(hc, make_tenant):
    tenant = make_tenant(f"h_{uuid.uuid4().hex[:8]}")
    for label in (tenant.slug, tenant.slug.replace("_", "-"), tenant.slug.upper().replace("_", "-")):
        headers = {**tenant.auth, "Host": f"{label}.{BASE}"}
        assert hc.get("/v1/repositories", headers=headers).status_code == 200, label
    not_found(hc.get("/v1/repositories", headers={**tenant.auth, "Host": f"{tenant.slug.replace('_', '')}.{BASE}"}))


def test_a_jwt_is_checked_against_the_host_too(hc, make_tenant):
    tenant, other = make_tenant(), make_tenant()
    assert hc.get("/v1/repositories", headers={**jwt_auth(tenant.slug), "Host": f"{tenant.slug}.{BASE}"}).status_code \
        == 200
    not_found(hc.get("/v1/repositories", headers={**jwt_auth(tenant.slug), "Host": f"{other.slug}.{BASE}"}))
    not_found(hc.get("/v1/api-keys", headers={**jwt_auth(tenant.slug), "X-Tenant": other.slug}))


@pytest.mark.parametrize("authorization", [None, "Bearer tnt_000000000000_wrong", "Bearer a.b.c", "Basic eDp5"])
def test_a_host_hint_without_valid_credentials_is_401(hc, tenant, authorization):
    headers = {"Host": f"{tenant.slug}.{BASE}", "X-Tenant": tenant.slug}
    if authorization:
        headers["Authorization"] = authorization
    assert_problem(hc.get("/v1/repositories", headers=headers), 401, "unauthorized")
    assert_problem(hc.get("/v1/tenant", headers=headers), 401, "unauthorized")


def test_the_host_is_not_checked_without_a_base_domain(client, make_tenant):
    tenant, other = make_tenant(), make_tenant()
    assert client.get("/v1/repositories", headers={**tenant.auth, "Host": f"{other.slug}.{BASE}"}).status_code == 200


# --- X-Tenant -------------------------------------------------------------------------


@pytest.fixture(params=["no base domain", "base domain"])
def any_client(request, client, hc):
    return client if request.param == "no base domain" else hc


def test_x_tenant_naming_the_credentials_tenant_is_served(any_client, tenant):
    for value in (tenant.slug, tenant.slug.upper(), f"  {tenant.slug} "):
        assert any_client.get("/v1/repositories", headers={**tenant.auth, "X-Tenant": value}).status_code == 200
    created = any_client.post("/v1/repositories", json=REPO, headers={**tenant.auth, "X-Tenant": tenant.slug})
    assert created.status_code == 201


def test_x_tenant_naming_another_or_no_tenant_is_404(any_client, make_tenant):
    tenant, other = make_tenant(), make_tenant()
    for value in (other.slug, "nobody", "", f"{tenant.slug}, {tenant.slug}", f"{tenant.slug},{other.slug}",
                  f"{tenant.slug}x", "public"):
        headers = {**tenant.auth, "X-Tenant": value}
        not_found(any_client.get("/v1/repositories", headers=headers))
        not_found(any_client.post("/v1/repositories", json=REPO, headers=headers))
        not_found(any_client.get("/v1/tenant", headers=headers))
    assert any_client.get("/v1/repositories", headers=tenant.auth).json["items"] == []
    assert any_client.get("/v1/repositories", headers=other.auth).json["items"] == []


def test_repeated_x_tenant_headers_must_all_match(any_client, make_tenant):
    tenant, other = make_tenant(), make_tenant()
    headers = [("Authorization", f"Bearer {tenant.token}"), ("X-Tenant", tenant.slug), ("X-Tenant", other.slug)]
    not_found(any_client.get("/v1/repositories", headers=headers))


def test_x_tenant_alone_is_401_and_names_nothing(any_client, make_tenant):
    tenant = make_tenant()
    plain = any_client.get("/v1/repositories")
    hinted = any_client.get("/v1/repositories", headers={"X-Tenant": tenant.slug})
    assert_problem(hinted, 401, "unauthorized")
    assert hinted.get_data() == plain.get_data()
    assert_problem(any_client.post("/v1/repositories", json=REPO, headers={"X-Tenant": tenant.slug}), 401)
    assert_problem(any_client.get("/v1/repositories", headers={"X-Tenant": tenant.slug,
                                                             "Authorization": "Bearer tnt_1234_nope"}), 401)
    assert any_client.get("/v1/repositories", headers=tenant.auth).json["items"] == []


def test_a_hint_mismatch_is_checked_before_the_role_and_touches_nothing(any_client, make_tenant, engine):
    tenant, other = make_tenant(), make_tenant()
    not_found(any_client.get("/v1/api-keys", headers={**tenant.auth, "X-Tenant": other.slug}))
    with engine.connect() as conn:
        touched = conn.execute(text("SELECT last_used_at FROM public.api_keys WHERE tenant_id = :t"),
                               {"t": tenant.tenant_id}).scalar_one()
    assert touched is None  # a refused request does not count as a use of the key


def test_hints_mean_nothing_to_the_admin_api_or_health(hc, make_tenant):
    tenant = make_tenant()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Host": f"nobody.{BASE}", "X-Tenant": "nobody"}
    assert hc.get(f"/v1/admin/tenants/{tenant.slug}", headers=admin).status_code == 200
    assert hc.get("/healthz", headers={"Host": f"nobody.{BASE}", "X-Tenant": "nobody"}).status_code == 200
