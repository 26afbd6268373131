"""GET /v1/tenant: the caller's tenant, its plan's limits and its usage, for any role."""

from __future__ import annotations

import pytest

from app.models.public import Tenant
from app.tenancy import api_keys
from app.testing import assert_problem


def repo(github_repo_id: int) -> dict:
    return {"github_repo_id": github_repo_id, "owner": "octo", "name": f"r{github_repo_id}"}


def test_the_callers_tenant_plan_and_usage(client, make_tenant):
    t = make_tenant("acme_co", name="Acme Co.")
    other = make_tenant("globex")
    for i in range(3):
        assert client.post("/v1/repositories", json=repo(i + 1), headers=other.auth).status_code == 201
    assert client.post("/v1/repositories", json=repo(1), headers=t.auth).status_code == 201
    response = client.get("/v1/tenant", headers=t.auth)
    assert response.status_code == 200
    body = response.json
    requests = body["usage"].pop("api_requests_this_month")  # as flushed: see test_usage.py
    assert requests["limit"] == 10_000 and 0 <= requests["used"] <= 3
    assert body == {
        "slug": "acme_co",
        "name": "Acme Co.",
        "status": "active",
        "plan": {"name": "free", "max_repositories": 5, "rate_limit_per_minute": 60,
                 "max_api_requests_per_month": 10_000, "monthly_price_cents": 0},
        "usage": {"repositories": {"used": 1, "limit": 5}},
    }
    assert client.get("/v1/tenant", headers=other.auth).json["usage"]["repositories"] == {"used": 3, "limit": 5}


def test_usage_follows_creates_deletes_and_plan_changes(client, admin_client, make_plan, make_tenant):
    plan = make_plan(max_repositories=2, rate_limit_per_minute=None, monthly_price_cents=1500)
    t = make_tenant(plan=plan)

    def shown() -> dict:
        body = client.get("/v1/tenant", headers=t.auth).json
        return {"plan": body["plan"], **body["usage"]["repositories"]}

    assert shown() == {"plan": {"name": plan, "max_repositories": 2, "rate_limit_per_minute": None,
                                "max_api_requests_per_month": None, "monthly_price_cents": 1500},
                       "used": 0, "limit": 2}
    created = client.post("/v1/repositories", json=repo(7), headers=t.auth).json
    assert (shown()["used"], shown()["limit"]) == (1, 2)
    admin_client.patch(f"/v1/admin/plans/{plan}", json={"max_repositories": None})
    assert (shown()["used"], shown()["limit"]) == (1, None)
    client.delete(f"/v1/repositories/{created['id']}", headers=t.auth)
    assert (shown()["used"], shown()["limit"]) == (0, None)


@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
def test_every_role_may_read_it(client, tenant, session_factory, role):
    with session_factory() as session:
        issued = api_keys.issue_api_key(session, session.get(Tenant, tenant.tenant_id), role=role)
        session.commit()
    response = client.get("/v1/tenant", headers={"Authorization": f"Bearer {issued.token}"})
    assert response.status_code == 200
    assert response.json["slug"] == tenant.slug


@pytest.mark.parametrize(
    "authorization", [None, "Bearer nonsense", "Bearer tnt_000000000000_wrong", "Bearer test-admin-token"]
)
def test_it_needs_a_tenant_key(client, tenant, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    assert_problem(client.get("/v1/tenant", headers=headers), 401, "unauthorized")


@pytest.mark.parametrize("method", ["post", "patch", "put", "delete"])
def test_it_is_read_only(tenant_client, method):
    assert_problem(getattr(tenant_client, method)("/v1/tenant", json={"name": "x"}), 405, "method-not-allowed")
