"""Admin API: plans, their limits and prices."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .common import FullMatch

#: Limits and prices are PostgreSQL ``integer`` columns.
INT_MAX = 2**31 - 1

PLAN_NAME = FullMatch(
    r"^[a-z][a-z0-9_-]{0,39}$",
    error="Lowercase letters, digits, '_' and '-', starting with a letter, at most 40 characters.",
)


def _max_repositories(**kwargs):
    return fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=0, max=INT_MAX),
        metadata={"description": "Repositories a tenant may connect; null: unlimited."}, **kwargs,
    )


def _rate_limit(**kwargs):
    return fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=INT_MAX),
        metadata={"description": "Tenant API requests per minute, all keys and endpoints together; "
                                 "null: unlimited."}, **kwargs,
    )


def _price(**kwargs):
    return fields.Integer(strict=True, validate=validate.Range(min=0, max=INT_MAX), **kwargs)


class PlanLimitsSchema(Schema):
    """A plan as its tenants see it (``GET /v1/tenant``)."""

    name = fields.String(dump_only=True)
    max_repositories = _max_repositories(dump_only=True)
    rate_limit_per_minute = _rate_limit(dump_only=True)
    monthly_price_cents = _price(dump_only=True)


class PlanSchema(PlanLimitsSchema):
    created_at = fields.DateTime(dump_only=True)


class PlanCreateSchema(Schema):
    """Every field is required: an operator who forgets a limit must not create an unlimited plan."""

    name = fields.String(required=True, validate=PLAN_NAME, metadata={"example": "team"})
    max_repositories = _max_repositories(required=True)
    rate_limit_per_minute = _rate_limit(required=True)
    monthly_price_cents = _price(required=True)


class PlanUpdateSchema(Schema):
    """Partial update. The name is the plan's identity (tenants are created with it) and cannot change."""

    max_repositories = _max_repositories()
    rate_limit_per_minute = _rate_limit()
    monthly_price_cents = _price()

    @validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Send at least one of: max_repositories, rate_limit_per_minute, "
                                  "monthly_price_cents.")


class PlanListSchema(Schema):
    items = fields.List(fields.Nested(PlanSchema))
