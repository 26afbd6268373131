"""Tenant API: repositories."""

from marshmallow import Schema, fields, validate

from .common import FullMatch, PageQuerySchema, PageSchema, PatchSchema, QueryBoolean, ResponseSchema, StrictBoolean

# GitHub's own rules: owners are alphanumerics and single hyphens (max 39), repository
# names are letters, digits, '.', '-' and '_' (max 100).
OWNER = FullMatch(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$",
                        error="Not a valid GitHub owner name.")
NAME = FullMatch(r"^[A-Za-z0-9._-]{1,100}$", error="Not a valid GitHub repository name.")


class RepositoryCreateSchema(Schema):
    """What a client sends to connect a repository; the server sets the rest."""

    github_repo_id = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=2**63 - 1)
    )
    owner = fields.String(required=True, validate=OWNER)
    name = fields.String(required=True, validate=NAME)
    enabled = StrictBoolean(load_default=True)


class RepositorySchema(ResponseSchema):
    """A repository as the API sends it."""

    id = fields.Integer()
    github_repo_id = fields.Integer()
    owner = fields.String()
    name = fields.String()
    full_name = fields.String(metadata={"description": "owner/name"})
    enabled = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class RepositoryUpdateSchema(PatchSchema):
    """Partial update. github_repo_id is the repository's identity and cannot change."""

    owner = fields.String(validate=OWNER)
    name = fields.String(validate=NAME)
    enabled = StrictBoolean()


class RepositoryQuerySchema(PageQuerySchema):
    enabled = QueryBoolean(metadata={"description": "Only enabled (true) or only disabled (false) ones."})


class RepositoryPageSchema(PageSchema):
    items = fields.List(fields.Nested(RepositorySchema))
