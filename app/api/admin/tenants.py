"""/v1/admin/tenants: provision and look up tenants."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from app.api.auth import require_admin
from app.extensions import db
from app.schemas.tenants import (
    TenantCreatedSchema,
    TenantCreateSchema,
    TenantPageSchema,
    TenantQuerySchema,
    TenantSchema,
)
from app.tenancy import directory
from app.tenancy.migrations import head_revision
from app.tenancy.provisioning import provision_tenant

blp = Blueprint(
    "admin_tenants", __name__, url_prefix="/v1/admin/tenants",
    description="Platform operations on tenants (admin token).",
)
blp.before_request(require_admin)


@blp.route("")
class Tenants(MethodView):
    @blp.arguments(TenantQuerySchema, location="query")
    @blp.response(200, TenantPageSchema)
    def get(self, query: dict[str, Any]):
        """List tenants, ordered by slug; optionally only those at a revision, or behind head."""
        behind = query.pop("behind", None)
        if behind is not None:
            query["behind_of"] = head_revision(current_app.config["TENANT_MIGRATIONS_LOCATION"])
            query["behind"] = behind
        return directory.list_tenants(db.session(), **query)

    @blp.arguments(TenantCreateSchema)
    @blp.response(201, TenantCreatedSchema)
    @blp.alt_response(409, description="The slug is taken.")
    def post(self, body: dict[str, Any]):
        """Provision a tenant: row, schema, migrations and first admin key in one transaction.

        The response carries the API key's secret; it is shown this once.
        """
        location = current_app.config["TENANT_MIGRATIONS_LOCATION"]
        return provision_tenant(db.session(), **body, migrations_location=location)


@blp.route("/<slug>")
class TenantBySlug(MethodView):
    @blp.response(200, TenantSchema)
    def get(self, slug: str):
        """One tenant."""
        return directory.get_tenant(db.session(), slug)
