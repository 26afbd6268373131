"""/v1/admin/plans: list, create and change plans (limits and prices)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api.blueprints import AdminBlueprint
from app.extensions import db
from app.schemas.plans import PlanCreateSchema, PlanListSchema, PlanSchema, PlanUpdateSchema
from app.services import plans as service

blp = AdminBlueprint(
    "admin_plans", __name__, url_prefix="/v1/admin/plans",
    description="Plans: what tenants may use and what it costs (admin token).",
)


@blp.route("")
class Plans(MethodView):
    @blp.doc(operationId="listPlans")
    @blp.response(200, PlanListSchema)
    def get(self):
        """Every plan, cheapest first."""
        return {"items": service.list_plans(db.session())}

    @blp.doc(operationId="createPlan")
    @blp.arguments(PlanCreateSchema)
    @blp.response(201, PlanSchema)
    @blp.alt_response(409, description="A plan with this name exists already.")
    def post(self, body: dict[str, Any]):
        """Create a plan. A null limit is unlimited; every field must be sent."""
        return service.create_plan(db.session(), **body)


@blp.route("/<name>")
class PlanByName(MethodView):
    @blp.doc(operationId="getPlan")
    @blp.response(200, PlanSchema)
    def get(self, name: str):
        """One plan."""
        return service.get_plan(db.session(), name)

    @blp.doc(operationId="updatePlan")
    @blp.arguments(PlanUpdateSchema)
    @blp.response(200, PlanSchema)
    def patch(self, body: dict[str, Any], name: str):
        """Change limits and/or price; tenants on the plan get the new limits on their next request.

        Lowering ``max_repositories`` below a tenant's usage is allowed: its repositories stay,
        and creating more is refused until it is back under the limit.
        """
        return service.update_plan(db.session(), name, body)
