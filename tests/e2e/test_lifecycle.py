"""A tenant after onboarding, through the admin API and the CLI: change, suspend, resume, delete."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app.tenancy.locks import LOCK_NAMESPACE


def problem(response, status: int, type_suffix: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert response.json["type"].endswith("/" + type_suffix), response.json
    return response.json


def add_repo(client, tenant, github_repo_id: int, name: str) -> dict[str, Any]:
    response = client.post(
        "/v1/repositories", json={"github_repo_id": github_repo_id, "owner": "octo", "name": name},
        headers=tenant.auth,
    )
    assert response.status_code == 201, response.json
    return response.json


def repo_names(client, tenant) -> list[str]:
    response = client.get("/v1/repositories", headers=tenant.auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [r["name"] for r in response.json["items"]]


def platform_actions(engine: Engine, slug: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT action, actor FROM public.audit_events WHERE tenant_slug = :s ORDER BY id"
        ), {"s": slug})]


def schema_exists(engine: Engine, schema: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :n"), {"n": schema}).scalar())


# --- suspend and resume ---------------------------------------------------------


def test_a_suspended_tenant_gets_403_everywhere_and_resuming_restores_its_untouched_data(
    client, admin_client, make_app, make_tenant, engine
):
    tenant, other = make_tenant(), make_tenant()
    add_repo(client, tenant, 1, "kept")
    second_process = make_app().test_client()  # another server process: no shared memory

    changed = admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"status": "suspended"})
    assert changed.status_code == 200 and changed.json["status"] == "suspended"
    for c in (client, second_process):
        body = problem(c.get("/v1/repositories", headers=tenant.auth), 403, "tenant-suspended")
        assert tenant.slug in body["detail"]
        problem(c.post("/v1/repositories", json={"github_repo_id": 2, "owner": "o", "name": "n"},
                       headers=tenant.auth), 403, "tenant-suspended")
    assert repo_names(client, other) == []  # the others are served as before

    resumed = admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"status": "active"})
    assert resumed.status_code == 200 and resumed.json["status"] == "active"
    assert repo_names(second_process, tenant) == ["kept"]
    assert platform_actions(engine, tenant.slug) == [
        ("tenant.provisioned", "system"), ("tenant.suspended", "admin-api"), ("tenant.resumed", "admin-api"),
    ]


def test_renaming_changes_the_label_never_the_schema_and_plan_changes_are_recorded(admin_client, make_tenant, engine):
    tenant = make_tenant()
    response = admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"name": "Acme Renamed", "plan": "pro"})
    assert response.status_code == 200, response.json
    assert (response.json["name"], response.json["plan"]) == ("Acme Renamed", "pro")
    assert response.json["schema_name"] == tenant.schema_name == f"t_{tenant.slug}"
    assert schema_exists(engine, tenant.schema_name)
    assert admin_client.get(f"/v1/admin/tenants/{tenant.slug}").json["name"] == "Acme Renamed"
    with engine.connect() as conn:
        changes = dict(conn.execute(text(
            "SELECT action, changes FROM public.audit_events WHERE tenant_slug = :s AND action <> 'tenant.provisioned'"
        ), {"s": tenant.slug}).all())
    assert changes == {
        "tenant.renamed": {"before": {"name": tenant.slug}, "after": {"name": "Acme Renamed"}},
        "tenant.plan_changed": {"before": {"plan": "free"}, "after": {"plan": "pro"}},
    }


@pytest.mark.parametrize(("body", "field"), [
    ({"status": "deleted"}, "status"),
    ({"plan": "platinum"}, "plan"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 201}, "name"),
])
def test_invalid_changes_are_422_and_change_nothing(admin_client, make_tenant, engine, body, field):
    tenant = make_tenant()
    response = admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json=body)
    assert problem(response, 422, "validation-error")["errors"].keys() == {field}
    after = admin_client.get(f"/v1/admin/tenants/{tenant.slug}").json
    assert (after["name"], after["plan"], after["status"]) == (tenant.slug, "free", "active")
    assert platform_actions(engine, tenant.slug) == [("tenant.provisioned", "system")]


def test_changing_or_deleting_an_unknown_tenant_is_404_and_tenant_keys_are_refused(admin_client, client, tenant):
    problem(admin_client.patch("/v1/admin/tenants/nobody", json={"status": "suspended"}), 404, "not-found")
    problem(admin_client.delete("/v1/admin/tenants/nobody"), 404, "not-found")
    problem(client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"status": "suspended"}, headers=tenant.auth),
            403, "forbidden")
    problem(client.delete(f"/v1/admin/tenants/{tenant.slug}", headers=tenant.auth), 403, "forbidden")


# --- delete ---------------------------------------------------------------------


def test_delete_stops_the_keys_and_drops_the_schema_with_the_row(client, admin_client, make_tenant, engine):
    doomed, neighbour = make_tenant(), make_tenant()
    add_repo(client, doomed, 1, "gone")
    add_repo(client, neighbour, 1, "stays")

    assert admin_client.delete(f"/v1/admin/tenants/{doomed.slug}").status_code == 204
    problem(client.get("/v1/repositories", headers=doomed.auth), 401, "unauthorized")
    problem(admin_client.get(f"/v1/admin/tenants/{doomed.slug}"), 404, "not-found")
    problem(admin_client.delete(f"/v1/admin/tenants/{doomed.slug}"), 404, "not-found")
    assert not schema_exists(engine, doomed.schema_name)
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT count(*) FROM public.api_keys WHERE tenant_id = :t"),
                            {"t": doomed.tenant_id}).scalar()
    assert keys == 0
    assert repo_names(client, neighbour) == ["stays"]
    assert platform_actions(engine, doomed.slug)[-1] == ("tenant.deleted", "admin-api")


def test_a_tenant_being_migrated_or_provisioned_is_not_deleted_under_it(admin_client, client, make_tenant, engine):
    tenant = make_tenant()
    add_repo(client, tenant, 1, "safe")
    with engine.connect() as holder:  # what provisioning and the fan-out hold on the tenant
        holder.execute(text("SELECT pg_advisory_xact_lock(:ns, hashtext(:slug))"),
                       {"ns": LOCK_NAMESPACE, "slug": tenant.slug})
        body = problem(admin_client.delete(f"/v1/admin/tenants/{tenant.slug}"), 409, "tenant-busy")
        assert "migrated or provisioned" in body["detail"]
        holder.rollback()
    assert schema_exists(engine, tenant.schema_name)
    assert repo_names(client, tenant) == ["safe"]
    assert [a for a, _ in platform_actions(engine, tenant.slug)] == ["tenant.provisioned"]


def test_a_tenant_whose_tables_stay_locked_gets_409_not_a_hang_or_a_500(admin_client, client, make_tenant, engine):
    tenant = make_tenant()
    with engine.connect() as holder:  # a long request of that tenant, mid-transaction
        holder.exec_driver_sql(f'LOCK TABLE "{tenant.schema_name}".repositories IN ACCESS SHARE MODE')
        body = problem(admin_client.delete(f"/v1/admin/tenants/{tenant.slug}"), 409, "tenant-busy")
        assert "in use" in body["detail"]
        holder.rollback()
    assert schema_exists(engine, tenant.schema_name)
    assert repo_names(client, tenant) == []


# --- CLI ------------------------------------------------------------------------


def test_cli_suspend_resume_and_delete_with_confirmation(app, client, make_tenant, engine):
    tenant = make_tenant()
    runner = app.test_cli_runner()

    assert runner.invoke(args=["tenants", "suspend", tenant.slug]).exit_code == 0
    problem(client.get("/v1/repositories", headers=tenant.auth), 403, "tenant-suspended")
    assert runner.invoke(args=["tenants", "resume", tenant.slug]).exit_code == 0
    assert repo_names(client, tenant) == []

    declined = runner.invoke(args=["tenants", "delete", tenant.slug], input="n\n")
    assert declined.exit_code == 1 and "Delete tenant" in declined.output
    assert schema_exists(engine, tenant.schema_name)

    confirmed = runner.invoke(args=["tenants", "delete", tenant.slug], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert not schema_exists(engine, tenant.schema_name)
    problem(client.get("/v1/repositories", headers=tenant.auth), 401, "unauthorized")

    actions = platform_actions(engine, tenant.slug)
    assert [a for a, _ in actions] == ["tenant.provisioned", "tenant.suspended", "tenant.resumed", "tenant.deleted"]
    assert all(actor.startswith("cli:") for _, actor in actions[1:])


def test_cli_errors_are_one_line_and_exit_1(app, make_tenant):
    runner = app.test_cli_runner()
    for args in (["tenants", "suspend", "nobody"], ["tenants", "delete", "nobody", "--yes"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 1 and result.stderr.startswith("error: ") and "nobody" in result.stderr
    tenant = make_tenant()
    result = runner.invoke(args=["tenants", "delete", tenant.slug, "--yes"])
    assert result.exit_code == 0
    listed = json.loads(runner.invoke(args=["tenants", "list", "--json"]).stdout)
    assert tenant.slug not in {t["slug"] for t in listed}
