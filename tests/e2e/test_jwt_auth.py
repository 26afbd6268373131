"""JWT bearer tokens through HTTP: the tenant and role claims authenticate like a key, or 401.

Every refusal is a 401 problem, checked with its reason; a token that passes is bound to
its tenant with its role, counted against its tenant's rate and audited as ``jwt:<sub>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from sqlalchemy import Engine, text

from app.api.auth import tenant_key_required
from app.extensions import db
from app.tenancy import audit
from app.testing import ADMIN_TOKEN, assert_problem, make_test_app

SECRET = "jwt-test-secret-that-is-long-enough-for-hs256"  # noqa: S105 - a fixture value
AUDIENCE = "tenantry-api"
ISSUER = "https://idp.example.test/"
REPO = {"github_repo_id": 42, "owner": "octo", "name": "hello"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def jwt_app(app: Flask, tenantry_database_url: str, rsa_key) -> Iterator[Flask]:
    """An app accepting HS256 and RS256 tokens, with a route that shows the audit actor."""
    application = make_test_app(
        tenantry_database_url, JWT_SECRET=SECRET, JWT_PUBLIC_KEY=public_pem(rsa_key),
        JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER, JWT_LEEWAY=30,
    )

    @application.get("/_test/actor")
    def actor() -> dict[str, Any]:
        tenant_key_required(read="viewer")()
        current = audit.current_actor()
        return {"label": current.label, "api_key_id": current.api_key_id, "role": current.role}

    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def jc(jwt_app: Flask):
    return jwt_app.test_client()


def claims(who: Any, role: str = "viewer", /, **overrides: Any) -> dict[str, Any]:
    """Valid claims for tenant ``who`` (a test tenant or a slug); ``overrides`` replace or DROP some."""
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": "ci-bot", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 300,
        "tenant": getattr(who, "slug", who), "role": role,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()  # claims(..., exp=DROP) leaves the claim out


def hs(payload: dict[str, Any], secret: str = SECRET, **kwargs: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def handmade(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    """A token assembled by hand (for what PyJWT refuses to produce); ``sign(signing_input) -> bytes``."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b64(sign(signing_input.encode())) if sign else ""
    return f"{signing_input}.{signature}"


