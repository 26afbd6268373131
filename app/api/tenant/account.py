"""/v1/tenant: the tenant the API key belongs to, its plan's limits and its usage."""

from __future__ import annotations

from flask.views import MethodView

from app.api.blueprints import TenantBlueprint
from app.extensions import db
from app.schemas.account import CurrentTenantSchema
from app.services import account, quotas

blp = TenantBlueprint(
    "tenant_account", __name__, url_prefix="/v1/tenant",
    description="The tenant the API key belongs to.",
    read="viewer", write="admin",
)


@blp.route("")
class CurrentTenant(MethodView):
    @blp.doc(operationId="getCurrentTenant")
    @blp.response(200, CurrentTenantSchema)
    def get(self):
        """This tenant: slug, name, status, plan with its limits, and usage against each quota."""
        tenant = account.current_tenant(db.session())
        return {
            "slug": tenant.slug,
            "name": tenant.name,
            "status": tenant.status,
            "plan": tenant.plan,
            "usage": quotas.usage(db.session()),
        }
