"""Tenant API: API keys. The token appears in one response only, the one that creates it."""

from marshmallow import Schema, fields, validate

from app.models.public import API_KEY_ROLES
from app.tenancy.api_keys import NAME_MAX

from .common import PageSchema, ResponseSchema


class ApiKeySchema(ResponseSchema):
    """A key as listed: never its token, never its hash."""

    id = fields.Integer()
    prefix = fields.String(metadata={"description": "The public part of the token."})
    name = fields.String(allow_none=True)
    role = fields.String(metadata={"enum": list(API_KEY_ROLES)})
    created_at = fields.DateTime()
    # dump_default: a key just issued has neither yet.
    last_used_at = fields.DateTime(
        allow_none=True, dump_default=None,
        metadata={"description": "Refreshed at most once a minute: up to 60 s behind the last use."},
    )
    revoked_at = fields.DateTime(allow_none=True, dump_default=None)
    created_by_member_id = fields.Integer(allow_none=True, dump_default=None, metadata={
        "description": "The member whose JWT created the key (null: created by a key, the admin API, the console "
                       "or the CLI). A label: it stays after that member is removed."})


class ApiKeyCreateSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(API_KEY_ROLES))
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=NAME_MAX))


class ApiKeyCreatedSchema(ApiKeySchema):
    token = fields.String(
        metadata={"description": "tnt_<prefix>_<secret>: shown this once, only its hash is kept."}
    )


class ApiKeyPageSchema(PageSchema):
    items = fields.List(fields.Nested(ApiKeySchema))
