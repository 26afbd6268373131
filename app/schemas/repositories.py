"""Tenant API: repositories."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .common import FullMatch, PageQuerySchema, PageSchema

# GitHub's own rules: owners are alphanumerics and single hyphens (max 39), repository
# names are letters, digits, '.', '-' and '_' (max 100).
OWNER = FullMatch(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$",
                        error="Not a valid GitHub owner name.")
NAME = FullMatch(r"^[A-Za-z0-9._-]{1,100}$", error="Not a valid GitHub repository name.")


class RepositorySchema(Schema):
    id = fields.Integer(dump_only=True)
    github_repo_id = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=2**63 - 1)
    )
    owner = fields.String(required=True, validate=OWNER)
    name = fields.String(required=True, validate=NAME)
    full_name = fields.String(dump_only=True)
    enabled = fields.Boolean(load_default=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class RepositoryUpdateSchema(Schema):
    """Partial update. github_repo_id is the repository's identity and cannot change."""

    owner = fields.String(validate=OWNER)
    name = fields.String(validate=NAME)
    enabled = fields.Boolean()

    @validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Send at least one of: owner, name, enabled.")


class RepositoryQuerySchema(PageQuerySchema):
    enabled = fields.Boolean(load_default=None, metadata={"description": "Only (not) enabled ones."})


class RepositoryPageSchema(PageSchema):
    items = fields.List(fields.Nested(RepositorySchema))
