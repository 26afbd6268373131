"""/v1/tenant/usage: what the calling tenant used, month by month."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView

from app.api.blueprints import TenantBlueprint
from app.extensions import db
from app.schemas.usage import UsageHistoryQuerySchema, UsageHistorySchema
from app.tenancy import usage
from app.tenancy.binding import platform_access

blp = TenantBlueprint(
    "tenant_usage", __name__, url_prefix="/v1/tenant/usage",
    description="The tenant's metered usage per UTC month.",
    read="viewer", write="admin",
)


@blp.route("")
class TenantUsage(MethodView):
    @blp.doc(operationId="getTenantUsage")
    @blp.arguments(UsageHistoryQuerySchema, location="query")
    @blp.response(200, UsageHistorySchema)
    def get(self, query: dict[str, Any]):
        """This tenant's usage per month from `from` to `to` (UTC months, YYYY-MM), as flushed."""
        first, last = usage.month_range(query.get("from_"), query.get("to"))
        session = db.session()
        with platform_access(session):
            periods = usage.history(session.connection(), g.tenant_id, first, last)
        return {"periods": [{"period": usage.format_period(p.period), "metrics": p.metrics} for p in periods]}
