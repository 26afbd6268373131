"""Serving more tenants grows nothing in the process: one engine, one MetaData, one set of
mapped classes and one compiled statement per query, whatever the tenant (issue 6).

Tenant tables carry no schema (the search_path picks it per transaction), so SQLAlchemy
compiles ``SELECT ... FROM repositories`` once and every tenant reuses it. A design that
put the schema into the statement (``schema_translate_map``, a table per tenant) would
compile per tenant and fail here.
"""

from __future__ import annotations

from app.extensions import db
from app.models.public import PublicBase
from app.models.tenant import TenantBase


def _serve(client, tenant, n: int) -> None:
    created = client.post("/v1/repositories", headers=tenant.auth, json={
        "github_repo_id": 7_000_000 + n, "owner": "octo", "name": f"r{n}"})
    assert created.status_code == 201, created.get_json()
    repo_id = created.get_json()["id"]
    assert client.get("/v1/repositories", headers=tenant.auth).status_code == 200
    assert client.get(f"/v1/repositories/{repo_id}", headers=tenant.auth).status_code == 200
    assert client.patch(f"/v1/repositories/{repo_id}", headers=tenant.auth, json={"enabled": False}).status_code == 200


def test_more_tenants_compile_nothing_new_and_build_nothing_per_tenant(app, client, make_tenant):
    first, *others = [make_tenant() for _ in range(6)]
    with app.app_context():
        engine = db.engine
    _serve(client, first, 0)  # warm: every statement these routes use is compiled once
    _serve(client, first, 1)
    cache = engine._compiled_cache  # SQLAlchemy's per-engine LRU of compiled statements
    compiled = set(cache.keys())
    assert len(compiled) >= 5  # the cache is in use: inserts, selects, updates of these routes
    tables = (len(PublicBase.metadata.tables), len(TenantBase.metadata.tables))
    mappers = (len(PublicBase.registry.mappers), len(TenantBase.registry.mappers))

    for n, tenant in enumerate(others, start=2):
        _serve(client, tenant, n)

    assert set(cache.keys()) == compiled, "a tenant compiled statements of its own"
    assert (len(PublicBase.metadata.tables), len(TenantBase.metadata.tables)) == tables
    assert (len(PublicBase.registry.mappers), len(TenantBase.registry.mappers)) == mappers
    with app.app_context():
        assert db.engine is engine  # one engine (and pool) for every tenant
