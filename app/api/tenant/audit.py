"""/v1/audit-events: what changed in the caller's tenant, newest first (tenant admins)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprints import TenantBlueprint
from app.extensions import db
from app.schemas.audit import AuditPageSchema, AuditQuerySchema
from app.tenancy import audit

blp = TenantBlueprint(
    "audit_events", __name__, url_prefix="/v1/audit-events",
    description="The tenant's audit trail: every change made through the tenant API (admin keys).",
    read="admin", write="admin",
)


@blp.route("")
class AuditEvents(MethodView):
    @blp.doc(operationId="listAuditEvents")
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, query: dict[str, Any]):
        """Newest first (keyset pagination); filter by action and a time range [since, until)."""
        return audit.list_events(db.session(), **query)
