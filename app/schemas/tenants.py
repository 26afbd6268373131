"""Admin API: tenants and their provisioning."""

from marshmallow import Schema, fields, validate

from .common import (
    NODE_PATTERN,
    NOT_BLANK,
    FullMatch,
    PageQuerySchema,
    PageSchema,
    PatchSchema,
    QueryBoolean,
    ResponseSchema,
)
from .github import GithubInstallationSchema
from .usage import CurrentUsageSchema

_PLAN = "A plan's name (GET /v1/admin/plans); an unknown plan is 422 validation-error naming `plan`."


class TenantCreateSchema(Schema):
    # The slug's rules live in app.tenancy.naming (one source); here only its type.
    slug = fields.String(required=True, metadata={
        "example": "acme", "pattern": "^[a-z][a-z0-9_]{1,39}$",
        "description": "Lowercase letters, digits and '_', starting with a letter; a few names are reserved "
                       "(422 validation-error naming `slug`)."})
    name = fields.String(required=True, validate=[validate.Length(min=1, max=200), NOT_BLANK])
    plan = fields.String(load_default="free", validate=validate.Length(min=1, max=40),
                         metadata={"description": _PLAN})
    owner_email = fields.String(validate=validate.Length(min=3, max=320), metadata={
        "example": "ann@example.com",
        "description": "The tenant's first member, created active with role `owner` in the same transaction. "
                       "Stored normalised (trimmed, Unicode NFC, lowercase); not an address: 422 naming "
                       "`owner_email`."})
    node = fields.String(validate=FullMatch(NODE_PATTERN), metadata={
        "example": "10.0.0.6:5432",
        "description": "On Citus: the worker (HOST:PORT) to place the tenant on. The tenant is provisioned "
                       "(one transaction), then its empty schema moved there; 409 before anything is created "
                       "when the node is unknown or the database is not Citus."})


class TenantUpdateSchema(PatchSchema):
    name = fields.String(validate=[validate.Length(min=1, max=200), NOT_BLANK])
    plan = fields.String(validate=validate.Length(min=1, max=40), metadata={"description": _PLAN})
    status = fields.String(
        validate=validate.OneOf(["active", "suspended"]),
        metadata={"description": "suspended: every request with the tenant's keys gets 403 until resumed. "
                                 "active on a pending tenant activates it."},
    )


class TenantSchema(ResponseSchema):
    slug = fields.String()
    name = fields.String()
    schema_name = fields.String()
    plan = fields.String(attribute="plan_name")
    status = fields.String(metadata={
        "enum": ["pending", "active", "suspended"],
        "description": "pending: installed from GitHub, its credentials refused (403 tenant-pending) until "
                       "an operator sets it active."})
    schema_revision = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class TenantDetailSchema(TenantSchema):
    node = fields.String(allow_none=True, metadata={
        "description": "On Citus, the worker (HOST:PORT) holding the tenant's schema; null on plain "
                       "PostgreSQL or while the schema is not distributed."})
    github = fields.Nested(GithubInstallationSchema, allow_none=True, metadata={
        "description": "The GitHub App installation the tenant stands for; null for a tenant an operator "
                       "provisioned."})
    usage = fields.Nested(CurrentUsageSchema, metadata={
        "description": "The tenant's metered usage this month (as flushed)."})


class IssuedKeySchema(ResponseSchema):
    id = fields.Integer()
    prefix = fields.String()
    role = fields.String(metadata={"enum": ["admin"]})
    token = fields.String(metadata={"description": "The secret. Shown this once; only a hash is stored."})


class OwnerSchema(ResponseSchema):
    id = fields.Integer()
    email = fields.String()
    role = fields.String(metadata={"enum": ["owner"]})
    status = fields.String(metadata={"enum": ["active"]})


class TenantCreatedSchema(ResponseSchema):
    tenant = fields.Nested(TenantSchema)
    api_key = fields.Nested(IssuedKeySchema, attribute="admin_key")
    owner = fields.Nested(OwnerSchema, allow_none=True, metadata={
        "description": "The first owner (a member), when `owner_email` was given; else null."})
    node = fields.String(allow_none=True, metadata={
        "description": "On Citus, the worker holding the new schema; null on plain PostgreSQL."})
    placement_error = fields.String(allow_none=True, metadata={
        "description": "Set when a requested node could not be reached by the move after provisioning: the "
                       "tenant exists, on `node`; move it with POST /v1/admin/tenants/{slug}/move."})


class TenantQuerySchema(PageQuerySchema):
    # No load_default: an absent filter is simply not in the query.
    revision = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "Only tenants whose schema is at exactly this revision."},
    )
    behind = QueryBoolean(
        metadata={"description": "true: only tenants whose schema is not at the tenant stream's head "
                                 "(none recorded included); false: only those at head."},
    )


class TenantPageSchema(PageSchema):
    items = fields.List(fields.Nested(TenantSchema))
