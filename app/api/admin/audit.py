"""/v1/admin/audit-events: platform actions (provision, suspend, resume, delete, plan changes …)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprints import AdminBlueprint
from app.extensions import db
from app.schemas.audit import PlatformAuditPageSchema, PlatformAuditQuerySchema
from app.tenancy import audit

blp = AdminBlueprint(
    "admin_audit_events", __name__, url_prefix="/v1/admin/audit-events",
    description="The platform audit trail (admin token).",
)


@blp.route("")
class PlatformAuditEvents(MethodView):
    @blp.doc(operationId="listPlatformAuditEvents")
    @blp.arguments(PlatformAuditQuerySchema, location="query")
    @blp.response(200, PlatformAuditPageSchema)
    def get(self, query: dict[str, Any]):
        """Newest first (keyset pagination); filter by action, tenant slug and a time range."""
        return audit.list_events(db.session(), platform=True, **query)
