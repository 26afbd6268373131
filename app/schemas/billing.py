"""The billing outbox: the event stream, claims and acknowledgements (docs/billing.md)."""

from marshmallow import Schema, fields, validate

from app.models.public import BILLING_EVENT_TYPES
from app.tenancy.billing import MAX_BATCH, MAX_LEASE_SECONDS

from .common import AsciiInteger, ResponseSchema

#: Largest event id (bigint): a larger number is refused with 422, not sent to PostgreSQL.
_MAX_ID = 2**63 - 1

_EVENT_TYPES = ", ".join(BILLING_EVENT_TYPES)


class BillingEventsQuerySchema(Schema):
    after = AsciiInteger(load_default=0, validate=validate.Range(min=0, max=_MAX_ID), metadata={
        "description": "Only events with a larger id: the next_after of the previous page (0: from the start)."})
    limit = AsciiInteger(load_default=100, validate=validate.Range(min=1, max=MAX_BATCH))


class BillingEventSchema(ResponseSchema):
    id = fields.Integer(metadata={"description": "Orders the stream: ids become visible in commit order."})
    idempotency_key = fields.String(metadata={
        "description": "Deduplicate on this: delivery is at least once.",
        "example": "usage.period_closed:42:2026-11"})
    type = fields.String(metadata={"description": _EVENT_TYPES, "example": "tenant.plan_changed"})
    tenant_id = fields.Integer()
    tenant_slug = fields.String(allow_none=True, metadata={
        "description": "Null only for a tenant deleted before the outbox existed."})
    occurred_at = fields.DateTime()
    data = fields.Dict(metadata={"description": "What happened: plan, status, previous_plan/previous_status, "
                                                "period and metrics (a closed month), actor."})
    attempts = fields.Integer(metadata={"description": "How many times a consumer claimed it."})
    acknowledged = fields.Boolean()


class BillingEventPageSchema(ResponseSchema):
    items = fields.List(fields.Nested(BillingEventSchema))
    next_after = fields.Integer(metadata={"description": "Pass as `after` for the next page (the last id seen)."})


class ClaimSchema(Schema):
    consumer = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$", error="1-100 letters, digits and . _ : @ -, starting with a "
        "letter or digit."), metadata={"description": "Who claims (recorded with the claim).",
                                       "example": "invoicing-1"})
    limit = AsciiInteger(load_default=100, validate=validate.Range(min=1, max=MAX_BATCH))
    lease_seconds = AsciiInteger(validate=validate.Range(min=1, max=MAX_LEASE_SECONDS), metadata={
        "description": "How long the events stay this claim's; default BILLING_CLAIM_SECONDS. Not acknowledged "
                       "by then, they go to the next claim."})


class ClaimResultSchema(ResponseSchema):
    claim_token = fields.UUID(metadata={"description": "Acknowledge with this."})
    claimed_until = fields.DateTime(allow_none=True, metadata={"description": "Null: nothing was waiting."})
    items = fields.List(fields.Nested(BillingEventSchema))


class AcknowledgeSchema(Schema):
    claim_token = fields.UUID(required=True)
    ids = fields.List(AsciiInteger(validate=validate.Range(min=1, max=_MAX_ID)), required=True,
                      validate=validate.Length(min=1, max=MAX_BATCH))


class AcknowledgeResultSchema(ResponseSchema):
    acknowledged = fields.List(fields.Integer(), metadata={
        "description": "Settled by this claim (an acknowledgement may be retried)."})
    refused = fields.List(fields.Integer(), metadata={
        "description": "Not this claim's: unknown, or claimed again by another consumer after the lease ran out "
                       "(that consumer delivers it)."})
