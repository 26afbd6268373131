"""The tenant-isolation gate, through HTTP, with two tenants A and B."""

from __future__ import annotations

import pytest


def create(client, tenant, github_repo_id: int, name: str, **extra) -> dict:
    body = {"github_repo_id": github_repo_id, "owner": "octo", "name": name, **extra}
    response = client.post("/v1/repositories", json=body, headers=tenant.auth)
    assert response.status_code == 201, response.json
    return response.json


def names(client, tenant, query: str = "") -> list[str]:
    response = client.get(f"/v1/repositories{query}", headers=tenant.auth)
    assert response.status_code == 200, response.json
    return [r["name"] for r in response.json["items"]]


@pytest.fixture
def a_and_b(make_tenant):
    return make_tenant("tenant_a"), make_tenant("tenant_b")


def test_each_tenant_sees_only_its_own_repositories(client, a_and_b, make_tenant):
    a, b = a_and_b
    a1 = create(client, a, 1001, "a-one")
    create(client, a, 1002, "a-two", enabled=False)
    b1 = create(client, b, 2001, "b-one")
    # No tenant field anywhere in the request: the key decides where the row lands.
    assert a1["id"] == b1["id"] == 1  # ids collide across schemas
    assert names(client, a) == ["a-one", "a-two"]
    assert names(client, b) == ["b-one"]
    assert names(client, a, "?enabled=false") == ["a-two"]
    empty = make_tenant("tenant_c")
    assert names(client, empty) == []


def test_the_same_github_repo_may_live_in_two_tenants_but_not_twice_in_one(client, a_and_b):
    a, b = a_and_b
    create(client, a, 42, "shared")
    create(client, b, 42, "shared")
    again = client.post("/v1/repositories", json={"github_repo_id": 42, "owner": "o", "name": "x"},
                        headers=a.auth)
    assert again.status_code == 409
    assert again.json["errors"] == {"github_repo_id": [again.json["detail"]]}


def test_colliding_ids_resolve_to_the_callers_row(client, a_and_b):
    a, b = a_and_b
    create(client, a, 1, "mine-a")
    create(client, b, 2, "mine-b")
    assert client.get("/v1/repositories/1", headers=a.auth).json["name"] == "mine-a"
    assert client.get("/v1/repositories/1", headers=b.auth).json["name"] == "mine-b"


def test_a_tenant_updates_and_deletes_its_own(client, a_and_b):
    a, _ = a_and_b
    repo = create(client, a, 5, "before")
    patched = client.patch(f"/v1/repositories/{repo['id']}", json={"name": "after", "enabled": False},
                           headers=a.auth)
    assert patched.status_code == 200
    assert (patched.json["name"], patched.json["full_name"], patched.json["enabled"]) == (
        "after", "octo/after", False)
    assert patched.json["updated_at"] >= repo["updated_at"]
    assert client.delete(f"/v1/repositories/{repo['id']}", headers=a.auth).status_code == 204
    assert names(client, a) == []


@pytest.mark.parametrize(
    ("method", "body"),
    [("get", None), ("patch", {"name": "hijacked"}), ("delete", None)],
)
def test_another_tenants_repository_does_not_exist_from_here(client, a_and_b, method, body):
    a, b = a_and_b
    create(client, a, 1, "a-only")
    b_rows = [create(client, b, 10 + i, f"b-{i}") for i in range(3)]  # ids 1, 2, 3 in B
    for victim in b_rows[1:]:  # ids 2 and 3 exist in B's schema only
        kwargs = {"json": body} if body else {}
        response = getattr(client, method)(f"/v1/repositories/{victim['id']}", headers=a.auth, **kwargs)
        assert response.status_code == 404, (victim, response.json)
        assert response.content_type == "application/problem+json"
    for victim in b_rows:
        assert client.get(f"/v1/repositories/{victim['id']}", headers=b.auth).json == victim
    assert names(client, a) == ["a-only"]


def test_pagination_is_stable_and_complete(client, make_tenant):
    t = make_tenant("pager", plan="pro")  # 7 repositories: more than the free plan's 5
    for i in range(7):
        create(client, t, 100 + i, f"r{i}")
    seen, cursor = [], None
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/repositories{query}", headers=t.auth).json
        seen += [r["name"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"r{i}" for i in range(7)]