def refused(response, reason: str) -> dict[str, Any]:
    body = assert_problem(response, 401, "unauthorized")
    assert reason in body["detail"], body["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return body


# --- accepted ---------------------------------------------------------------------


def test_an_hs256_token_authenticates_as_its_tenant(jc, tenant):
    response = jc.get("/v1/tenant", headers=bearer(hs(claims(tenant))))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["slug"] == tenant.slug
    assert jc.get("/v1/repositories", headers=bearer(hs(claims(tenant)))).json["items"] == []


def test_an_rs256_token_authenticates_as_its_tenant(jc, tenant, rsa_key):
    token = jwt.encode(claims(tenant, "member"), rsa_key, algorithm="RS256")
    assert jc.post("/v1/repositories", json=REPO, headers=bearer(token)).status_code == 201
    assert jc.get("/v1/tenant", headers=bearer(token)).json["slug"] == tenant.slug


def test_an_audience_list_containing_ours_and_a_skew_within_the_leeway_are_accepted(jc, tenant):
    now = int(time.time())
    token = hs(claims(tenant, aud=["other-api", AUDIENCE], exp=now - 10, iat=now + 10, nbf=now + 10))
    assert jc.get("/v1/repositories", headers=bearer(token)).status_code == 200


def test_the_role_claim_is_enforced_like_a_key_role(jc, tenant):
    viewer, member, admin = (bearer(hs(claims(tenant, role))) for role in ("viewer", "member", "admin"))

    body = assert_problem(jc.post("/v1/repositories", json=REPO, headers=viewer), 403, "forbidden")
    assert "token has role 'viewer'" in body["detail"]
    assert jc.get("/v1/repositories", headers=viewer).json["items"] == []  # nothing was created

    assert jc.post("/v1/repositories", json=REPO, headers=member).status_code == 201
    assert jc.patch("/v1/repositories/1", json={"name": "renamed"}, headers=member).status_code == 200
    assert_problem(jc.get("/v1/api-keys", headers=member), 403, "forbidden")
    assert_problem(jc.get("/v1/audit-events", headers=member), 403, "forbidden")

    assert jc.get("/v1/api-keys", headers=admin).status_code == 200
    issued = jc.post("/v1/api-keys", json={"role": "viewer", "name": "from-jwt"}, headers=admin)
    assert issued.status_code == 201
    assert jc.get("/v1/repositories", headers=bearer(issued.json["token"])).status_code == 200


def test_a_token_sees_only_its_own_tenant(jc, make_tenant):
    mine, other = make_tenant(), make_tenant()
    created = jc.post("/v1/repositories", json=REPO, headers=other.auth)
    assert created.status_code == 201
    token = bearer(hs(claims(mine, "admin")))
    assert jc.get("/v1/repositories", headers=token).json["items"] == []
    assert_problem(jc.get(f"/v1/repositories/{created.json['id']}", headers=token), 404)
    assert_problem(jc.delete(f"/v1/repositories/{created.json['id']}", headers=token), 404)
    assert len(jc.get("/v1/repositories", headers=other.auth).json["items"]) == 1


# --- refused: 401 -----------------------------------------------------------------


NOW = int(time.time())


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": NOW - 3600}, "expired"),
        ({"exp": DROP}, "'exp' claim"),
        ({"exp": "tomorrow"}, "Invalid token"),
        ({"nbf": NOW + 3600}, "not valid yet"),
        ({"iat": NOW + 3600}, "not valid yet"),
        ({"aud": "another-api"}, "audience"),
        ({"aud": ["another-api", "a-third"]}, "audience"),
        ({"aud": DROP}, "'aud' claim"),
        ({"iss": "https://evil.example.test/"}, "issuer"),
        ({"iss": DROP}, "'iss' claim"),
        ({"sub": DROP}, "'sub' claim"),
        ({"sub": ""}, "'sub'"),
        ({"sub": 42}, "Invalid token"),
        ({"sub": "x" * 191}, "'sub'"),
        ({"tenant": DROP}, "no 'tenant' claim"),
        ({"tenant": "nobody_here"}, "unknown tenant"),
        ({"tenant": 7}, "not a tenant slug"),
        ({"tenant": ["a", "b"]}, "not a tenant slug"),
        ({"tenant": "Bad Slug'--"}, "not a tenant slug"),
        ({"role": DROP}, "no 'role' claim"),
        ({"role": "owner"}, "role must be one of"),
        ({"role": "ADMIN"}, "role must be one of"),
        ({"role": ["admin"]}, "role must be one of"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}" for k in v),
)
def test_bad_claims_are_401(jc, tenant, overrides, reason):
    token = hs(claims(tenant, "admin", **overrides))
    refused(jc.get("/v1/repositories", headers=bearer(token)), reason)


