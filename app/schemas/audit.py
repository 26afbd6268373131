"""Audit trail: tenant events (tenant admins) and platform events (the admin API)."""

from marshmallow import ValidationError, fields, validate, validates_schema

from .common import PageQuerySchema, PageSchema, ResponseSchema


class AuditQuerySchema(PageQuerySchema):
    action = fields.String(
        validate=validate.Length(min=1, max=60), metadata={"example": "repository.updated"}
    )
    since = fields.AwareDateTime(
        format="iso", metadata={"description": "Only events at or after this time (ISO 8601 with offset)."}
    )
    until = fields.AwareDateTime(
        format="iso", metadata={"description": "Only events before this time (ISO 8601 with offset)."}
    )

    @validates_schema
    def _range(self, data: dict, **_: object) -> None:
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise ValidationError("since must be before until.", "until")


class PlatformAuditQuerySchema(AuditQuerySchema):
    tenant = fields.String(validate=validate.Length(min=1, max=40), metadata={"description": "A tenant slug."})


class AuditEventSchema(ResponseSchema):
    id = fields.Integer()
    occurred_at = fields.DateTime()
    action = fields.String()
    resource = fields.String()
    resource_id = fields.String(allow_none=True)
    api_key_id = fields.Integer(allow_none=True)
    role = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    changes = fields.Dict(allow_none=True, metadata={"description": "before/after of the fields that changed."})
    actor = fields.String(allow_none=True, metadata={
        "example": "member:7", "description": "Who acted: member:<id>, api-key:<id>, jwt:<sub>, system "
                                              "(null on events written before schema revision t0003)."})
    member_id = fields.Integer(allow_none=True, metadata={"description": "The member who acted, if a member did."})


class PlatformAuditEventSchema(ResponseSchema):
    id = fields.Integer()
    occurred_at = fields.DateTime()
    actor = fields.String(metadata={"example": "admin-api"})
    action = fields.String(metadata={"example": "tenant.suspended"})
    tenant_id = fields.Integer(allow_none=True)
    tenant_slug = fields.String(allow_none=True)
    resource = fields.String()
    resource_id = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    changes = fields.Dict(allow_none=True)


class AuditPageSchema(PageSchema):
    items = fields.List(fields.Nested(AuditEventSchema))


class PlatformAuditPageSchema(PageSchema):
    items = fields.List(fields.Nested(PlatformAuditEventSchema))
