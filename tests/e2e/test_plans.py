"""The plans admin API, through HTTP: list, create, change; 404, 409, 422; audited in the same transaction."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import text

from app.testing import assert_problem


def unique_name() -> str:
    return f"p_{uuid.uuid4().hex[:12]}"


def new_plan(name: str, **overrides) -> dict:
    return {"name": name, "max_repositories": 10, "rate_limit_per_minute": 100,
            "monthly_price_cents": 900, **overrides}


def plan_events(engine, name: str) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT actor, action, resource, resource_id, request_id, tenant_slug, changes"
            " FROM public.audit_events WHERE resource = 'plan' AND resource_id = :name ORDER BY id"
        ), {"name": name}).mappings().all()
    return [dict(r) for r in rows]


def test_the_seeded_plans_are_listed_cheapest_first(admin_client):
    response = admin_client.get("/v1/admin/plans")
    assert response.status_code == 200
    items = response.json["items"]
    by_name = {p["name"]: p for p in items}
    assert {k: by_name["free"][k] for k in ("max_repositories", "rate_limit_per_minute", "monthly_price_cents")} \
        == {"max_repositories": 5, "rate_limit_per_minute": 60, "monthly_price_cents": 0}
    assert (by_name["pro"]["max_repositories"], by_name["pro"]["rate_limit_per_minute"]) == (50, 600)
    assert (by_name["enterprise"]["max_repositories"], by_name["enterprise"]["rate_limit_per_minute"]) == (None, None)
    prices = [p["monthly_price_cents"] for p in items]
    assert prices == sorted(prices)


def test_create_a_plan_and_it_is_audited_in_the_same_transaction(admin_client, engine):
    name = unique_name()
    response = admin_client.post("/v1/admin/plans", json=new_plan(name), headers={"X-Request-ID": "req-plan-1"})
    assert response.status_code == 201, response.json
    assert {k: response.json[k] for k in ("name", "max_repositories", "rate_limit_per_minute",
                                          "monthly_price_cents")} == new_plan(name)
    assert "created_at" in response.json
    assert admin_client.get(f"/v1/admin/plans/{name}").json == response.json
    assert name in [p["name"] for p in admin_client.get("/v1/admin/plans").json["items"]]
    [event] = plan_events(engine, name)
    assert event == {
        "actor": "admin-api", "action": "plan.created", "resource": "plan", "resource_id": name,
        "request_id": "req-plan-1", "tenant_slug": None,
        "changes": {"before": None, "after": new_plan(name)},
    }


def test_null_limits_mean_unlimited_and_a_new_plan_can_be_given_to_a_tenant(admin_client):
    name = unique_name()
    body = new_plan(name, max_repositories=None, rate_limit_per_minute=None, monthly_price_cents=0)
    created = admin_client.post("/v1/admin/plans", json=body)
    assert created.status_code == 201
    assert (created.json["max_repositories"], created.json["rate_limit_per_minute"]) == (None, None)
    tenant = admin_client.post("/v1/admin/tenants", json={"slug": "on_new_plan", "name": "N", "plan": name})
    assert tenant.status_code == 201, tenant.json
    assert tenant.json["tenant"]["plan"] == name


def test_a_duplicate_name_is_409_and_leaves_no_event(admin_client, engine):
    name = unique_name()
    assert admin_client.post("/v1/admin/plans", json=new_plan(name)).status_code == 201
    again = admin_client.post("/v1/admin/plans", json=new_plan(name, monthly_price_cents=1))
    problem = assert_problem(again, 409, "conflict")
    assert list(problem["errors"]) == ["name"]
    assert admin_client.get(f"/v1/admin/plans/{name}").json["monthly_price_cents"] == 900
    assert [e["action"] for e in plan_events(engine, name)] == ["plan.created"]


def test_a_seeded_name_is_409(admin_client):
    assert_problem(admin_client.post("/v1/admin/plans", json=new_plan("free")), 409, "conflict")


def test_concurrent_creates_of_one_name_give_one_201(app, engine):
    name = unique_name()
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def attempt(price: int) -> None:
        c = app.test_client()
        barrier.wait()
        r = c.post("/v1/admin/plans", json=new_plan(name, monthly_price_cents=price),
                   headers={"Authorization": "Bearer test-admin-token"})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 409, 409, 409, 409, 409]
    assert len(plan_events(engine, name)) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_repositories": -1}, "max_repositories"),
        ({"max_repositories": "5"}, "max_repositories"),
        ({"max_repositories": 1.5}, "max_repositories"),
        ({"max_repositories": 2**31}, "max_repositories"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"rate_limit_per_minute": -5}, "rate_limit_per_minute"),
        ({"monthly_price_cents": -1}, "monthly_price_cents"),
        ({"monthly_price_cents": None}, "monthly_price_cents"),
        ({"name": "Has Spaces"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 41}, "name"),
        ({"name": None}, "name"),
        ({"tenants": 3}, "tenants"),
    ],
)
def test_invalid_plans_are_422_and_nothing_is_created(admin_client, engine, overrides, field):
    name = unique_name()
    body = {**new_plan(name), **overrides}
    plans_before = admin_client.get("/v1/admin/plans").json["items"]
    problem = assert_problem(admin_client.post("/v1/admin/plans", json=body), 422, "validation-error")
    assert list(problem["errors"]) == [field]
    assert admin_client.get("/v1/admin/plans").json["items"] == plans_before
    assert plan_events(engine, body["name"] or "") == []


@pytest.mark.parametrize("missing", ["name", "max_repositories", "rate_limit_per_minute", "monthly_price_cents"])
def test_every_field_is_required_on_create(admin_client, missing):
    body = new_plan(unique_name())
    del body[missing]
    problem = assert_problem(admin_client.post("/v1/admin/plans", json=body), 422, "validation-error")
    assert list(problem["errors"]) == [missing]


def test_patch_changes_limits_and_records_before_and_after(admin_client, engine):
    name = unique_name()
    admin_client.post("/v1/admin/plans", json=new_plan(name))
    response = admin_client.patch(f"/v1/admin/plans/{name}", json={"max_repositories": 3,
                                                                  "rate_limit_per_minute": None})
    assert response.status_code == 200, response.json
    assert (response.json["max_repositories"], response.json["rate_limit_per_minute"],
            response.json["monthly_price_cents"]) == (3, None, 900)
    assert admin_client.get(f"/v1/admin/plans/{name}").json == response.json
    created, updated = plan_events(engine, name)
    assert (updated["action"], updated["actor"]) == ("plan.updated", "admin-api")
    assert updated["changes"] == {
        "before": {"max_repositories": 10, "rate_limit_per_minute": 100},
        "after": {"max_repositories": 3, "rate_limit_per_minute": None},
    }


def test_a_patch_that_changes_nothing_records_nothing(admin_client, engine):
    name = unique_name()
    admin_client.post("/v1/admin/plans", json=new_plan(name))
    assert admin_client.patch(f"/v1/admin/plans/{name}", json={"monthly_price_cents": 900}).status_code == 200
    assert [e["action"] for e in plan_events(engine, name)] == ["plan.created"]


def test_patching_an_unknown_plan_is_404(admin_client):
    assert_problem(admin_client.patch("/v1/admin/plans/nosuchplan", json={"max_repositories": 1}), 404, "not-found")
    assert_problem(admin_client.get("/v1/admin/plans/nosuchplan"), 404, "not-found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "_schema"),
        ({"max_repositories": -1}, "max_repositories"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"monthly_price_cents": -100}, "monthly_price_cents"),
        ({"monthly_price_cents": None}, "monthly_price_cents"),
        ({"name": "renamed"}, "name"),
    ],
)
def test_invalid_patches_are_422_and_change_nothing(admin_client, engine, body, field):
    name = unique_name()
    before = admin_client.post("/v1/admin/plans", json=new_plan(name)).json
    problem = assert_problem(admin_client.patch(f"/v1/admin/plans/{name}", json=body), 422, "validation-error")
    assert list(problem["errors"]) == [field]
    assert admin_client.get(f"/v1/admin/plans/{name}").json == before
    assert [e["action"] for e in plan_events(engine, name)] == ["plan.created"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("get", "/v1/admin/plans", None), ("post", "/v1/admin/plans", {"name": "sneaky"}),
     ("get", "/v1/admin/plans/free", None), ("patch", "/v1/admin/plans/free", {"max_repositories": 1000})],
)
def test_plans_need_the_admin_token(client, admin_client, tenant, method, path, body):
    call = getattr(client, method)
    kwargs = {"json": body} if body else {}
    assert_problem(call(path, **kwargs), 401, "unauthorized")
    assert_problem(call(path, headers={"Authorization": "Bearer wrong"}, **kwargs), 401, "unauthorized")
    assert_problem(call(path, headers=tenant.auth, **kwargs), 403, "forbidden")
    assert admin_client.get("/v1/admin/plans/free").json["max_repositories"] == 5
    assert_problem(admin_client.get("/v1/admin/plans/sneaky"), 404)
