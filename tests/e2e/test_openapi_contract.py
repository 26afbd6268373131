"""The OpenAPI document says what the server does (issue 21, section 1): the document and the behaviour.

schemathesis (test_schemathesis.py) and a generated client (test_generated_client.py)
check the whole; here each point on its own, in the document and at the server.
"""

from __future__ import annotations

import pytest

from app.testing import ADMIN_TOKEN, assert_problem

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROBLEM = "application/problem+json"
ROLES = {"viewer", "member", "admin"}


@pytest.fixture(scope="module")
def spec(app):
    return app.test_client().get("/v1/openapi.json").json


def operations(spec):
    for path, ops in spec["paths"].items():
        for method, operation in ops.items():
            if method != "parameters":
                yield path, method, operation


def resolve(spec, obj):
    while "$ref" in obj:
        section, name = obj["$ref"].split("/")[-2:]
        obj = spec["components"][section][name]
    return obj


def test_admin_and_tenant_credentials_are_separate_schemes_and_tenant_operations_name_their_role(spec):
    schemes = spec["components"]["securitySchemes"]
    assert set(schemes) == {"adminToken", "tenantApiKey", "tenantJwt"}
    assert schemes["tenantJwt"]["bearerFormat"] == "JWT"
    assert "security" not in spec  # each operation names its own
    for path, method, operation in operations(spec):
        if path in {"/healthz", "/readyz", "/metrics"}:
            assert operation["security"] == [], path
        elif path.startswith("/v1/admin/"):
            assert operation["security"] == [{"adminToken": []}], (method, path)
            assert "x-required-role" not in operation
        else:
            assert operation["security"] == [{"tenantApiKey": []}, {"tenantJwt": []}], (method, path)
            role = operation["x-required-role"]
            assert role in ROLES and f"role `{role}`" in operation["description"], (method, path)
    paths = spec["paths"]
    assert paths["/v1/repositories"]["get"]["x-required-role"] == "viewer"
    assert paths["/v1/repositories"]["post"]["x-required-role"] == "member"
    assert paths["/v1/api-keys"]["get"]["x-required-role"] == "admin"


def test_the_roles_the_document_names_are_the_ones_the_server_checks(app, make_tenant):
    tenant = make_tenant()
    client = app.test_client()
    viewer = client.post("/v1/api-keys", json={"role": "viewer"}, headers=tenant.auth).json["token"]
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    assert client.get("/v1/repositories", headers=as_viewer).status_code == 200  # viewer
    assert_problem(client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": "n"},
                               headers=as_viewer), 403, "forbidden")  # member
    assert_problem(client.get("/v1/api-keys", headers=as_viewer), 403, "forbidden")  # admin


def test_every_operation_has_a_unique_operation_id(spec):
    """A generated client's function names come from these, not from the paths."""
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(ids) == len(set(ids)) == len(list(operations(spec)))
    assert spec["paths"]["/v1/repositories"]["post"]["operationId"] == "createRepository"


def test_requests_and_responses_have_models_of_their_own(spec):
    schemas = spec["components"]["schemas"]
    create = resolve(spec, spec["paths"]["/v1/repositories"]["post"]["requestBody"]["content"]["application/json"]
                     ["schema"])
    assert set(create["properties"]) == {"github_repo_id", "owner", "name", "enabled"}
    assert create["additionalProperties"] is False
    for path, method, operation in operations(spec):
        if method == "patch":
            body = resolve(spec, operation["requestBody"]["content"]["application/json"]["schema"])
            assert body["minProperties"] == 1, path
    # Always sent, so required: a generated client needs no Unset checks.
    assert set(schemas["Repository"]["required"]) == set(schemas["Repository"]["properties"])
    assert set(schemas["RepositoryPage"]["required"]) == {"items", "next_cursor"}
    assert "token" in schemas["IssuedKey"]["required"] and "api_key" in schemas["TenantCreated"]["required"]
    optional = {"Ready": {"cluster"}, "ReadyRateLimits": {"detail"}, "ReadyUsage": {"detail"},
                "ConflictProblem": {"errors"}, "PaginationMetadata": None}
    for name, schema in schemas.items():
        if name.endswith(("Create", "Update")) or name in {"Move", "InvitationAccept", "Claim", "PaginationMetadata"}:
            continue  # request bodies, and flask-smorest's unused pagination component
        assert set(schema["properties"]) - set(schema.get("required", ())) == (optional.get(name) or set()), name


