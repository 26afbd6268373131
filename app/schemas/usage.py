"""Usage metering: a tenant's history per month, and one month's top tenants."""

from marshmallow import Schema, fields, validate

from .common import AsciiInteger, ResponseSchema

_MONTH = validate.Regexp(r"^2[0-9]{3}-(0[1-9]|1[0-2])$", error="Must be a month written YYYY-MM, e.g. 2026-12.")


def _month(description: str, data_key: str | None = None) -> fields.String:
    return fields.String(validate=_MONTH, data_key=data_key, metadata={"description": description})


class UsageHistoryQuerySchema(Schema):
    from_ = _month("First month (UTC, YYYY-MM), included; default: `to`, else the current month.", data_key="from")
    to = _month("Last month (UTC, YYYY-MM), included; default: `from`, else the current month. At most 36 "
                "months from `from`.")


class PeriodUsageSchema(ResponseSchema):
    period = fields.String(metadata={"description": "The UTC month, YYYY-MM."})
    metrics = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "Each metric counted in the month: api_requests (every authenticated request), "
                       "repositories (the month's peak), any metric the application records. As flushed: up to "
                       "USAGE_FLUSH_SECONDS behind."})


class UsageHistorySchema(ResponseSchema):
    periods = fields.List(fields.Nested(PeriodUsageSchema), metadata={
        "description": "Every month of the range, oldest first (a month with no usage has empty metrics)."})


class TopUsageQuerySchema(Schema):
    period = _month("The UTC month (YYYY-MM); default: the current month.")
    sort = fields.String(load_default="api_requests", validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,39}$"),
                         metadata={"description": "The metric tenants are ranked by, most first."})
    limit = AsciiInteger(load_default=50, validate=validate.Range(min=1, max=500))


class TenantCountSchema(ResponseSchema):
    tenant_id = fields.Integer()
    slug = fields.String(allow_none=True, metadata={"description": "Null: the tenant was deleted since."})
    value = fields.Integer()


class TopUsageSchema(ResponseSchema):
    period = fields.String()
    metric = fields.String()
    items = fields.List(fields.Nested(TenantCountSchema))


class CurrentUsageSchema(ResponseSchema):
    period = fields.String(metadata={"description": "The current UTC month, YYYY-MM."})
    metrics = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "The tenant's counts this month, as flushed."})
