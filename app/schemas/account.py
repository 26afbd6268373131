"""Tenant API: the calling tenant's plan quotas."""

from marshmallow import fields

from .common import ProblemSchema


class QuotaProblemSchema(ProblemSchema):
    """403 ``quota-exceeded``: the problem document with the quota, its limit and the usage."""

    quota = fields.String(metadata={"example": "repositories"})
    limit = fields.Integer()
    usage = fields.Integer()
