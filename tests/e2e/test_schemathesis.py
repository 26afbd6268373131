"""The API against its own OpenAPI document, with schemathesis: generated requests, real credentials.

Every operation of ``/v1/openapi.json`` (loaded from the WSGI app) gets generated
requests, valid and invalid ones (schemathesis' positive and negative modes), sent with
the credentials it needs: the admin token on ``/v1/admin/*``, a tenant admin key on the
tenant API, nothing on the probes and /metrics. Every response must

- not be a 5xx;
- have a documented status, content type, headers and body (the response schemas);
- be a 4xx when the request broke the schema, and be refused without credentials;
- when it is an error, be ``application/problem+json`` with the problem members.

Destructive calls are pointed away from what the run stands on: the tenant whose key
drives the tenant API is never suspended, re-planned or deleted (a sacrificial tenant
takes those calls), its key is never revoked, and the plans other tests rely on are
never changed (a plan made for the test is). Tenants and plans the run creates are
dropped afterwards.

Bounded for CI: a fixed number of examples per operation, derandomized (a fixed seed),
no example database. (pytest 9 cannot run schemathesis' own lazy pytest integration,
so each operation is a parametrized test running a Hypothesis test of its own.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text

from app.testing import ADMIN_TOKEN, drop_tenants

MAX_EXAMPLES = 15
PROBLEM_MEMBERS = {"type", "title", "status", "detail"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]

OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/admin/tenants"),
    ("POST", "/v1/admin/tenants"),
    ("GET", "/v1/admin/tenants/{slug}"),
    ("PATCH", "/v1/admin/tenants/{slug}"),
    ("DELETE", "/v1/admin/tenants/{slug}"),
    ("GET", "/v1/admin/plans"),
    ("POST", "/v1/admin/plans"),
    ("GET", "/v1/admin/plans/{name}"),
    ("PATCH", "/v1/admin/plans/{name}"),
    ("GET", "/v1/admin/migrations"),
    ("GET", "/v1/admin/migrations/{run_id}"),
    ("GET", "/v1/admin/audit-events"),
    ("GET", "/v1/admin/cluster"),
    ("POST", "/v1/admin/tenants/{slug}/move"),
    ("GET", "/v1/tenant"),
    ("GET", "/v1/repositories"),
    ("POST", "/v1/repositories"),
    ("GET", "/v1/repositories/{repository_id}"),
    ("PATCH", "/v1/repositories/{repository_id}"),
    ("DELETE", "/v1/repositories/{repository_id}"),
    ("GET", "/v1/api-keys"),
    ("POST", "/v1/api-keys"),
    ("DELETE", "/v1/api-keys/{key_id}"),
    ("GET", "/v1/audit-events"),
]
#: Operations that change a tenant through the admin API: they get a sacrificial tenant.
ON_A_VICTIM = {("PATCH", "/v1/admin/tenants/{slug}"), ("DELETE", "/v1/admin/tenants/{slug}"),
               ("POST", "/v1/admin/tenants/{slug}/move")}


#: The test sends real credentials itself, so schemathesis generates none (nor drops them as
#: "negative" data, which the real ones would then make valid again).
CONFIG = {"generation": {"with-security-parameters": False}}


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/v1/openapi.json", app, config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture
def world(app, engine, make_tenant, make_plan, request) -> Iterator[dict[str, Any]]:
    """The credentials the run uses, and what it must not destroy; cleaned up afterwards."""
    with engine.connect() as conn:
        plans_before = set(conn.execute(text("SELECT name FROM public.plans")).scalars())
    plan = make_plan()  # unlimited: no quota, no rate limit
    driver = make_tenant(plan=plan)
    victim = make_tenant(plan=plan) if request.node.callspec.params.get("operation") in ON_A_VICTIM else None
    [driver_key] = app.test_client().get("/v1/api-keys", headers=driver.auth).json["items"]
    yield {"driver": driver, "victim": victim, "plan": plan, "protected_plans": plans_before,
           "driver_key_id": driver_key["id"]}
    # Every tenant (the run provisions some), then every plan the run created: other tests list plans.
    drop_tenants(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM public.plans WHERE NOT (name = ANY(:keep))"), {"keep": sorted(plans_before)})


def credentials(path: str, world: dict[str, Any]) -> dict[str, str]:
    if path.startswith("/v1/admin/"):
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if path.startswith("/v1/"):
        return world["driver"].auth
    return {}


def spare_the_fixtures(case, world: dict[str, Any]) -> None:
    """Point destructive calls away from the driver tenant, its key and the plans others use."""
    method, path, params = case.method.upper(), case.path, case.path_parameters or {}
    if (method, path) in ON_A_VICTIM and params.get("slug") == world["driver"].slug:
        params["slug"] = world["victim"].slug
    if (method, path) == ("PATCH", "/v1/admin/plans/{name}") and params.get("name") in world["protected_plans"]:
        params["name"] = world["plan"]
    if (method, path) == ("DELETE", "/v1/api-keys/{key_id}") and params.get("key_id") == world["driver_key_id"]:
        params["key_id"] = 2**40


def test_the_operations_tested_are_every_documented_one(api_schema):
    documented = [(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()]
    assert sorted(documented) == sorted(OPERATIONS)


def test_every_error_response_is_documented_as_a_problem_document(client):
    spec = client.get("/v1/openapi.json").json
    components = spec["components"]["responses"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if status != "default" and int(status) < 400:
                    continue
                if "$ref" in response:
                    response = components[response["$ref"].rsplit("/", 1)[1]]
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)
                schema = response["content"]["application/problem+json"]["schema"]["$ref"]
                assert schema.endswith(("/Problem", "/QuotaProblem")), (method, path, status, schema)
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert spec["paths"][probe]["get"]["security"] == []


@pytest.mark.parametrize("operation", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_keeps_its_documented_contract(api_schema, world, operation):
    method, path = operation
    endpoint = api_schema[path][method]
    cases = st.one_of(endpoint.as_strategy(GenerationMode.POSITIVE), endpoint.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def run(case) -> None:
        spare_the_fixtures(case, world)
        response = case.call_and_validate(headers=credentials(case.path, world), checks=CHECKS)
        if response.status_code >= 400:
            assert response.headers["content-type"][0] == "application/problem+json", response.headers
            body = response.json()
            assert PROBLEM_MEMBERS <= set(body), body
            assert body["status"] == response.status_code

    run()
