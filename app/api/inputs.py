"""The request's input, checked once before any view runs: what the views must never see.

- A POST, PUT or PATCH body is JSON (``application/json`` or ``application/*+json``),
  else 415; except on the blueprints the app factory names in :func:`accept_forms`
  (the operator console posts HTML forms) and :func:`accept_raw_bodies` (a signed
  webhook, verified before it is parsed).
- The body is parsed here with the decoder webargs uses: a body that does not parse
  is 400, and so is one that Python's decoder cannot hold (nested deeper than the
  recursion limit, an integer of more than 4,300 digits), which would otherwise escape
  the parser as a 500.
- No string of the body (keys included), of the query string or of the path holds a
  NUL character or an unpaired surrogate (``"\\ud800"`` is valid JSON). PostgreSQL text
  cannot store NUL, and psycopg cannot encode a lone surrogate: sent on, either one
  fails its statement with a 500. Here it is a 422 naming the field (a path is 404:
  no row has such a name).
- Integers in a path are ASCII digits (:class:`AsciiIntegerConverter`, installed as
  ``int`` by the app factory; query integers: ``app.schemas.common.AsciiInteger``).
- A body sent with ``Transfer-Encoding: chunked`` meets the same rules as one with a
  ``Content-Length`` (:class:`ChunkedBodies`, a WSGI middleware the app factory puts
  around the app): read up to the limit, then measured like any other.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from flask import Flask, current_app, request
from werkzeug.exceptions import BadRequest, NotFound, UnprocessableEntity, UnsupportedMediaType
from werkzeug.routing import IntegerConverter

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UNSTORABLE_MESSAGE = "Must not contain NUL characters (U+0000) or unpaired surrogates."
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: str) -> bool:
    """Whether PostgreSQL (through psycopg) could not store ``value`` as text."""
    return _UNSTORABLE.search(value) is not None


#: Where the app keeps the names of blueprints whose bodies are forms (:func:`accept_forms`).
FORM_BLUEPRINTS = "tenantry_form_blueprints"


def accept_forms(app: Flask, blueprint: str) -> None:
    """Let ``blueprint``'s views take form bodies: the JSON rule of :func:`check_request` skips them."""
    app.extensions.setdefault(FORM_BLUEPRINTS, set()).add(blueprint)


def accept_raw_bodies(app: Flask, blueprint: str) -> None:
    """Leave ``blueprint``'s bodies to its views: a signed webhook is verified over its raw bytes
    before anything parses it (:mod:`app.api.webhooks` does its own JSON checks after that)."""
    app.extensions.setdefault(FORM_BLUEPRINTS, set()).add(blueprint)


def check_request() -> None:
    """``before_request``: 415, 400, 404 or 422 for input no view can use (see the module doc)."""
    for value in (request.view_args or {}).values():
        if isinstance(value, str) and unstorable(value):
            raise NotFound("No resource has a name with NUL characters or unpaired surrogates.")
    messages: dict[str, dict[str, list[str]]] = {}
    bad_args = {
        name if not unstorable(name) else "_query": [UNSTORABLE_MESSAGE]
        for name, values in request.args.lists()
        if unstorable(name) or any(unstorable(v) for v in values)
    }
    if bad_args:
        messages["query"] = bad_args
    if request.method in BODY_METHODS and request.blueprint not in current_app.extensions.get(FORM_BLUEPRINTS, ()):
        if request.content_length and not request.is_json:
            raise UnsupportedMediaType("Send the body as application/json.")
        if request.is_json:
            bad_fields = _unstorable_fields(_parsed_body())
            if bad_fields:
                messages["json"] = bad_fields
    if messages:
        raise InvalidFields(messages)


class InvalidFields(UnprocessableEntity):
    """422 with its fields' messages in ``data``: the shape webargs gives, so errors come out by field."""

    def __init__(self, messages: dict[str, Any]) -> None:
        super().__init__()
        self.data = {"messages": messages}


_NO_BODY = object()


class ChunkedBodies:
    """WSGI middleware: a chunked request body becomes one with a ``Content-Length``.

    Werkzeug reads a body without ``Content-Length`` only up to ``MAX_CONTENT_LENGTH``
    and stops there silently, so 53 bytes of JSON followed by 2 MiB of whitespace came
    through as valid JSON (201), 3 MiB of JSON as invalid JSON (400), and the 415 check,
    which asks for a ``Content-Length``, never ran. Here the body is read first, up to
    one byte past the limit (memory stays bounded), and handed on with its length, as a
    buffering proxy sends it: a body over the limit is then refused with 413 by the
    same check as any other, and every other rule sees a length.
    """

    def __init__(self, wsgi_app, limit: int) -> None:  # noqa: ANN001 - any WSGI callable
        self.wsgi_app = wsgi_app
        self.limit = limit

    def __call__(self, environ, start_response):  # noqa: ANN001, ANN204 - the WSGI signature
        framing = environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if environ.get("CONTENT_LENGTH") in (None, "") and "chunked" in framing:
            stream = environ["wsgi.input"]
            body, wanted = [], self.limit + 1
            while wanted > 0:
                piece = stream.read(min(wanted, 65536))
                if not piece:
                    break
                body.append(piece)
                wanted -= len(piece)
            data = b"".join(body)
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
            del environ["HTTP_TRANSFER_ENCODING"]  # no longer chunked (werkzeug ignores a length beside it)
        return self.wsgi_app(environ, start_response)


def _parsed_body() -> Any:
    data = request.get_data(cache=True)  # webargs reads the same cached bytes after us
    if not data:
        return _NO_BODY
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadRequest("The request body is not valid JSON.") from None


def _unstorable_fields(body: Any) -> dict[str, list[str]]:
    """Top-level fields (``_schema`` for the body itself, or a bad key) holding an unstorable string."""
    if body is _NO_BODY:
        return {}
    if not isinstance(body, dict):
        return {"_schema": [UNSTORABLE_MESSAGE]} if _holds_unstorable(body) else {}
    bad: dict[str, list[str]] = {}
    for key, value in body.items():
        if unstorable(key):
            bad["_schema"] = [UNSTORABLE_MESSAGE]
        elif _holds_unstorable(value):
            bad[key] = [UNSTORABLE_MESSAGE]
    return bad


def _holds_unstorable(value: Any) -> bool:
    stack = [value]  # iterative: the body may be nested as deep as the decoder allows
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if unstorable(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class AsciiIntegerConverter(IntegerConverter):
    """``<int:…>`` in a route, ASCII digits only.

    werkzeug's converter matches ``\\d+``, which in Python's ``re`` is any Unicode
    decimal digit, and ``int()`` reads them: ``/v1/repositories/%EF%BC%91`` (a
    full-width 1) and ``/%D9%A1`` (Arabic-Indic 1) served repository 1. Here they are 404.
    """

    regex = r"[0-9]+"