def test_every_error_status_has_a_problem_schema_of_its_own(spec):
    for path, method, operation in operations(spec):
        responses = operation["responses"]
        for status, response in responses.items():
            if status != "default" and int(status) < 400:
                continue
            response = resolve(spec, response)
            assert list(response["content"]) == [PROBLEM], (method, path, status)
            schema = response["content"][PROBLEM]["schema"]
            for one in schema.get("oneOf", [schema]):
                problem = resolve(spec, one)
                assert {"type", "title", "status", "detail"} <= set(problem["required"]), (method, path, status)
                if status != "default":
                    assert problem["properties"]["status"]["enum"] == [int(status)], (method, path, status)
        assert "422" in responses and "default" in responses, (method, path)
        if operation["security"]:
            assert {"401", "403", "503"} <= set(responses), (method, path)
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(responses), (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        if operation["security"] and not path.startswith("/v1/admin/"):
            assert "429" in responses, (method, path)
            assert resolve(spec, responses["429"])["headers"]["Retry-After"]["required"] is True
    schemas = spec["components"]["schemas"]
    assert "errors" in schemas["ValidationProblem"]["required"]
    assert {"quota", "limit", "usage"} <= set(schemas["QuotaProblem"]["required"])
    create_403 = spec["paths"]["/v1/repositories"]["post"]["responses"]["403"]["content"][PROBLEM]["schema"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in create_403["oneOf"]] == [
        "ForbiddenProblem", "TenantSuspendedProblem", "TenantPendingProblem", "QuotaProblem"]


def test_an_empty_cursor_is_the_first_page(tenant_client, admin_client):
    for client, path in ((tenant_client, "/v1/repositories"), (tenant_client, "/v1/api-keys"),
                         (tenant_client, "/v1/audit-events"), (admin_client, "/v1/admin/tenants"),
                         (admin_client, "/v1/admin/migrations"), (admin_client, "/v1/admin/audit-events")):
        assert client.get(f"{path}?cursor=").json == client.get(path).json, path
    assert_problem(tenant_client.get("/v1/repositories?cursor=bm90LW91cnM"), 422, "validation-error")


def test_an_empty_patch_is_refused_as_documented(tenant_client, admin_client, tenant, make_plan):
    created = tenant_client.post("/v1/repositories", json={"github_repo_id": 7, "owner": "o", "name": "n"}).json
    for client, path in ((tenant_client, f"/v1/repositories/{created['id']}"),
                         (admin_client, f"/v1/admin/plans/{make_plan()}"),
                         (admin_client, f"/v1/admin/tenants/{tenant.slug}")):
        body = assert_problem(client.patch(path, json={}), 422, "validation-error")
        assert "Send at least one of" in body["errors"]["_schema"][0], path


def test_an_unknown_plan_is_422_naming_plan(admin_client, tenant):
    body = assert_problem(admin_client.post("/v1/admin/tenants", json={"slug": "nope_plan", "name": "x",
                                                                       "plan": "no_such_plan"}), 422)
    assert list(body["errors"]) == ["plan"]
    body = assert_problem(admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"plan": "no_such_plan"}), 422)
    assert list(body["errors"]) == ["plan"]


@pytest.mark.parametrize("value", [0, 1, "yes", "true", "false", None, [], {}])
def test_a_boolean_is_a_json_boolean(tenant_client, value):
    body = assert_problem(tenant_client.post("/v1/repositories", json={
        "github_repo_id": 11, "owner": "o", "name": "n", "enabled": value}), 422)
    assert list(body["errors"]) == ["enabled"]
    created = tenant_client.post("/v1/repositories", json={"github_repo_id": 12, "owner": "o", "name": "m"}).json
    body = assert_problem(tenant_client.patch(f"/v1/repositories/{created['id']}", json={"enabled": value}), 422)
    assert list(body["errors"]) == ["enabled"]
    assert tenant_client.get(f"/v1/repositories/{created['id']}").json["enabled"] is True


@pytest.mark.parametrize("value", ["5", 5.0, 1.5, True, False, None])
def test_an_integer_is_a_json_integer(tenant_client, admin_client, value):
    body = assert_problem(tenant_client.post("/v1/repositories", json={
        "github_repo_id": value, "owner": "o", "name": "n"}), 422)
    assert list(body["errors"]) == ["github_repo_id"]
    body = assert_problem(admin_client.post("/v1/admin/plans", json={
        "name": "strict_plan", "max_repositories": 1, "rate_limit_per_minute": None, "monthly_price_cents": value}),
        422)
    assert list(body["errors"]) == ["monthly_price_cents"]


@pytest.mark.parametrize("value", [5, 5.0, True, ["octocat"], {"a": 1}])
def test_a_string_is_a_json_string(tenant_client, value):
    body = assert_problem(tenant_client.post("/v1/repositories", json={
        "github_repo_id": 13, "owner": value, "name": "n"}), 422)
    assert list(body["errors"]) == ["owner"]


@pytest.mark.parametrize("value", ["1", "0", "yes", "True", "on", ""])
def test_a_query_boolean_is_spelled_true_or_false(tenant_client, value):
    assert_problem(tenant_client.get(f"/v1/repositories?enabled={value}"), 422, "validation-error")
    assert tenant_client.get("/v1/repositories?enabled=false").status_code == 200
