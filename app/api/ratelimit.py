"""Per-tenant rate limits, from the tenant's plan, with flask-limiter.

One budget per tenant: ``rate_limit_per_minute`` of its plan (null: unlimited), shared
by every key of the tenant and every tenant endpoint, keyed by tenant id (never by
address: many tenants share a proxy's address, and one tenant calls from many).

flask-limiter checks its own limits in an app-level ``before_request``, which runs
before the blueprint hook that authenticates the key, when the tenant is not known
yet. So the limit here is a shared limit entered explicitly, right after
authentication (:func:`check_tenant_rate`, called by ``require_tenant_key``): every
tenant blueprint gets it without doing anything.

Counters live where ``RATELIMIT_STORAGE_URI`` says: ``memory://`` (the default) keeps
them in the process, so each worker process allows the full budget on its own;
``redis://`` shares them between every process and host. If Redis stops answering,
the limits are counted in memory, per process, until it answers again, rather than
failing every tenant request.
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, g
from flask_limiter import Limiter, RateLimitExceeded, RouteLimit
from werkzeug.exceptions import TooManyRequests

#: Where the app keeps its tenant limit (one Limiter per app: its storage is per app).
EXTENSION = "tenantry_tenant_rate_limit"


def init_app(app: Flask) -> None:
    """Give ``app`` a Limiter on its own storage, and the tenant limit to check against."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    # One counter per tenant, its minute starting at the first request: O(1) storage and an
    # exact Retry-After. (A burst may straddle two windows: up to twice the limit in a minute.)
    app.config.setdefault("RATELIMIT_STRATEGY", "fixed-window")
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "tenantry")
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    limiter = Limiter(key_func=_tenant_key)
    limiter.init_app(app)
    app.extensions[EXTENSION] = limiter.shared_limit(_plan_limit, scope="tenant")


def _tenant_key() -> str:
    # The id, not the slug: a slug provisioned again later is another tenant.
    return f"tenant-{g.tenant_id}"


def _plan_limit() -> str:
    per_minute = g.get("rate_limit_per_minute")
    if per_minute is None:
        # flask-limiter also reads this limit in its own before_request hook, before the
        # key is authenticated, to decide which limits that hook applies; it counts none
        # of them there. Any valid value will do.
        return "1 per minute"
    return f"{per_minute} per minute"


def check_tenant_rate() -> None:
    """Count this request against the bound tenant's budget; 429 with Retry-After when spent.

    Needs ``g.tenant_id`` and ``g.rate_limit_per_minute`` (its plan's), as ``require_tenant_key`` leaves them.
    """
    per_minute = g.rate_limit_per_minute
    if per_minute is None:
        return
    limit: RouteLimit = current_app.extensions[EXTENSION]
    try:
        with limit:
            pass
    except RateLimitExceeded:
        current = limit.limiter.current_limit
        # The window's own reset time: RequestLimit.reset_at rounds it up by a second more.
        reset_at = current.window.reset_time if current is not None else time.time() + 60
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise TooManyRequests(
            f"This tenant's plan allows {per_minute} requests per minute; retry after {retry_after} s.",
            retry_after=retry_after,
        ) from None
