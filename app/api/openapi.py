"""The OpenAPI document says what the API sends: errors are ``application/problem+json``.

flask-smorest documents every response, errors included, as ``application/json``, and
an error response declared with only a description (``alt_response(409, ...)``) with no
body at all. Every error is a problem document (``app.api.errors``), so this apispec
plugin rewrites the document to match: error responses (4xx, 5xx and ``default``) carry
the ``Problem`` schema under ``application/problem+json``. A client (or schemathesis)
reading the document then expects what it gets.
"""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin

from app.api.errors import PROBLEM_MIMETYPE

JSON = "application/json"
#: The component flask-smorest registers for ``Api.ERROR_SCHEMA`` (``ProblemSchema``).
PROBLEM_COMPONENT = "Problem"


def _as_problem(response: dict[str, Any]) -> None:
    content = response.setdefault("content", {})
    if JSON in content:
        content[PROBLEM_MIMETYPE] = content.pop(JSON)
    content.setdefault(PROBLEM_MIMETYPE, {}).setdefault("schema", PROBLEM_COMPONENT)


def _is_error(status: str | int) -> bool:
    return str(status) == "default" or (str(status).isdigit() and int(status) >= 400)


class ProblemJsonPlugin(BasePlugin):
    def response_helper(self, response: dict, **kwargs: Any) -> dict | None:
        # Component responses: flask-smorest registers one per HTTP status and a default
        # error, all with ERROR_SCHEMA; the document includes those an operation references,
        # which are error responses (422, default).
        if "content" in response:
            _as_problem(response)
        return response

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **kwargs: Any) -> None:
        for operation in (operations or {}).values():
            for status, response in operation.get("responses", {}).items():
                if isinstance(response, dict) and _is_error(status):
                    _as_problem(response)