def test_a_signature_by_another_secret_or_a_tampered_payload_is_401(jc, tenant, make_tenant, rsa_key):
    refused(jc.get("/v1/repositories", headers=bearer(hs(claims(tenant), secret=SECRET + "-not"))), "signature")

    viewer = hs(claims(tenant, "viewer"))
    header, _, signature = viewer.split(".")
    promoted = f"{header}.{b64(json.dumps(claims(tenant, 'admin')).encode())}.{signature}"
    refused(jc.get("/v1/api-keys", headers=bearer(promoted)), "signature")
    other = make_tenant()
    moved = f"{header}.{b64(json.dumps(claims(other, 'viewer')).encode())}.{signature}"
    refused(jc.get("/v1/repositories", headers=bearer(moved)), "signature")

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(jc.get("/v1/repositories", headers=bearer(jwt.encode(claims(tenant), stranger, algorithm="RS256"))),
            "signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_tokens_are_401(jc, tenant, alg):
    token = handmade({"alg": alg, "typ": "JWT"}, claims(tenant, "admin"))
    assert token.endswith(".")
    refused(jc.get("/v1/repositories", headers=bearer(token)), "not accepted")
    # ... and with a signature segment, whatever it holds
    refused(jc.get("/v1/repositories", headers=bearer(token + "c2ln")), "not accepted")


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS512", "PS256", "ES256", "EdDSA", None, 256])
def test_algorithms_without_a_configured_key_are_401(jc, tenant, alg):
    header = {"typ": "JWT"} if alg is None else {"alg": alg, "typ": "JWT"}
    token = handmade(header, claims(tenant), lambda m: hmac.new(SECRET.encode(), m, hashlib.sha512).digest())
    refused(jc.get("/v1/repositories", headers=bearer(token)), "Token algorithm")


def pem_as_hmac_secret(pem: str, payload: dict[str, Any]) -> str:
    """The HS/RS confusion attack: HS256 'signed' with the server's RSA public key as the secret."""
    return handmade({"alg": "HS256", "typ": "JWT"}, payload,
                    lambda m: hmac.new(pem.encode(), m, hashlib.sha256).digest())


def test_hs_rs_confusion_is_refused(make_app, jc, tenant, rsa_key):
    pem = public_pem(rsa_key)
    rs_only = make_app(JWT_PUBLIC_KEY=pem, JWT_AUDIENCE=AUDIENCE).test_client()
    forged = pem_as_hmac_secret(pem, claims(tenant, "admin", iss=DROP))
    refused(rs_only.get("/v1/api-keys", headers=bearer(forged)), "'HS256' is not accepted")
    # With both keys configured, the RSA key still only ever verifies RS256.
    refused(jc.get("/v1/api-keys", headers=bearer(pem_as_hmac_secret(pem, claims(tenant, "admin")))), "signature")
    # The genuine RS256 token works on the RS-only app (no issuer configured there).
    good = jwt.encode(claims(tenant, iss=DROP), rsa_key, algorithm="RS256")
    assert rs_only.get("/v1/repositories", headers=bearer(good)).status_code == 200


def test_an_hs_only_deployment_refuses_rs256(make_app, tenant, rsa_key):
    hs_only = make_app(JWT_SECRET=SECRET, JWT_AUDIENCE=AUDIENCE).test_client()
    refused(hs_only.get("/v1/repositories", headers=bearer(jwt.encode(claims(tenant), rsa_key, algorithm="RS256"))),
            "'RS256' is not accepted")
    assert hs_only.get("/v1/repositories", headers=bearer(hs(claims(tenant)))).status_code == 200


def test_without_a_configured_key_jwts_are_401_not_enabled(client, tenant):
    refused(client.get("/v1/repositories", headers=bearer(hs(claims(tenant)))), "JWT authentication is not enabled")
    refused(client.get("/v1/repositories", headers=bearer("a.b.c")), "JWT authentication is not enabled")


@pytest.mark.parametrize(
    "token",
    ["a.b.c", "e30.e30.", "x" * 20 + "." + "y" * 20 + ".z", "...", "a.b", "a.b.c.d", "a.b.c!",
     b64(b'{"alg":"HS256"}') + "." + b64(b"[1, 2]") + ".c2ln"],
)
def test_malformed_tokens_are_401(jc, token):
    assert_problem(jc.get("/v1/repositories", headers=bearer(token)), 401, "unauthorized")


def test_an_oversized_token_is_401_before_any_decoding(jc, tenant):
    token = hs(claims(tenant, padding="x" * 9000))
    refused(jc.get("/v1/repositories", headers=bearer(token)), "Malformed token")


def test_a_tnt_prefixed_token_is_always_an_api_key(jc):
    refused(jc.get("/v1/repositories", headers=bearer("tnt_a.b.c")), "API key")


# --- tenant state -----------------------------------------------------------------


def test_a_suspended_tenant_is_403_and_a_deleted_one_401(jc, admin_client, make_tenant, engine):
    tenant = make_tenant()
    token = bearer(hs(claims(tenant, "admin")))
    assert admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"status": "suspended"}).status_code == 200
    assert_problem(jc.get("/v1/repositories", headers=token), 403, "tenant-suspended")
    assert_problem(jc.post("/v1/repositories", json=REPO, headers=token), 403, "tenant-suspended")
    assert admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"status": "active"}).status_code == 200
    assert jc.get("/v1/repositories", headers=token).status_code == 200

    assert admin_client.delete(f"/v1/admin/tenants/{tenant.slug}").status_code == 204
    refused(jc.get("/v1/repositories", headers=token), "unknown tenant")


