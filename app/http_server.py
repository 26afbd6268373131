"""What gunicorn answers by itself: requests it refuses before the app sees them.

gunicorn's parser refuses a malformed request line or header, a request line over
``limit_request_line`` and headers over ``limit_request_fields`` /
``limit_request_field_size`` (400, 414, 431), and answers with a page of HTML. Our clients
read application/problem+json for every error, so :func:`answer_with_problems` (called
in each worker by gunicorn.conf.py's ``post_worker_init``) replaces the function gunicorn
writes that page with. The detail is fixed per status: gunicorn's message quotes the
offending input, which is the attacker's text, and is logged by gunicorn instead.

At start (``when_ready``), the master says once what would otherwise be found out the
hard way: that the database is not migrated (:func:`warn_if_public_schema_behind`), or
that several workers count rate limits (:func:`warn_if_rate_limits_per_process`) or
monthly usage (:func:`warn_if_usage_per_process`) apart.

In the shipped stack nginx sees each request first and answers the same way
(deploy/nginx.conf); this covers gunicorn exposed directly (development, or a platform
whose own proxy passes such requests on).
"""

from __future__ import annotations

import json
import os
from typing import Any

import gunicorn.util

PROBLEM_BASE = "https://tenantry.dev/problems/"

#: Status -> (problem type, title, detail) for what gunicorn answers by itself.
_PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: ("bad-request", "Bad request", "The request is not valid HTTP: a malformed request line, header or chunk."),
    403: ("forbidden", "Forbidden", "The request was refused by the server."),
    414: ("uri-too-long", "URI too long", "The request line is longer than the server accepts."),
    417: ("expectation-failed", "Expectation failed", "The server cannot meet the Expect header."),
    431: ("request-header-fields-too-large", "Request header fields too large",
          "A header is longer, or the headers more numerous, than the server accepts."),
    501: ("not-implemented", "Not implemented", "The request's transfer coding is not supported."),
}
_INTERNAL = ("internal-error", "Internal server error", "Internal server error")


def problem_response(status: int, reason: str) -> bytes:
    """The whole HTTP response gunicorn sends for ``status``, as problem+json."""
    slug, title, detail = _PROBLEMS.get(status, _INTERNAL)
    body = json.dumps({"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def _write_problem(sock, status_int: int, reason: str, mesg: str) -> None:  # noqa: ANN001, ARG001 - gunicorn's signature
    gunicorn.util.write_nonblock(sock, problem_response(status_int, reason))


def answer_with_problems() -> None:
    """Make this process's gunicorn answer its own errors as problem+json."""
    gunicorn.util.write_error = _write_problem


def warn_if_public_schema_behind(log: Any) -> None:  # noqa: ANN401 - gunicorn's logger
    """One warning at start when ``DATABASE_URL``'s public schema is not at head.

    On a connection of its own, closed at once: the master holds none (see
    gunicorn.conf.py on preload_app). /readyz answers 503 meanwhile and requests 503
    ``database-not-migrated``; this line says why in the server's own log.
    """
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from app import public_migrations
    from app.config import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            current = public_migrations.current_revision(conn)
    except Exception as exc:  # noqa: BLE001 - a start-up check never stops the server
        log.warning("could not read the public schema's revision at start: %s", type(exc).__name__)
        return
    finally:
        engine.dispose()
    head = public_migrations.head_revision()
    if current != head:
        log.warning("the database's public schema is at %s, not %s: run `flask db upgrade` "
                    "(until then /readyz and every request answer 503)", current or "no revision", head)


def warn_if_rate_limits_per_process(log: Any, workers: int) -> None:  # noqa: ANN401 - gunicorn's logger
    """One warning at start when several workers would each count rate limits on their own."""
    storage = os.environ.get("RATELIMIT_STORAGE_URI", "").strip() or "memory://"
    if workers > 1 and storage.startswith("memory:"):
        log.warning("rate limits are counted per worker process (RATELIMIT_STORAGE_URI=memory://): with %d "
                    "workers a tenant can make up to %d times its plan's rate a minute, more as workers "
                    "restart; set RATELIMIT_STORAGE_URI to a Redis URL (docs/operations.md)", workers, workers)


def warn_if_usage_per_process(log: Any, workers: int) -> None:  # noqa: ANN401 - gunicorn's logger
    """One warning at start when several workers would each hold monthly usage counts of their own."""
    if os.environ.get("USAGE_METERING", "").strip().lower() in ("0", "false", "no", "off"):
        return
    storage = os.environ.get("USAGE_STORAGE_URI", "").strip() or "memory://"
    if workers > 1 and storage.startswith("memory:"):
        log.warning("monthly usage is counted per worker process (USAGE_STORAGE_URI=memory://): with %d "
                    "workers each learns the others' counts only at their flushes (USAGE_FLUSH_SECONDS), so a "
                    "tenant can go past its plan's monthly limit by what the others counted since; set "
                    "USAGE_STORAGE_URI to a Redis URL for an exact limit (docs/usage.md)", workers)
