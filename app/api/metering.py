"""Usage metering of the HTTP layer: every authenticated tenant request counts one ``api_requests``.

Called by ``require_tenant_key`` after the rate limit: a request refused before (bad
credential, hint mismatch, rate limit) is not counted, nor one refused here. One call,
:func:`app.tenancy.usage.check_and_count`, checks the monthly allowance and counts, so
a refused request is not counted either. With ``USAGE_STORAGE_URI=memory://`` the
check reads :func:`app.tenancy.usage.current` (a cached stored value plus this
process's unflushed count: no query on most requests, never a scan) and the count is a
dict update in memory; with a Redis URL both are one script in Redis
(:mod:`app.tenancy.usage_redis`). :mod:`app.tenancy.usage` writes the counts in batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine

from app.extensions import db
from app.tenancy import usage
from app.tenancy.binding import platform_access

if TYPE_CHECKING:
    from app.tenancy.usage_redis import RedisCounts

#: Where the app keeps its :class:`~app.tenancy.usage_redis.RedisCounts` (None: memory://).
EXTENSION = "tenantry_usage_counts"


def init_app(app: Flask) -> None:
    """Point the flusher at the app's database, at the app's interval."""
    app.config.setdefault("USAGE_METERING", True)
    app.config.setdefault("USAGE_FLUSH_SECONDS", 5)
    app.config.setdefault("USAGE_STORAGE_URI", "memory://")
    app.config.setdefault("USAGE_KEY_PREFIX", "tenantry-usage")
    app.extensions[EXTENSION] = None
    if app.config["USAGE_METERING"]:
        shared = app.extensions[EXTENSION] = usage.shared_store(app.config["USAGE_STORAGE_URI"],
                                                                app.config["USAGE_KEY_PREFIX"])
        with app.app_context():
            usage.configure(flusher_engine(db.engine, app.config), float(app.config["USAGE_FLUSH_SECONDS"]),
                            shared)


def flusher_engine(requests: Engine, config: Any) -> Engine:
    """The flusher's own pool of one connection to the requests' database.

    Not the request pool: a flush every few seconds would take one of its connections
    (a pool sized to the requests would serve one request fewer meanwhile, and its gauge
    would count the flush). No connection until the first flush; ``tenantry-usage`` in
    ``pg_stat_activity``; no server-side prepared statements, so it works through a
    transaction pooler whatever ``DB_PREPARE_THRESHOLD`` says.
    """
    return create_engine(
        requests.url, pool_size=1, max_overflow=0, pool_pre_ping=True,
        pool_recycle=config.get("DB_POOL_RECYCLE", 1800),
        connect_args={"application_name": "tenantry-usage", "prepare_threshold": None,
                      "connect_timeout": config.get("DB_CONNECT_TIMEOUT", 10)},
    )


def report(app: Flask) -> dict[str, Any]:
    """/readyz's view of usage counting: where counts are kept, and whether every process shares them."""
    if not app.config["USAGE_METERING"]:
        return {"storage": "off", "shared": False,
                "detail": "USAGE_METERING is off: nothing is counted and no monthly limit applies."}
    shared: RedisCounts | None = app.extensions[EXTENSION]
    if shared is None:
        return {"storage": "memory", "shared": False,
                "detail": "Counted in each worker process's memory: a monthly limit sees the other processes' "
                          "counts within two flush intervals, so a tenant can pass it by what they serve "
                          "meanwhile. Exact across processes: USAGE_STORAGE_URI=redis://..."}
    if shared.down:
        return {"storage": shared.scheme, "shared": False,
                "detail": "The storage failed: counting in this process's memory until it answers again."}
    return {"storage": shared.scheme, "shared": True}


def count_request(tenant_id: int, monthly_limit: int | None) -> None:
    """Refuse the request when the tenant used its month's allowance (429), else count it."""
    config = current_app.config
    if not config["USAGE_METERING"]:
        return
    usage.check_and_count(_read_stored, tenant_id, usage.API_REQUESTS, monthly_limit,
                          float(config["USAGE_FLUSH_SECONDS"]))


def _read_stored(key: usage.Key) -> int:
    """The stored counter, read in the request's transaction (public data: platform access)."""
    session = db.session()
    with platform_access(session):
        return usage.read_stored(session.connection(), key)
