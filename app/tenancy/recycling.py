"""Replace a pooled connection once it has served N distinct tenants: a bound on backend memory.

A PostgreSQL backend caches the catalog entries (relcache, catcache) of every table it
touches, about 48 KB per tenant schema here, and frees them only when it disconnects;
``DISCARD ALL`` does not. A pooled connection that serves thousands of tenants grows to
hundreds of MB, whatever its age, so ``DB_POOL_RECYCLE`` (a lifetime in seconds) does
not bound it: a busy hour can touch every tenant. This module bounds the count instead.

Each pooled DBAPI connection carries, in its pool record's ``info``, the set of tenant
search paths its transactions have been bound to (:func:`note_search_path`, called by
:mod:`app.tenancy.binding` whenever it puts a tenant schema on the search_path). When a
connection comes back to the pool having served ``after_tenants`` distinct tenants, it
is closed at that check-in: the transaction is over by then (the pool has rolled back
or the session committed), so no statement and no request can fail because of it, and
the pool opens a fresh backend on the next checkout.

The set lives and dies with the DBAPI connection (SQLAlchemy clears the record's
``info`` whenever it reconnects), holds at most ``after_tenants`` short strings, and
exists only on engines this module was installed on with a limit: nothing here grows
with the number of tenants.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

__all__ = ["install", "note_search_path", "tenants_served"]

# Keys in the pool record's info (shared by every checkout of the same DBAPI connection).
_SERVED = "tenantry.recycle.served"
_LIMIT = "tenantry.recycle.after_tenants"


def install(engine: Engine, after_tenants: int) -> None:
    """Close ``engine``'s pooled connections at check-in once they served ``after_tenants`` tenants.

    ``0`` installs nothing: no tracking, no recycling by tenant count (``pool_recycle``
    still applies). Install before the engine's first connection: a connection opened
    earlier is not tracked until it is replaced.
    """
    if after_tenants <= 0:
        return

    def start_tracking(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_SERVED] = set()
        record.info[_LIMIT] = after_tenants

    event.listen(engine.pool, "connect", start_tracking)
    event.listen(engine.pool, "checkin", _recycle_if_spent)


def note_search_path(connection: Connection, search_path: str) -> None:
    """Record that the open transaction on ``connection`` serves the tenant behind ``search_path``.

    A no-op on engines without :func:`install` (fan-out workers, scripts, tests' own
    engines), and cheap enough for every transaction: one set insertion.
    """
    served = connection.info.get(_SERVED)
    if served is not None:
        served.add(search_path)


def tenants_served(connection: Connection | ConnectionPoolEntry) -> int | None:
    """How many distinct tenants this pooled connection has served; ``None`` when untracked.

    Takes a :class:`~sqlalchemy.engine.Connection` or the pool record a pool event gets.
    """
    served = connection.info.get(_SERVED)
    return None if served is None else len(served)


def _recycle_if_spent(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # The pool has already reset the connection (rolled back) when "checkin" fires, so
    # closing it here cannot cut a transaction short. invalidate() closes the backend
    # now, freeing its memory at once, and logs rather than raises if closing fails.
    served = record.info.get(_SERVED)
    if dbapi_connection is None or served is None or len(served) < record.info[_LIMIT]:
        return
    log.info("closing a pooled connection that served %d tenants (DB_RECYCLE_AFTER_TENANTS)", len(served))
    record.invalidate()
