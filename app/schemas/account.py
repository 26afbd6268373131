"""Tenant API: the calling tenant, its plan and its usage against each quota."""

from marshmallow import Schema, fields

from .common import ProblemSchema
from .plans import PlanLimitsSchema


class QuotaUsageSchema(Schema):
    used = fields.Integer()
    limit = fields.Integer(allow_none=True, metadata={"description": "Null: unlimited."})


class TenantUsageSchema(Schema):
    repositories = fields.Nested(QuotaUsageSchema)


class CurrentTenantSchema(Schema):
    slug = fields.String()
    name = fields.String()
    status = fields.String()
    plan = fields.Nested(PlanLimitsSchema)
    usage = fields.Nested(TenantUsageSchema, metadata={"description": "What the tenant uses of each quota."})


class QuotaProblemSchema(ProblemSchema):
    """403 ``quota-exceeded``: the problem document with the quota, its limit and the usage."""

    quota = fields.String(metadata={"example": "repositories"})
    limit = fields.Integer()
    usage = fields.Integer()
