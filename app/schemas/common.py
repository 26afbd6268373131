"""Shapes shared by every endpoint: response bodies, pagination, strict inputs.

Inputs are as strict as the document says: a JSON boolean is ``true`` or ``false``
(never ``0``, ``1`` or ``"yes"``), an integer is a JSON integer (never ``"5"``, ``5.0``
or ``true``: ``fields.Integer(strict=True)``), a string a JSON string (marshmallow's
``String`` already refuses numbers). In a query string every value is text: a boolean
is spelled ``true`` or ``false``, an integer in ASCII digits.
"""

import re
import unicodedata
from typing import Any, ClassVar, overload

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema


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


#: A Citus node, ``HOST:PORT``: a host name or IPv4 address. Spelled out (no ``\s``) so that
#: Python and the JSON Schema (ECMA-262) dialect of the document read it the same way:
#: Python's ``\s`` also matches U+001C-U+001F, ECMA's does not.
NODE_PATTERN = r"^[A-Za-z0-9._-]+:[0-9]{1,5}$"


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


class StrictBoolean(fields.Boolean):
    """A JSON boolean: ``true`` or ``false`` only.

    ``fields.Boolean`` takes ``0``, ``1``, ``"yes"``, ``"off"`` … (and ``truthy={True}``
    would still take ``1``, which equals ``True`` in Python), so ``{"enabled": 0}`` was
    stored as false although the document says boolean.
    """

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if value is True or value is False:
            return value
        raise self.make_error("invalid", input=value)


class QueryBoolean(fields.Boolean):
    """A boolean in a query string: ``true`` or ``false``, as the document (and any client) spells it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(truthy={"true"}, falsy={"false"}, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if value in ("true", "false"):
            return value == "true"
        raise self.make_error("invalid", input=value)


class ResponseSchema(Schema):
    """A response body: every field is always sent, so every field is ``required`` in the document.

    A field that a response may leave out is named in ``OPTIONAL`` (and says when in its
    description). A field that is sent as ``null`` is still required: ``allow_none``
    makes it nullable, not optional. Generated clients then need no ``Unset`` checks
    for what is always there.
    """

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        field_obj.required = field_name not in self.OPTIONAL


class PatchSchema(Schema):
    """A partial update: any of the fields, and at least one.

    ``{}`` changes nothing and is refused (422); the document says so with
    ``minProperties: 1`` (added by ``app.api.openapi.ProblemJsonPlugin``).
    """

    MIN_PROPERTIES: ClassVar[int] = 1

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError(f"Send at least one of: {', '.join(self.load_fields)}.")


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


class PageQuerySchema(Schema):
    limit = AsciiInteger(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(metadata={
        "description": "next_cursor of the previous page; absent or empty: the first page."})

    @post_load
    def _first_page(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """An absent or empty cursor both mean the first page (``cursor=None`` for the services)."""
        data["cursor"] = data.get("cursor") or None
        return data


class PageSchema(ResponseSchema):
    next_cursor = fields.String(allow_none=True, metadata={"description": "Null on the last page."})
