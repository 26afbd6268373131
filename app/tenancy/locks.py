"""Advisory locks, so provisioning, migrations and deletion of one tenant never interleave.

Transaction-level locks (``pg_advisory_xact_lock``) are released by COMMIT or ROLLBACK,
so a crashed worker can never leave one behind. The two-integer form keeps our locks
in a namespace of their own (``classid``) apart from any other application's.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

#: classid of every Tenantry advisory lock ("TN" in ASCII); objid is hashtext(slug).
LOCK_NAMESPACE = 0x544E


def lock_tenant(connection: Connection, slug: str) -> None:
    """Wait for, then hold until the transaction ends, the lock on tenant ``slug``."""
    connection.exec_driver_sql(
        "SELECT pg_advisory_xact_lock(%(ns)s, hashtext(%(slug)s))",
        {"ns": LOCK_NAMESPACE, "slug": slug},
    )
