"""Authentication at its edges: malformed headers, keys that outlived their tenant, wrong credentials.

Every route is covered: the lists of tenant and admin operations come from the app's
URL map, so a new endpoint is held to the same rules without editing this file.
"""

from __future__ import annotations

import ast
import base64
import inspect
import re
import textwrap

import pytest

from app.api import auth
from app.tenancy import api_keys
from app.testing import ADMIN_TOKEN, assert_problem

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BODY_METHODS = {"POST", "PATCH", "PUT"}


def operations(app, admin: bool) -> list[tuple[str, str]]:
    """(method, concrete path) of every tenant (or admin) operation the app routes."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/") or rule.endpoint == "api-docs.openapi_json":
            continue
        if rule.rule.startswith("/v1/admin/") != admin:
            continue
        path = re.sub(r"<int:[a-z_]+>", "1", rule.rule)
        path = re.sub(r"<[a-z_:]+>", "some_name", path)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, path))
    assert found
    return found


def call(client, method: str, path: str, headers: dict[str, str]):
    kwargs = {"json": {}} if method in BODY_METHODS else {}
    return client.open(path, method=method, headers=headers, **kwargs)


@pytest.fixture
def key(make_tenant):
    return make_tenant(plan="enterprise")


# --- malformed Authorization headers ----------------------------------------------------


def malformed(token: str) -> list[str]:
    """Headers that must not authenticate anyone, built around a real token."""
    prefix = token.split("_")[1]
    # The prefix is 12 hex digits: one with no letter (about 1 in 280) upper-cases to itself, the real token.
    shouted = prefix.upper() if prefix.upper() != prefix else "A" + prefix.upper()[1:]
    return [
        token,  # no scheme
        f"Basic {base64.b64encode(f'user:{token}'.encode()).decode()}",
        f"Token {token}",
        f"Bearer{token}",
        f"Bearer\t{token}",
        "Bearer",
        "Bearer ",
        "Bearer      ",
        "",
        " ",
        f"Bearer {token}x",
        f"Bearer {token[:-1]}",
        f"Bearer {token.upper()}",
        f"Bearer tnt_{shouted}_{token.split('_', 2)[2]}",
        f"Bearer tnt_{prefix}_",
        f"Bearer tnt__{token.split('_', 2)[2]}",
        f"Bearer tnt_{prefix}",
        f"Bearer {token} {token}",
        f"Bearer {token},Bearer {token}",
        "Bearer tnt_" + "a" * 12 + "_" + "s" * 100_000,  # huge
        "Bearer " + "x" * 100_000,
        "Bearer tnt_" + "f" * 10_000 + "_secret",
        f"Bearer tnt_{prefix}_\u00e9\u00e8",  # non-ASCII, as a server decodes it (latin-1)
        "Bearer tnt_\u00e9\u00e9\u00e9_secret",
        "Bearer \u00c3\u00a9\u00c3\u00a8",  # UTF-8 bytes of "éè" seen as latin-1
        "Bearer tnt_ab\u0000c_secret",  # NUL in the prefix reached the query: a 500
        f"Bearer tnt_{prefix}_sec\u0000ret",
        "Bearer tnt_' OR '1'='1_x",
        "Bearer tnt_%_x",
        f"Bearer {ADMIN_TOKEN}",
    ]


def test_malformed_authorization_headers_are_401_on_every_tenant_route(app, client, key):
    offenders = []
    for header in malformed(key.token):
        for method, path in operations(app, admin=False):
            response = call(client, method, path, {"Authorization": header})
            if response.status_code != 401 or response.content_type != "application/problem+json" \
                    or not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
                offenders.append((header[:60], method, path, response.status_code))
    assert not offenders


def test_malformed_authorization_headers_are_401_on_every_admin_route(app, client):
    offenders = []
    headers = [h for h in malformed("tnt_0123456789ab_secret") if "tnt_" not in h and ADMIN_TOKEN not in h] + [
        f"Bearer {ADMIN_TOKEN}x", f"Bearer {ADMIN_TOKEN[:-1]}", f"Bearer {ADMIN_TOKEN.upper()}",
        f"Basic {base64.b64encode(f'admin:{ADMIN_TOKEN}'.encode()).decode()}", ADMIN_TOKEN,
        f"Bearer {ADMIN_TOKEN}\u00e9",
    ]
    for header in headers:
        for method, path in operations(app, admin=True):
            response = call(client, method, path, {"Authorization": header})
            if response.status_code != 401 or response.content_type != "application/problem+json":
                offenders.append((header[:60], method, path, response.status_code))
    assert not offenders


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
@pytest.mark.parametrize("gap", [" ", "  ", "   "])
def test_the_scheme_is_case_insensitive_and_extra_spaces_are_tolerated(client, key, scheme, gap):
    """RFC 9110 (11.1): the scheme is case-insensitive. Surrounding whitespace is not part of the token."""
    response = client.get("/v1/repositories", headers={"Authorization": f"{scheme}{gap}{key.token} "})
    assert response.status_code == 200, response.json
    response = client.get("/v1/admin/plans", headers={"Authorization": f"{scheme}{gap}{ADMIN_TOKEN}"})
    assert response.status_code == 200, response.json


# --- the wrong credential on the wrong API ----------------------------------------------


def test_the_admin_token_on_the_tenant_api_is_401_saying_what_is_expected(app, client):
    for method, path in operations(app, admin=False):
        body = assert_problem(call(client, method, path, ADMIN), 401, "unauthorized")
        assert "tenant API key" in body["detail"] and "/v1/admin" in body["detail"], body


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
def test_a_tenant_key_of_any_role_on_the_admin_api_is_403(app, client, key, role):
    token = key.token
    if role != "admin":
        issued = client.post("/v1/api-keys", json={"role": role}, headers=key.auth)
        token = issued.json["token"]
    for method, path in operations(app, admin=True):
        body = assert_problem(call(client, method, path, {"Authorization": f"Bearer {token}"}), 403, "forbidden")
        assert "admin API" in body["detail"]
    # and it changed nothing: the tenant still exists, nothing was provisioned
    assert [t["slug"] for t in client.get("/v1/admin/tenants", headers=ADMIN).json["items"]] == [key.slug]


# --- keys that outlived their tenant, their revocation, or its suspension ----------------


def test_keys_of_a_deleted_tenant_are_401_everywhere_even_once_the_slug_is_reused(app, client, make_tenant):
    old = make_tenant("reused_slug", plan="enterprise")
    viewer = client.post("/v1/api-keys", json={"role": "viewer"}, headers=old.auth).json["token"]
    assert client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "octo", "name": "old-data"},
                       headers=old.auth).status_code == 201
    assert client.delete(f"/v1/admin/tenants/{old.slug}", headers=ADMIN).status_code == 204
    new = client.post("/v1/admin/tenants", json={"slug": "reused_slug", "name": "New owner"}, headers=ADMIN)
    assert new.status_code == 201
    for token in (old.token, viewer):
        for method, path in operations(app, admin=False):
            assert_problem(call(client, method, path, {"Authorization": f"Bearer {token}"}), 401, "unauthorized")
    # the new tenant of that slug starts empty: nothing of the old one survived in its schema
    fresh = {"Authorization": f"Bearer {new.json['api_key']['token']}"}
    assert client.get("/v1/repositories", headers=fresh).json["items"] == []
    assert client.get("/v1/repositories/1", headers=fresh).status_code == 404
    assert [k["id"] for k in client.get("/v1/api-keys", headers=fresh).json["items"]] == [
        new.json["api_key"]["id"]]


def test_a_revoked_key_is_401_on_every_route_and_a_suspended_tenant_403(app, client, key):
    spare = client.post("/v1/api-keys", json={"role": "admin"}, headers=key.auth).json
    assert client.delete(f"/v1/api-keys/{spare['id']}", headers=key.auth).status_code == 204
    revoked = {"Authorization": f"Bearer {spare['token']}"}
    for method, path in operations(app, admin=False):
        assert_problem(call(client, method, path, revoked), 401, "unauthorized")
    assert client.patch(f"/v1/admin/tenants/{key.slug}", json={"status": "suspended"}, headers=ADMIN).status_code == 200
    for method, path in operations(app, admin=False):
        assert_problem(call(client, method, path, key.auth), 403, "tenant-suspended")
        assert_problem(call(client, method, path, revoked), 401, "unauthorized")  # revoked stays revoked
    assert client.patch(f"/v1/admin/tenants/{key.slug}", json={"status": "active"}, headers=ADMIN).status_code == 200
    assert client.get("/v1/repositories", headers=key.auth).status_code == 200
    assert_problem(client.get("/v1/repositories", headers=revoked), 401, "unauthorized")


# --- constant-time comparisons -----------------------------------------------------------


def _compares(function) -> tuple[list[str], list[str]]:
    """Calls of hmac.compare_digest, and ==/!= comparisons, in the source of ``function``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    digests, equalities = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "hmac.compare_digest":
            digests.append(ast.unparse(node))
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if names & SECRETS:
                equalities.append(ast.unparse(node))
    return digests, equalities


#: Names that hold a secret or its hash where the token is checked.
SECRETS = {"token", "secret", "expected", "secret_hash", "ADMIN_TOKEN"}


@pytest.mark.parametrize("function", [auth.require_admin, api_keys.authenticate])
def test_secrets_are_compared_in_constant_time(function):
    """A static check: the comparison is hmac.compare_digest, and no secret meets an ==."""
    digests, equalities = _compares(function)
    assert digests, f"{function.__qualname__} does not use hmac.compare_digest"
    assert not equalities


def test_an_unknown_prefix_is_still_compared_against_a_dummy_hash():
    """So the time of a refusal does not tell which prefixes exist (a static check of the source)."""
    source = inspect.getsource(api_keys.authenticate)
    assert "if row else hash_secret(" in source
    digests, _ = _compares(api_keys.authenticate)
    assert any("expected" in d for d in digests)
