"""Admin API: plans, their limits and prices."""

from marshmallow import Schema, fields, validate

from .common import FullMatch, PatchSchema, ResponseSchema

#: Limits and prices are PostgreSQL ``integer`` columns.
INT_MAX = 2**31 - 1

PLAN_NAME = FullMatch(
    r"^[a-z][a-z0-9_-]{0,39}$",
    error="Lowercase letters, digits, '_' and '-', starting with a letter, at most 40 characters.",
)

_MAX_REPOSITORIES = "Repositories a tenant may connect; null: unlimited."
_RATE_LIMIT = "Tenant API requests per minute, all keys and endpoints together; null: unlimited."


def _max_repositories(**kwargs):
    return fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=0, max=INT_MAX),
        metadata={"description": _MAX_REPOSITORIES}, **kwargs,
    )


def _rate_limit(**kwargs):
    return fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=INT_MAX),
        metadata={"description": _RATE_LIMIT}, **kwargs,
    )


def _price(**kwargs):
    return fields.Integer(strict=True, validate=validate.Range(min=0, max=INT_MAX), **kwargs)


class PlanLimitsSchema(ResponseSchema):
    """A plan as its tenants see it (``GET /v1/tenant``)."""

    name = fields.String()
    max_repositories = fields.Integer(allow_none=True, metadata={"description": _MAX_REPOSITORIES})
    rate_limit_per_minute = fields.Integer(allow_none=True, metadata={"description": _RATE_LIMIT})
    max_api_requests_per_month = fields.Integer(allow_none=True, metadata={
        "description": "Authenticated tenant requests allowed per UTC month (429 quota-exceeded beyond); "
                       "null: unlimited."})
    monthly_price_cents = fields.Integer()


class PlanSchema(PlanLimitsSchema):
    created_at = fields.DateTime()


class PlanCreateSchema(Schema):
    """Every field is required: an operator who forgets a limit must not create an unlimited plan."""

    name = fields.String(required=True, validate=PLAN_NAME, metadata={"example": "team"})
    max_repositories = _max_repositories(required=True)
    rate_limit_per_minute = _rate_limit(required=True)
    monthly_price_cents = _price(required=True)


class PlanUpdateSchema(PatchSchema):
    """Partial update. The name is the plan's identity (tenants are created with it) and cannot change."""

    max_repositories = _max_repositories()
    rate_limit_per_minute = _rate_limit()
    monthly_price_cents = _price()


class PlanListSchema(ResponseSchema):
    items = fields.List(fields.Nested(PlanSchema))
