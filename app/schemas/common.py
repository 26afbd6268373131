"""Shapes shared by every endpoint: the problem document, pagination, strict inputs."""

import re
import unicodedata
from typing import Any, overload

from marshmallow import Schema, ValidationError, fields, validate


class FullMatch(validate.Regexp):
    """``validate.Regexp`` over the whole value.

    ``Regexp`` uses ``re.match``, where ``$`` also matches before a trailing newline: a
    pattern ``^[a-z]+$`` let ``"octocat\\n"`` through. The pattern is still documented in
    the OpenAPI document as written.
    """

    def __init__(self, regex: str, flags: int = 0, *, error: str | None = None) -> None:
        super().__init__(regex, flags, error=error)
        self.full: re.Pattern[str] = re.compile(regex, flags)

    @overload
    def __call__(self, value: str) -> str: ...
    @overload
    def __call__(self, value: bytes) -> bytes: ...
    def __call__(self, value: str | bytes) -> str | bytes:
        if not isinstance(value, str) or self.full.fullmatch(value) is None:  # JSON gives text only
            raise ValidationError(self._format_error(value))
        return value


class AsciiInteger(fields.Integer):
    """An integer written in ASCII digits only.

    Python's ``int()`` reads any Unicode decimal digit ("５" full-width, "١" Arabic-Indic),
    so ``limit=５`` was taken as 5. Digits are ASCII here, as everywhere in the API.
    """

    _ASCII = re.compile(r"[+-]?[0-9]+")

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and self._ASCII.fullmatch(value) is None:
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def has_visible_character(value: str) -> bool:
    """Something a person can see: a character that is neither a separator (Z*: spaces)
    nor a control or format character (C*: U+200B zero-width space, soft hyphen …).
    ``str.strip`` keeps U+200B, so a name made of it was not blank to it."""
    return any(unicodedata.category(character)[0] not in "ZC" for character in value)


class Visible(validate.Validator):
    """Refuses a string with no visible character (:func:`has_visible_character`)."""

    error = "Must not be blank."

    def __call__(self, value: str) -> str:
        if not has_visible_character(value):
            raise ValidationError(self.error)
        return value


#: A display name must show something: blanks and invisible characters alone are refused.
NOT_BLANK = Visible()


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
    limit = AsciiInteger(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, metadata={"description": "next_cursor of the previous page."})


class PageSchema(Schema):
    next_cursor = fields.String(allow_none=True, metadata={"description": "Null on the last page."})
