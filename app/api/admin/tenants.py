"""/v1/admin/tenants: provision, look up, change, suspend, resume and delete tenants; sync from GitHub."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import current_app
from flask.views import MethodView

from app import metrics
from app.api.blueprints import AdminBlueprint
from app.extensions import db, tenant_roles_active
from app.schemas.common import PageQuerySchema
from app.schemas.github import SyncReportSchema
from app.schemas.members import MemberPageSchema
from app.schemas.tenants import (
    TenantCreatedSchema,
    TenantCreateSchema,
    TenantDetailSchema,
    TenantPageSchema,
    TenantQuerySchema,
    TenantSchema,
    TenantUpdateSchema,
)
from app.services import github, github_sync, members
from app.tenancy import cluster, directory, lifecycle, placement, usage
from app.tenancy.migrations import head_revision
from app.tenancy.provisioning import provision_tenant

blp = AdminBlueprint(
    "admin_tenants", __name__, url_prefix="/v1/admin/tenants",
    description="Platform operations on tenants (admin token).",
)


@blp.route("")
class Tenants(MethodView):
    @blp.doc(operationId="listTenants")
    @blp.arguments(TenantQuerySchema, location="query")
    @blp.response(200, TenantPageSchema)
    def get(self, query: dict[str, Any]):
        """List tenants, ordered by slug; optionally only those at a revision, or behind head."""
        behind = query.pop("behind", None)
        if behind is not None:
            query["behind_of"] = head_revision(current_app.config["TENANT_MIGRATIONS_LOCATION"])
            query["behind"] = behind
        return directory.list_tenants(db.session(), **query)

    @blp.doc(operationId="createTenant")
    @blp.arguments(TenantCreateSchema)
    @blp.response(201, TenantCreatedSchema)
    @blp.alt_response(409, description="The slug is taken, or the requested node cannot take the tenant.")
    def post(self, body: dict[str, Any]):
        """Provision a tenant: row, schema, migrations, first admin key (and first owner) in one transaction.

        The response carries the API key's secret; it is shown this once.
        """
        location = current_app.config["TENANT_MIGRATIONS_LOCATION"]
        node = body.pop("node", None)
        if node is not None:
            placement.check_target(db.engine, node)  # refused before anything is created
        with metrics.observe_provisioning():
            provisioned = provision_tenant(
                db.session(), **body, migrations_location=location, tenant_role=tenant_roles_active()
            )
        created: dict[str, Any] = {"tenant": provisioned.tenant, "admin_key": provisioned.admin_key,
                                   "owner": provisioned.owner, "node": None, "placement_error": None}
        if node is not None:
            db.session.remove()  # the move runs on connections of its own
            placed = placement.place_new_tenant(db.engine, provisioned.tenant.slug, node)
            created["node"] = placed.node
            created["placement_error"] = placed.error
        elif cluster.citus_of(db.engine) is not None:
            created["node"] = cluster.address_of(db.session().connection(), provisioned.tenant.schema_name)
        return created


@blp.route("/<slug>")
class TenantBySlug(MethodView):
    @blp.doc(operationId="getTenant")
    @blp.response(200, TenantDetailSchema)
    def get(self, slug: str):
        """One tenant (on Citus, with the node holding its schema; with its GitHub installation, if any; its usage
        this month)."""
        session = db.session()
        tenant = directory.get_tenant(session, slug)
        node = None
        if cluster.citus_of(db.engine) is not None:
            node = cluster.address_of(session.connection(), tenant.schema_name)
        period = usage.period_or_current(None)
        [this_month] = usage.history(session.connection(), tenant.id, period, period)
        return {"node": node, **{name: getattr(tenant, name) for name in TenantSchema().fields if name != "plan"},
                "plan_name": tenant.plan_name, "github": github.installation_of_tenant(session, tenant.id),
                "usage": {"period": usage.format_period(period), "metrics": this_month.metrics}}

    @blp.doc(operationId="updateTenant")
    @blp.arguments(TenantUpdateSchema)
    @blp.response(200, TenantSchema)
    def patch(self, body: dict[str, Any], slug: str):
        """Change the display name, the plan and/or the status (``active`` or ``suspended``).

        Suspension takes effect for the tenant's next request, in every server process;
        the data stays as it is. The schema name never changes.
        """
        return lifecycle.update_tenant(db.session(), slug, **body)

    @blp.doc(operationId="deleteTenant")
    @blp.response(204)
    @blp.alt_response(409, description="The tenant is being migrated or provisioned, or its tables are in use.")
    def delete(self, slug: str):
        """Delete the tenant: its keys stop working and its schema is dropped, in one transaction."""
        lifecycle.delete_tenant(db.session(), slug)


@blp.route("/<slug>/members")
class TenantMembers(MethodView):
    @blp.doc(operationId="listTenantMembers")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, MemberPageSchema)
    def get(self, query: dict[str, Any], slug: str):
        """A tenant's members (people), in id order, as its own ``GET /v1/members`` lists them.

        Read-only: members are the tenant's to manage. Invitation tokens are never shown.
        """
        session = db.session()
        return members.list_for_operator(session, directory.get_tenant(session, slug), **query)


#: Longest rate-limit wait a sync started over HTTP accepts: the request holds a thread meanwhile.
HTTP_SYNC_MAX_WAIT = 30


@blp.route("/<slug>/github-sync")
class TenantGithubSync(MethodView):
    @blp.doc(operationId="syncTenantFromGithub")
    @blp.response(200, SyncReportSchema)
    @blp.alt_response(409, description="The tenant is not linked to a GitHub App installation (or was uninstalled), "
                                       "or GITHUB_APP_ID / GITHUB_PRIVATE_KEY are not configured.")
    def post(self, slug: str):
        """Reconcile the tenant's repositories with its GitHub App installation's repository list.

        As `flask tenants github-sync --tenant SLUG`: registers, updates and deactivates rows
        in one transaction. GitHub's refusals end up in `errors` (nothing changed then); a
        rate limit is waited out for up to 30 seconds (GITHUB_RATE_LIMIT_MAX_WAIT if lower).
        """
        github_sync.installation_of(db.session(), slug)  # 404 / 409 first, whatever the settings
        credentials = github_sync.AppCredentials.from_config(current_app.config)
        credentials = dataclasses.replace(credentials, max_wait=min(credentials.max_wait, HTTP_SYNC_MAX_WAIT))
        return github_sync.sync_tenant(db.session(), slug, credentials)