def test_jwts_never_work_on_the_admin_api(jc, tenant):
    for token in (hs(claims(tenant, "admin")), "a.b.c"):
        body = assert_problem(jc.get("/v1/admin/tenants", headers=bearer(token)), 403, "forbidden")
        assert "JWT" in body["detail"]
    assert jc.get("/v1/admin/tenants", headers=bearer(ADMIN_TOKEN)).status_code == 200


# --- same rate limit, audit actor, and key bookkeeping ------------------------------


def test_jwts_count_against_the_tenants_plan_rate_with_its_keys(jc, make_plan, make_tenant):
    tenant = make_tenant(plan=make_plan(rate_limit_per_minute=3))
    token = bearer(hs(claims(tenant)))
    assert jc.get("/v1/repositories", headers=token).status_code == 200
    assert jc.get("/v1/repositories", headers=tenant.auth).status_code == 200
    assert jc.get("/v1/repositories", headers=token).status_code == 200
    limited = assert_problem(jc.get("/v1/repositories", headers=token), 429, "too-many-requests")
    assert "3 requests per minute" in limited["detail"]
    assert_problem(jc.get("/v1/repositories", headers=tenant.auth), 429)


def test_the_audit_actor_is_the_jwt_subject_with_its_role_and_no_key(jc, tenant, engine):
    token = bearer(hs(claims(tenant, "member", sub="deploy-bot@ci")))
    assert jc.get("/_test/actor", headers=token).json == {
        "label": "jwt:deploy-bot@ci", "api_key_id": None, "role": "member",
    }
    key_id = int(jc.get("/_test/actor", headers=tenant.auth).json["label"].split(":")[1])

    created = jc.post("/v1/repositories", json=REPO, headers={**token, "X-Request-ID": "jwt-req-1"})
    assert created.status_code == 201
    jc.post("/v1/repositories", json={**REPO, "github_repo_id": 43}, headers={**tenant.auth, "X-Request-ID": "key-1"})
    admin = bearer(hs(claims(tenant, "admin", sub="alice")))
    jc.post("/v1/api-keys", json={"role": "viewer"}, headers={**admin, "X-Request-ID": "jwt-req-2"})

    listed = jc.get("/v1/audit-events", headers=admin).json["items"]
    by_request = {e["request_id"]: e for e in listed}
    assert {k: by_request["jwt-req-1"][k] for k in ("action", "api_key_id", "role")} == {
        "action": "repository.created", "api_key_id": None, "role": "member"}
    assert {k: by_request["key-1"][k] for k in ("action", "api_key_id", "role")} == {
        "action": "repository.created", "api_key_id": key_id, "role": "admin"}
    assert {k: by_request["jwt-req-2"][k] for k in ("action", "api_key_id", "role")} == {
        "action": "api_key.created", "api_key_id": None, "role": "admin"}
    with engine.connect() as conn:  # the rows themselves, in the tenant's schema
        rows = conn.execute(text(
            f'SELECT request_id, api_key_id, role FROM "{tenant.schema_name}".audit_events ORDER BY id'
        )).all()
    assert [tuple(r) for r in rows] == [("jwt-req-1", None, "member"), ("key-1", key_id, "admin"),
                                        ("jwt-req-2", None, "admin")]


def last_used(engine: Engine, tenant) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(
            text("SELECT last_used_at FROM public.api_keys WHERE tenant_id = :t ORDER BY id"),
            {"t": tenant.tenant_id},
        ).scalars())


def test_jwt_requests_touch_no_key_and_keys_are_still_touched(jc, tenant, engine):
    token = bearer(hs(claims(tenant, "member")))
    assert jc.post("/v1/repositories", json=REPO, headers=token).status_code == 201
    assert jc.get("/v1/repositories", headers=token).status_code == 200
    assert last_used(engine, tenant) == [None]

    assert_problem(jc.post("/v1/repositories", json=REPO, headers=tenant.auth), 409)  # failed: not touched
    assert last_used(engine, tenant) == [None]
    assert jc.get("/v1/repositories", headers=tenant.auth).status_code == 200
    [touched] = last_used(engine, tenant)
    assert touched is not None
    assert jc.get("/v1/repositories", headers=token).status_code == 200
    assert last_used(engine, tenant) == [touched]
