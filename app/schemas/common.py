"""Shapes shared by every endpoint: the problem document and pagination."""

from marshmallow import Schema, ValidationError, fields, validate


class FullMatch(validate.Regexp):
    """``validate.Regexp`` over the whole value.

    ``Regexp`` uses ``re.match``, where ``$`` also matches before a trailing newline: a
    pattern ``^[a-z]+$`` let ``"octocat\\n"`` through. The pattern is still documented in
    the OpenAPI document as written.
    """

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class ProblemSchema(Schema):
    """Should match the body built by ``app.api.errors.problem``."""

    type = fields.String(required=True, metadata={"example": "https://tenantry.dev/problems/not-found"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(), values=fields.Raw(), metadata={"description": "Messages per field."}
    )


class PageQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, metadata={"description": "next_cursor of the previous page."})


class PageSchema(Schema):
    next_cursor = fields.String(allow_none=True, metadata={"description": "Null on the last page."})
