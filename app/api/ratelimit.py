"""Per-tenant rate limits, from the tenant's plan, counted with ``limits``.

One budget per tenant: ``rate_limit_per_minute`` of its plan (null: unlimited), shared
by every key of the tenant and every tenant endpoint, keyed by tenant id (never by
address: many tenants share a proxy's address, and one tenant calls from many).

The limit is checked once, right after authentication (:func:`check_tenant_rate`,
called by ``require_tenant_key``), because only then is the tenant known: every
tenant blueprint gets it without doing anything, and nothing else runs per request.
(flask-limiter, used before, added an app-level ``before_request`` to every request
and a ``flask limiter`` command that every ``flask`` invocation imported, rich and
all: about 0.08 s of CPU on each start of ``flask tenants migrate``.)

Counters live where ``RATELIMIT_STORAGE_URI`` says: ``memory://`` (the default) keeps
them in the process, so each worker process allows the full budget on its own;
``redis://`` shares them between every process and host. If Redis stops answering,
the limits are counted in memory, per process, until it answers again (tried again
after 1 s, then 2, 4 … at most 60 s), rather than failing every tenant request.

With ``memory://`` a tenant can make up to (worker processes x its rate) requests a
minute, and more when a worker restarts (its counts restart at zero): fine for one
process in development, not for production. /readyz says which storage counts
(:meth:`TenantRateLimiter.report`), and gunicorn logs a warning at start when it runs
more than one worker on ``memory://`` (:mod:`app.http_server`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from flask import Flask, current_app, g
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import STRATEGIES, RateLimiter
from werkzeug.exceptions import TooManyRequests

from app.backoff import Backoff

#: Where the app keeps its :class:`TenantRateLimiter` (one per app: its storage is per app).
EXTENSION = "tenantry_tenant_rate_limit"

log = logging.getLogger(__name__)


class TenantRateLimiter:
    """Counts each tenant's requests against its plan's rate, in one storage with a memory fallback."""

    def __init__(self, storage_uri: str, strategy: str = "fixed-window", prefix: str = "tenantry",
                 fall_back_to_memory: bool = True) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"RATELIMIT_STRATEGY must be one of {', '.join(sorted(STRATEGIES))}, not {strategy!r}")
        self.prefix = prefix
        self.scheme = storage_uri.partition(":")[0]
        storage = storage_from_string(storage_uri)
        if not isinstance(storage, Storage):  # limits' async storages (async+redis://…) serve asyncio apps
            raise ValueError(f"RATELIMIT_STORAGE_URI must name a synchronous storage, not {self.scheme!r}")
        self.storage: Storage = storage
        self._strategy = STRATEGIES[strategy]
        self._shared: RateLimiter = self._strategy(self.storage)
        self._can_fall_back = fall_back_to_memory and not isinstance(self.storage, MemoryStorage)
        self._fallback: RateLimiter | None = None  # made on the first failure: memory storage starts a thread
        self._lock = threading.Lock()  # the fallback is made once
        self._backoff = Backoff()  # when the shared storage is tried again after a failure

    def hit(self, tenant_id: int, per_minute: int) -> float | None:
        """Count one request of the tenant; ``None`` within budget, else seconds until its window resets."""
        item = RateLimitItemPerMinute(per_minute)
        key = f"tenant-{tenant_id}"  # the id, not the slug: a slug provisioned again is another tenant
        limiter = self._limiter()
        try:
            if limiter.hit(item, self.prefix, key):
                self._answered(limiter)
                return None
            reset_at = limiter.get_window_stats(item, self.prefix, key).reset_time
        except self.storage.base_exceptions as exc:
            if limiter is not self._shared or not self._can_fall_back:
                raise
            self._failed(exc)
            return self.hit(tenant_id, per_minute)
        self._answered(limiter)
        return reset_at - time.time()

    def report(self) -> dict[str, Any]:
        """Where the counts are kept, for /readyz (the scheme only: a URL may hold a password)."""
        shared = not isinstance(self.storage, MemoryStorage)
        report: dict[str, Any] = {"storage": self.scheme, "shared": shared}
        if not shared:
            report["detail"] = ("Counted in each worker process's memory: a tenant can make up to "
                                "(worker processes x its plan's rate) requests a minute, and its counts "
                                "restart when a worker does. Production needs Redis: RATELIMIT_STORAGE_URI=redis://...")
        elif self._fallback is not None and not self._backoff.due():
            report["detail"] = "The storage failed: counting in this process's memory until it answers again."
            report["shared"] = False
        return report

    def _limiter(self) -> RateLimiter:
        if self._fallback is None or self._backoff.due():
            return self._shared
        return self._fallback

    def _answered(self, limiter: RateLimiter) -> None:
        if limiter is self._shared and self._backoff.answered():  # once, however many threads saw it answer
            log.warning("rate-limit storage answers again: counting there", extra={"event": "ratelimit.storage_up"})

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            if self._fallback is None:
                self._fallback = self._strategy(MemoryStorage())
        _, waited = self._backoff.failed()
        log.warning(
            "rate-limit storage failed (%s): counting in this process's memory for %.0f s",
            type(exc).__name__, waited, extra={"event": "ratelimit.storage_down"},
        )


def init_app(app: Flask) -> None:
    """Give ``app`` its tenant rate limiter, on the storage its config names."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    # One counter per tenant, its minute starting at the first request: O(1) storage and an
    # exact Retry-After. (A burst may straddle two windows: up to twice the limit in a minute.)
    app.config.setdefault("RATELIMIT_STRATEGY", "fixed-window")
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "tenantry")
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.extensions[EXTENSION] = TenantRateLimiter(
        app.config["RATELIMIT_STORAGE_URI"],
        strategy=app.config["RATELIMIT_STRATEGY"],
        prefix=app.config["RATELIMIT_KEY_PREFIX"],
        fall_back_to_memory=app.config["RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"],
    )


def report(app: Flask) -> dict[str, Any]:
    """/readyz's view of rate limiting: see :meth:`TenantRateLimiter.report`."""
    return app.extensions[EXTENSION].report()


def check_tenant_rate() -> None:
    """Count this request against the bound tenant's budget; 429 with Retry-After when spent.

    Needs ``g.tenant_id`` and ``g.rate_limit_per_minute`` (its plan's), as ``require_tenant_key`` leaves them.
    """
    per_minute = g.rate_limit_per_minute
    if per_minute is None:
        return
    limiter: TenantRateLimiter = current_app.extensions[EXTENSION]
    wait = limiter.hit(g.tenant_id, per_minute)
    if wait is not None:
        retry_after = max(1, math.ceil(wait))
        raise TooManyRequests(
            f"This tenant's plan allows {per_minute} requests per minute; retry after {retry_after} s.",
            retry_after=retry_after,
        )
