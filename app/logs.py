"""Log output: readable lines for development (``LOG_FORMAT=console``), JSON lines in production (``json``).

Everything logs through the standard library (``logging.getLogger(__name__)``, fields
passed as ``extra``), so the tenancy core needs nothing of this module. One handler on
the root logger, installed by :func:`configure`, adds and renders the fields:

- ``request_id`` and ``tenant`` are filled in from the context when a record does not
  carry them (the request being served, the tenant bound, the audit actor's request);
- the same field names everywhere: ``request_id``, ``tenant``, ``key_id``, ``method``,
  ``route``, ``status``, ``duration_ms``, ``event``, ``run_id`` (see FIELDS);
- the rendered line is scrubbed last: anything shaped like a tenant API key, a JWT or a
  bearer credential, and the configured admin and metrics tokens, become
  ``[redacted]``, whichever logger wrote it and whatever an exception message held.
  Nothing should log a credential in the first place; this is the second line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

__all__ = ["FIELDS", "configure", "redact"]

#: Structured fields, in the order the console format shows them.
FIELDS = ("event", "request_id", "tenant", "key_id", "method", "route", "status", "duration_ms", "run_id")

REDACTED = "[redacted]"
_CREDENTIALS = re.compile(
    r"tnt_[0-9a-f]{12}_[A-Za-z0-9_-]*"  # a tenant API key (app.tenancy.api_keys), even cut short
    r"|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"  # a JWT (its header always starts eyJ)
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]+"  # whatever follows "Bearer" (RFC 6750 token characters)
)

#: Marks the handler configure() installed, so a second app in the process replaces it.
_MARK = "_tenantry_handler"


def redact(text: str, literals: Iterable[str] = ()) -> str:
    """``text`` with credentials replaced by ``[redacted]``: the shapes above, and ``literals``."""
    for literal in literals:
        text = text.replace(literal, REDACTED)
    return _CREDENTIALS.sub(REDACTED, text)


class ContextFilter(logging.Filter):
    """Give every record ``request_id`` and ``tenant`` from the context, unless it carries its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id()
        if getattr(record, "tenant", None) is None:
            from app.tenancy.context import current_tenant

            binding = current_tenant()
            record.tenant = binding.slug if binding is not None else None
        return True


def _request_id() -> str | None:
    from flask import g, has_app_context, has_request_context

    if has_request_context() and has_app_context() and g.get("request_id"):
        return g.request_id
    from app.tenancy.audit import current_actor

    return current_actor().request_id


class _Redacting(logging.Formatter):
    """Scrub the finished line: whatever a message, a field or a traceback held."""

    literals: tuple[str, ...] = ()

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.literals)


class ConsoleFormatter(_Redacting):
    """``time LEVEL logger: message key=value ...``, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        fields = " ".join(
            f"{name}={getattr(record, name)}" for name in FIELDS if getattr(record, name, None) is not None
        )
        line = super().formatMessage(record)
        return f"{line} {fields}" if fields else line


class JsonLineFormatter(_Redacting, JsonFormatter):
    """One JSON object per record: time, level, logger, message, the fields, any other ``extra``."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )


class _Stderr(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is when a record arrives (test capture replaces it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


def formatter(log_format: str, secrets: Iterable[str | None] = ()) -> logging.Formatter:
    """The formatter of ``log_format`` (console or json), scrubbing ``secrets`` as well as the shapes."""
    made: _Redacting = JsonLineFormatter() if log_format == "json" else ConsoleFormatter()
    literals = {s for s in secrets if s}
    # A secret with quotes or backslashes looks different inside a JSON string.
    made.literals = tuple(literals | {json.dumps(s)[1:-1] for s in literals})
    return made


def configure(config: Mapping[str, Any]) -> None:
    """Install (or replace) the root handler for ``LOG_FORMAT`` and set ``LOG_LEVEL``.

    Process-wide, as logging is: the last app created in a process decides.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    handler = _Stderr()
    setattr(handler, _MARK, True)
    handler.setFormatter(formatter(config["LOG_FORMAT"], (config.get("ADMIN_TOKEN"), config.get("METRICS_TOKEN"))))
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(config["LOG_LEVEL"])
