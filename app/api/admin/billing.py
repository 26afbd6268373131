"""/v1/admin/billing-events: the billing outbox as a stream to poll, and claims to take and acknowledge."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from app.api.blueprints import AdminBlueprint
from app.extensions import db
from app.schemas.billing import (
    AcknowledgeResultSchema,
    AcknowledgeSchema,
    BillingEventPageSchema,
    BillingEventsQuerySchema,
    ClaimResultSchema,
    ClaimSchema,
)
from app.tenancy import billing

blp = AdminBlueprint(
    "admin_billing", __name__, url_prefix="/v1/admin/billing-events",
    description="The billing outbox: plan changes, suspensions, deletions and closed months (admin token; "
                "docs/billing.md).",
)


@blp.route("")
class BillingEvents(MethodView):
    @blp.doc(operationId="listBillingEvents")
    @blp.arguments(BillingEventsQuerySchema, location="query")
    @blp.response(200, BillingEventPageSchema)
    def get(self, query: dict[str, Any]):
        """Events after `after`, oldest first, acknowledged or not: a poller keeps `next_after` and never misses one."""
        events = billing.events_after(db.session().connection(), query["after"], query["limit"])
        return {"items": [e.as_dict() for e in events], "next_after": events[-1].id if events else query["after"]}


@blp.route("/claim")
class Claims(MethodView):
    @blp.doc(operationId="claimBillingEvents")
    @blp.arguments(ClaimSchema)
    @blp.response(200, ClaimResultSchema)
    def post(self, body: dict[str, Any]):
        """Take up to `limit` events no one holds, oldest first, for `lease_seconds`; acknowledge after delivery."""
        lease = body.get("lease_seconds") or current_app.config["BILLING_CLAIM_SECONDS"]
        taken = billing.claim(db.session().connection(), body["consumer"], body["limit"], lease)
        return {"claim_token": taken.token, "claimed_until": taken.claimed_until,
                "items": [e.as_dict() for e in taken.events]}


@blp.route("/ack")
class Acknowledgements(MethodView):
    @blp.doc(operationId="acknowledgeBillingEvents")
    @blp.arguments(AcknowledgeSchema)
    @blp.response(200, AcknowledgeResultSchema)
    def post(self, body: dict[str, Any]):
        """Settle delivered events of a claim: they are never handed out again."""
        result = billing.acknowledge(db.session().connection(), body["claim_token"], body["ids"])
        return {"acknowledged": result.acknowledged, "refused": result.refused}
