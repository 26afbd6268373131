"""The tenant list, a tenant's page, and what an operator does to a tenant.

Every change goes through the function the admin API (or the CLI) calls for it, so
the lock, the rule and the platform audit event are theirs: provisioning
(:func:`~app.tenancy.provisioning.provision_tenant`), rename, plan change, suspend and
resume (:func:`~app.tenancy.lifecycle.update_tenant`), deletion
(:func:`~app.tenancy.lifecycle.delete_tenant`), key revocation
(:func:`~app.services.api_keys.revoke_for_operator`) and export
(:func:`~app.tenancy.portability.export_tenant`). Form input is checked by the admin
API's own schemas first, so a form refuses what the API refuses, with the same words,
next to the field.
"""

from __future__ import annotations

import tempfile

from flask import current_app, flash, redirect, render_template, request, send_file, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest

from app import metrics
from app.extensions import db, tenant_roles_active
from app.models.public import TENANT_STATUSES, Tenant
from app.schemas.tenants import TenantCreateSchema, TenantUpdateSchema
from app.services import api_keys as operator_keys
from app.services import members, plans, quotas
from app.tenancy import api_keys, audit, directory, lifecycle, portability
from app.tenancy.binding import tenant_scope
from app.tenancy.context import TenantBinding
from app.tenancy.errors import InvalidSlug, TenantAlreadyExists, UnknownPlan
from app.tenancy.migrations import head_revision
from app.tenancy.provisioning import provision_tenant

from . import forms
from .blueprint import bp

PAGE_SIZE = 50
#: Longest search prefix accepted (tenant names are at most 200 characters).
SEARCH_MAX = 200
#: Longest revision filter accepted (as the admin API's ``revision``).
REVISION_MAX = 64
#: Keys listed on a tenant's page (a tenant rarely has more; the page says when it does).
KEYS_SHOWN = 100
#: Members on a tenant's page (the rest: ``flask tenants members`` or the admin API).
MEMBERS_SHOWN = 100


#: The behind-head filter's choices: only tenants behind the tenant head, or only those at it.
BEHIND = {"yes": True, "no": False}


@bp.get("/tenants")
def tenants() -> ResponseReturnValue:
    session = db.session()
    search = request.args.get("q", "").strip()
    status = request.args.get("status") or None
    plan = request.args.get("plan") or None
    revision = request.args.get("revision", "").strip() or None
    behind = request.args.get("behind") or None
    if len(search) > SEARCH_MAX:
        raise BadRequest(f"Search for at most {SEARCH_MAX} characters.")
    if status is not None and status not in TENANT_STATUSES:
        raise BadRequest(f"Status is one of {', '.join(TENANT_STATUSES)}.")
    if revision is not None and len(revision) > REVISION_MAX:
        raise BadRequest(f"A revision has at most {REVISION_MAX} characters.")
    if behind is not None and behind not in BEHIND:
        raise BadRequest("Behind the head is yes or no.")
    head = head_revision(current_app.config["TENANT_MIGRATIONS_LOCATION"])
    page = directory.list_tenants(
        session, limit=PAGE_SIZE, cursor=request.args.get("cursor") or None, prefix=search or None,
        status=status, plan=plan, revision=revision,
        behind_of=head if behind is not None else None, behind=BEHIND.get(behind or "yes", True),
    )
    filters = {"q": search or None, "status": status, "plan": plan, "revision": revision, "behind": behind}
    return render_template("console/tenants.html", page=page, filters=filters, search=search, status=status,
                           plan=plan, revision=revision, behind=behind, head=head,
                           statuses=TENANT_STATUSES, plans=_plan_names())


@bp.route("/tenants/new", methods=["GET", "POST"])
def provision() -> ResponseReturnValue:
    """The provisioning form; on success the first admin key, shown this once (never stored)."""
    form = {"slug": "", "name": "", "plan": "free"}
    if request.method == "GET":
        return render_template("console/provision.html", form=form, errors={}, plans=_plan_names())
    form.update({name: request.form.get(name, "").strip() for name in form})
    body, errors = forms.load_form(TenantCreateSchema(exclude=("node",)), form)
    if not errors:
        try:
            with metrics.observe_provisioning():
                provisioned = provision_tenant(
                    db.session(), **body, migrations_location=current_app.config["TENANT_MIGRATIONS_LOCATION"],
                    tenant_role=tenant_roles_active(),
                )
        except (InvalidSlug, TenantAlreadyExists) as exc:
            errors = {"slug": str(exc)}
        except UnknownPlan as exc:
            errors = {"plan": str(exc)}
        else:
            return render_template("console/provisioned.html", tenant=provisioned.tenant,
                                   key=provisioned.admin_key), 201
    return render_template("console/provision.html", form=form, errors=errors, plans=_plan_names()), 422


