"""One measurement per request, reported twice: a log line (``app.requests``) and the request metrics.

``start`` is the first ``before_request`` and ``finish`` the last ``after_request``, so
the duration covers authentication and the COMMIT, and the status is the one sent
(after a failed COMMIT turned a 200 into a 503, say). Fields of the line: see
:mod:`app.logs`. The route is the URL rule, never the path: a path can carry ids, and
a query string can carry anything, credentials included.
"""

from __future__ import annotations

import logging
import time

from flask import Response, g, request

from app import metrics
from app.api.auth import request_id
from app.tenancy.audit import current_actor
from app.tenancy.context import current_tenant

log = logging.getLogger("app.requests")


def start() -> None:
    g.started = time.perf_counter()


def finish(response: Response) -> Response:
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    route = request.url_rule.rule if request.url_rule is not None else None
    method = request.method if request.method in metrics.METHODS else "OTHER"
    metrics.observe_request(method, route, response.status_code, seconds)
    # From the context: it is what the request was bound to, and reading it costs no query.
    tenant = current_tenant()
    duration_ms = round(seconds * 1000, 1)
    log.info(
        "%s %s %s %.1fms", method, route or metrics.UNMATCHED, response.status_code, duration_ms,
        extra={
            "event": "request", "request_id": request_id(), "tenant": tenant.slug if tenant is not None else None,
            "key_id": current_actor().api_key_id, "method": method, "route": route,
            "status": response.status_code, "duration_ms": duration_ms,
        },
    )
    return response
