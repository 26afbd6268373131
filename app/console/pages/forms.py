"""Form fields and query strings read through the admin API's schemas, so the limits are the API's.

An HTML form sends text only, where the API's schemas take JSON values (an integer
is a JSON integer there): :func:`typed` turns the text of the fields a form declares
as integers into what a JSON client would have sent, and leaves anything else as text
for the schema to refuse with its own message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError
from werkzeug.exceptions import BadRequest

_INTEGER = re.compile(r"[+-]?[0-9]+")


def typed(form: Mapping[str, str], fields: Iterable[str], *, integers: Iterable[str] = ()) -> dict[str, Any]:
    """The ``fields`` of ``form`` as JSON values: an integer field's ASCII digits an integer, its blank null.

    Null is "unlimited" for a limit, and refused by the schema where a number is required.
    A field the form did not send stays absent (the schema says whether it is required).
    """
    integers = set(integers)
    data: dict[str, Any] = {}
    for field in fields:
        if field not in form:
            continue
        value = form[field].strip()
        if field in integers and not value:
            data[field] = None
        elif field in integers and _INTEGER.fullmatch(value):
            data[field] = int(value)
        else:
            data[field] = value
    return data


def load_form(schema: Schema, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(loaded, {})`` or ``({}, the error text by field)``: errors not tied to a field are under ``_form``."""
    try:
        return schema.load(data), {}
    except ValidationError as invalid:
        return {}, {field: " ".join(texts) for field, texts in field_errors(invalid.normalized_messages()).items()}


def field_errors(messages: Mapping[str, Any]) -> dict[str, list[str]]:
    """marshmallow's messages as a list of text per field (``_schema`` becomes ``_form``)."""
    out: dict[str, list[str]] = {}
    for field, found in messages.items():
        texts = found if isinstance(found, list) else [found]
        out["_form" if field == "_schema" else field] = [str(text) for text in texts]
    return out


def load_query(schema: Schema, args: Mapping[str, str], fields: Iterable[str]) -> dict[str, Any]:
    """The ``fields`` of the query string loaded by ``schema`` (blank means absent); a readable 400 if invalid.

    Other parameters are ignored, ``limit`` among them unless named: a page has its own size.
    """
    data = {name: args[name] for name in fields if args.get(name, "").strip()}
    try:
        return schema.load(data)
    except ValidationError as invalid:
        errors = field_errors(invalid.normalized_messages())
        raise BadRequest("; ".join(
            " ".join(texts) if field == "_form" else f"{field}: {' '.join(texts)}"
            for field, texts in errors.items()
        )) from None


def as_utc(value: str) -> str:
    """A ``datetime-local`` or date input (no offset) read as UTC, in ISO 8601 with its offset.

    Anything else is returned as it came, for the schema to accept (it has an offset
    already) or refuse.
    """
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
