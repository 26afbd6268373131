"""Tenant API: the calling tenant, its plan and its usage against each quota."""

from marshmallow import fields

from .common import ResponseSchema
from .plans import PlanLimitsSchema


class QuotaUsageSchema(ResponseSchema):
    used = fields.Integer()
    limit = fields.Integer(allow_none=True, metadata={"description": "Null: unlimited."})


class TenantUsageSchema(ResponseSchema):
    repositories = fields.Nested(QuotaUsageSchema)
    api_requests_this_month = fields.Nested(QuotaUsageSchema, metadata={
        "description": "API requests this UTC month against the plan's max_api_requests_per_month, as flushed "
                       "(a few seconds behind; the limit itself is checked on every request)."})


class CurrentTenantSchema(ResponseSchema):
    slug = fields.String()
    name = fields.String()
    status = fields.String(metadata={"enum": ["active", "suspended"]})
    plan = fields.Nested(PlanLimitsSchema)
    usage = fields.Nested(TenantUsageSchema, metadata={"description": "What the tenant uses of each quota."})