@bp.get("/tenants/<slug>")
def tenant(slug: str) -> ResponseReturnValue:
    session = db.session()
    found = directory.get_tenant(session, slug)
    keys = api_keys.list_api_keys(session, found.id, limit=KEYS_SHOWN)
    events = audit.list_events(session, platform=True, tenant=slug, limit=20).items
    people = members.list_for_operator(session, found, limit=MEMBERS_SHOWN)
    return render_template("console/tenant.html", tenant=found, keys=keys, events=events, usage=_usage(found),
                           members=people)


@bp.route("/tenants/<slug>/edit", methods=["GET", "POST"])
def edit(slug: str) -> ResponseReturnValue:
    """Rename a tenant and/or move it to another plan (its schema keeps its name)."""
    session = db.session()
    found = directory.get_tenant(session, slug)
    form = {"name": found.name, "plan": found.plan.name}
    if request.method == "GET":
        return render_template("console/edit.html", tenant=found, form=form, errors={}, plans=_plan_names())
    form.update({name: request.form.get(name, "").strip() for name in form})
    changes, errors = forms.load_form(TenantUpdateSchema(only=("name", "plan")), form)
    if not errors:
        try:
            lifecycle.update_tenant(session, slug, **changes)
        except UnknownPlan as exc:
            errors = {"plan": str(exc)}
        else:
            flash(f"Saved {slug}.")
            return redirect(url_for(".tenant", slug=slug), 303)
    session.rollback()  # the page below reads the tenant as it still is
    found = directory.get_tenant(session, slug)
    return render_template("console/edit.html", tenant=found, form=form, errors=errors, plans=_plan_names()), 422


#: The status each action sets, and how the confirmation page words it.
ACTIONS = {"suspend": ("suspended", "Suspend"), "resume": ("active", "Resume")}


@bp.get("/tenants/<slug>/<any(suspend, resume):action>")
def confirm_status(slug: str, action: str) -> ResponseReturnValue:
    """The confirmation page: the change is made only by its POST form (CSRF-protected)."""
    found = directory.get_tenant(db.session(), slug)
    return render_template("console/confirm_status.html", tenant=found, action=action, verb=ACTIONS[action][1])


@bp.post("/tenants/<slug>/<any(suspend, resume):action>")
def change_status(slug: str, action: str) -> ResponseReturnValue:
    status, verb = ACTIONS[action]
    lifecycle.update_tenant(db.session(), slug, status=status)
    flash(f"{verb}d {slug}." if verb.endswith("e") else f"{verb}ed {slug}.")
    return redirect(url_for(".tenant", slug=slug), 303)


@bp.route("/tenants/<slug>/delete", methods=["GET", "POST"])
def delete(slug: str) -> ResponseReturnValue:
    """Delete a tenant once the operator has typed its slug: the schema and its data are gone for good."""
    session = db.session()
    found = directory.get_tenant(session, slug)
    if request.method == "GET":
        return render_template("console/delete.html", tenant=found, error=None)
    if request.form.get("confirm_slug", "").strip() != slug:
        return render_template("console/delete.html", tenant=found,
                               error=f"Type {slug} exactly to confirm; nothing was deleted."), 422
    lifecycle.delete_tenant(session, slug)
    flash(f"Deleted {slug}: its schema, its data and its keys.")
    return redirect(url_for(".tenants"), 303)


@bp.route("/tenants/<slug>/keys/<int:key_id>/revoke", methods=["GET", "POST"])
def revoke_key(slug: str, key_id: int) -> ResponseReturnValue:
    """Revoke one of the tenant's API keys, after a confirmation page (never its last admin key)."""
    session = db.session()
    found = directory.get_tenant(session, slug)
    if request.method == "GET":
        key = api_keys.get_api_key(session, found.id, key_id)
        return render_template("console/revoke_key.html", tenant=found, key=key)
    key = operator_keys.revoke_for_operator(session, slug, key_id)
    flash(f"Revoked key {key.prefix} of {slug}.")
    return redirect(url_for(".tenant", slug=slug), 303)


@bp.post("/tenants/<slug>/export")
def export(slug: str) -> ResponseReturnValue:
    """The tenant's data as a download (the format of ``flask tenants export``), audited as an export.

    Written to a temporary file first: a failed export is an error page, never half a file.
    """
    directory.get_tenant(db.session(), slug)
    db.session.remove()  # the export runs on a connection of its own
    spool = tempfile.TemporaryFile()
    try:
        result = portability.export_tenant(db.engine, slug, spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    name = f"{slug}-{result.schema_revision}-{result.exported_at.strftime('%Y%m%dT%H%M%SZ')}.jsonl.gz"
    return send_file(spool, mimetype="application/gzip", as_attachment=True, download_name=name)


def _plan_names() -> list[str]:
    return [p.name for p in plans.list_plans(db.session())]


def _usage(tenant: Tenant) -> dict[str, quotas.Usage]:
    """The tenant's quotas, counted in its own schema (one transaction serves one tenant: this request's)."""
    binding = TenantBinding.for_slug(tenant.id, tenant.slug, tenant.db_role)
    session = db.session()
    with tenant_scope(binding, session):
        return quotas.usage(session)
