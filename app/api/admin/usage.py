"""/v1/admin/usage: one month's top tenants by a metric."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprints import AdminBlueprint
from app.extensions import db
from app.schemas.usage import TopUsageQuerySchema, TopUsageSchema
from app.tenancy import usage

blp = AdminBlueprint(
    "admin_usage", __name__, url_prefix="/v1/admin/usage",
    description="Metered usage across tenants (admin token).",
)


@blp.route("")
class TopUsage(MethodView):
    @blp.doc(operationId="listTopUsage")
    @blp.arguments(TopUsageQuerySchema, location="query")
    @blp.response(200, TopUsageSchema)
    def get(self, query: dict[str, Any]):
        """The tenants with the most of a metric (`sort`, default api_requests) in a month, most first."""
        period = usage.period_or_current(query.get("period"))
        rows = usage.top_tenants(db.session().connection(), period, query["sort"], query["limit"])
        return {"period": usage.format_period(period), "metric": query["sort"],
                "items": [{"tenant_id": r.tenant_id, "slug": r.slug, "value": r.value} for r in rows]}
