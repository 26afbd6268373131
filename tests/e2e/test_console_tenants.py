"""What an operator does to a tenant in the console: provision, edit, delete, revoke, export, usage.

Each change is checked where it lands (the admin API, the tenant's own key, the
platform audit log), and each refused form is checked to have changed nothing.
"""

from __future__ import annotations

import gzip
import json
import re

import pytest

from tests.e2e.test_console import csrf_of, post, slug


def provision_form(operator, **form: str):
    page = operator.get("/console/tenants/new")
    assert page.status_code == 200
    return operator.post("/console/tenants/new", data={"csrf_token": csrf_of(page), **form})


def events_of(admin_client, tenant_slug: str, action: str) -> list[dict]:
    body = admin_client.get("/v1/admin/audit-events", query_string={"tenant": tenant_slug, "action": action}).json
    return body["items"]


def test_provisioning_shows_the_first_admin_key_once_and_it_works(operator, admin_client, forget):
    new = slug("prov")
    forget(new)
    done = provision_form(operator, slug=new, name="Provisioned Inc", plan="pro")
    html = done.get_data(as_text=True)
    assert done.status_code == 201, html
    assert done.headers["Cache-Control"] == "no-store"  # the secret never sits in a cache
    token = re.search(r'id="new-key" type="text" readonly value="([^"]+)"', html).group(1)
    assert 'data-copy="new-key"' in html
    tenant = admin_client.get(f"/v1/admin/tenants/{new}").json
    assert tenant["plan"] == "pro" and tenant["name"] == "Provisioned Inc"
    me = operator.application.test_client().get("/v1/tenant", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["slug"] == new
    assert token not in operator.get(f"/console/tenants/{new}").get_data(as_text=True)  # shown once
    [event] = events_of(admin_client, new, "tenant.provisioned")
    assert event["actor"] == "console:alice"


@pytest.mark.parametrize(("form", "field", "words"), [
    ({"slug": "Bad Slug", "name": "x"}, "slug", "slug"),
    ({"slug": "", "name": "x"}, "slug", ""),
    ({"name": "   "}, "name", ""),
    ({"plan": "no_such_plan"}, "plan", "no_such_plan"),
])
def test_a_refused_provisioning_form_shows_the_error_by_its_field_and_creates_nothing(
        operator, admin_client, forget, form, field, words):
    new = slug("bad")
    forget(new)
    data = {"slug": new, "name": "Name", "plan": "free", **form}
    done = provision_form(operator, **data)
    html = done.get_data(as_text=True)
    assert done.status_code == 422, html
    note = re.search(rf'<p class="field-error" id="{field}-note">([^<]+)</p>', html)
    assert note and words in note.group(1), html
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', html, re.DOTALL), html
    if field != "name":
        assert f'value="{data["name"]}"' in html  # what was typed is kept
    assert admin_client.get(f"/v1/admin/tenants/{new}").status_code == 404


def test_a_taken_slug_is_refused_by_its_field(operator, tenant):
    done = provision_form(operator, slug=tenant.slug, name="Again", plan="free")
    assert done.status_code == 422
    assert re.search(r'id="slug-note">[^<]*(exists|taken)', done.get_data(as_text=True))


def test_rename_and_plan_change_go_through_the_core_audited_as_the_operator(operator, tenant, admin_client):
    form = operator.get(f"/console/tenants/{tenant.slug}/edit")
    assert form.status_code == 200
    done = operator.post(f"/console/tenants/{tenant.slug}/edit",
                         data={"csrf_token": csrf_of(form), "name": "Renamed Ltd", "plan": "pro"})
    assert done.status_code == 303 and done.location == f"/console/tenants/{tenant.slug}"
    after = admin_client.get(f"/v1/admin/tenants/{tenant.slug}").json
    assert (after["name"], after["plan"]) == ("Renamed Ltd", "pro")
    assert [e["actor"] for e in events_of(admin_client, tenant.slug, "tenant.plan_changed")] == ["console:alice"]
    assert [e["actor"] for e in events_of(admin_client, tenant.slug, "tenant.renamed")] == ["console:alice"]
    page = operator.get(f"/console/tenants/{tenant.slug}").get_data(as_text=True)
    assert "Renamed Ltd" in page and "Saved" in page


def test_a_refused_edit_changes_nothing(operator, tenant, admin_client):
    before = admin_client.get(f"/v1/admin/tenants/{tenant.slug}").json
    form = operator.get(f"/console/tenants/{tenant.slug}/edit")
    done = operator.post(f"/console/tenants/{tenant.slug}/edit",
                         data={"csrf_token": csrf_of(form), "name": "Half Renamed", "plan": "no_such_plan"})
    assert done.status_code == 422
    assert 'id="plan-note"' in done.get_data(as_text=True)
    after = admin_client.get(f"/v1/admin/tenants/{tenant.slug}").json
    assert (after["name"], after["plan"]) == (before["name"], before["plan"])  # the rename was rolled back too


def test_delete_needs_the_slug_typed_exactly(operator, make_tenant, admin_client):
    doomed = make_tenant(slug("del"))
    confirm = operator.get(f"/console/tenants/{doomed.slug}/delete")
    assert confirm.status_code == 200 and 'for="confirm_slug"' in confirm.get_data(as_text=True)
    for typed in ("", doomed.slug.upper(), doomed.slug[:-1]):
        refused = operator.post(f"/console/tenants/{doomed.slug}/delete",
                                data={"csrf_token": csrf_of(confirm), "confirm_slug": typed})
        assert refused.status_code == 422 and "nothing was deleted" in refused.get_data(as_text=True)
        assert admin_client.get(f"/v1/admin/tenants/{doomed.slug}").status_code == 200
    done = operator.post(f"/console/tenants/{doomed.slug}/delete",
                         data={"csrf_token": csrf_of(confirm), "confirm_slug": doomed.slug})
    assert done.status_code == 303 and done.location == "/console/tenants"
    assert admin_client.get(f"/v1/admin/tenants/{doomed.slug}").status_code == 404
    key = operator.application.test_client().get("/v1/tenant", headers={"Authorization": f"Bearer {doomed.token}"})
    assert key.status_code == 401
    [event] = events_of(admin_client, doomed.slug, "tenant.deleted")
    assert event["actor"] == "console:alice"


def test_revoking_a_key_stops_it_and_never_the_last_admin_key(operator, tenant, admin_client, tenant_client):
    extra = tenant_client.post("/v1/api-keys", json={"role": "admin", "name": "spare"})
    assert extra.status_code == 201, extra.json
    spare_id, spare_token = extra.json["id"], extra.json["token"]
    page = operator.get(f"/console/tenants/{tenant.slug}").get_data(as_text=True)
    assert f'id="revoke-{spare_id}"' in page
    confirm = operator.get(f"/console/tenants/{tenant.slug}/keys/{spare_id}/revoke")
    assert confirm.status_code == 200 and extra.json["prefix"] in confirm.get_data(as_text=True)
    done = post(operator, f"/console/tenants/{tenant.slug}/keys/{spare_id}/revoke")
    assert done.status_code == 303
    gone = operator.application.test_client().get("/v1/tenant", headers={"Authorization": f"Bearer {spare_token}"})
    assert gone.status_code == 401
    [event] = events_of(admin_client, tenant.slug, "api_key.revoked")
    assert event["actor"] == "console:alice"
    assert f'id="revoke-{spare_id}"' not in operator.get(f"/console/tenants/{tenant.slug}").get_data(as_text=True)

    first_id = next(k["id"] for k in tenant_client.get("/v1/api-keys").json["items"] if k["id"] != spare_id)
    last = post(operator, f"/console/tenants/{tenant.slug}/keys/{first_id}/revoke")
    assert last.status_code == 409 and "admin key" in last.get_data(as_text=True)
    assert tenant_client.get("/v1/tenant").status_code == 200  # still works
    assert post(operator, f"/console/tenants/{tenant.slug}/keys/999999999/revoke").status_code == 404


def test_the_tenant_page_shows_usage_against_the_plan(operator, make_plan, make_tenant, admin_client):
    plan = make_plan(max_repositories=2)
    owner = make_tenant(slug("use"), plan=plan)
    client = operator.application.test_client()
    for number, name in enumerate(("one", "two"), 1):
        made = client.post("/v1/repositories", json={"github_repo_id": number, "owner": "acme", "name": name},
                           headers=owner.auth)
        assert made.status_code == 201, made.json
    html = operator.get(f"/console/tenants/{owner.slug}").get_data(as_text=True)
    assert re.search(r'<tr class="at-limit">\s*<th scope="row">repositories</th>\s*'
                     r'<td class="num" id="usage-repositories">2</td>\s*<td class="num">2</td>', html), html


def test_the_tenant_page_lists_its_members_and_no_other_tenants(operator, make_tenant):
    owner = make_tenant(slug("mem"), owner_email="boss@example.com")
    make_tenant(slug("mem"), owner_email="stranger@example.com")
    html = operator.get(f"/console/tenants/{owner.slug}").get_data(as_text=True)
    assert re.search(r"<td>boss@example.com</td>\s*<td>—</td>\s*<td>owner</td>\s*<td>active</td>", html), html
    assert "stranger@example.com" not in html
    assert "No members." in operator.get(f"/console/tenants/{make_tenant(slug('mem')).slug}").get_data(as_text=True)


def test_export_downloads_the_tenants_data_audited_as_the_operator(operator, tenant, admin_client):
    client = operator.application.test_client()
    assert client.post("/v1/repositories", json={"github_repo_id": 7, "owner": "acme", "name": "exported"},
                       headers=tenant.auth).status_code == 201
    done = post(operator, f"/console/tenants/{tenant.slug}/export")
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.headers["Content-Disposition"].startswith(f"attachment; filename={tenant.slug}-")
    lines = gzip.decompress(done.get_data()).decode().splitlines()
    done.close()  # a WSGI server closes the response (and its temporary file) after sending it
    assert json.loads(lines[0])["tenant"]["slug"] == tenant.slug
    assert any('"exported"' in line for line in lines[1:])
    [event] = events_of(admin_client, tenant.slug, "tenant.exported")
    assert event["actor"] == "console:alice"


@pytest.mark.parametrize("path", ["/tenants/new", "/tenants/{slug}/edit", "/tenants/{slug}/delete",
                                  "/tenants/{slug}/export", "/tenants/{slug}/keys/1/revoke"])
def test_every_tenant_action_refuses_a_post_without_the_csrf_token(operator, tenant, admin_client, path):
    before = admin_client.get(f"/v1/admin/tenants/{tenant.slug}").json
    refused = operator.post("/console" + path.format(slug=tenant.slug),
                            data={"slug": slug("csrf"), "name": "X", "plan": "pro", "confirm_slug": tenant.slug})
    assert refused.status_code == 400
    assert admin_client.get(f"/v1/admin/tenants/{tenant.slug}").json == before
    assert events_of(admin_client, tenant.slug, "tenant.exported") == []


def test_the_list_filters_by_revision_and_by_being_behind_the_head(operator, make_tenant, engine):
    from sqlalchemy import text

    stem = slug("rev")
    current, stale = make_tenant(f"{stem}_a"), make_tenant(f"{stem}_b")
    with engine.begin() as conn:  # the ledger records an older revision for one of them
        conn.execute(text("UPDATE public.tenants SET schema_revision = 'older' WHERE slug = :s"), {"s": stale.slug})

    def listed(**query: str) -> set[str]:
        html = operator.get("/console/tenants", query_string={"q": stem, **query}).get_data(as_text=True)
        return {s for s in (current.slug, stale.slug) if f'href="/console/tenants/{s}"' in html}

    assert listed() == {current.slug, stale.slug}
    assert listed(behind="yes") == {stale.slug}
    assert listed(behind="no") == {current.slug}
    assert listed(revision="older") == {stale.slug}
    assert operator.get("/console/tenants", query_string={"behind": "maybe"}).status_code == 400
    assert operator.get("/console/tenants", query_string={"revision": "x" * 65}).status_code == 400
    overview = operator.get("/console/").get_data(as_text=True)
    assert 'href="/console/tenants?behind=yes"' in overview
