"""Advisory locks, so provisioning, migrations and deletion of one tenant never interleave.

Transaction-level locks (``pg_advisory_xact_lock``) are released by COMMIT or ROLLBACK,
so a crashed worker can never leave one behind. The two-integer form keeps our locks
in a namespace of their own (``classid``) apart from any other application's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the fan-out worker imports LOCK_NAMESPACE without loading SQLAlchemy
    from sqlalchemy.engine import Connection

#: classid of every Tenantry advisory lock ("TN" in ASCII); objid is hashtext(slug).
LOCK_NAMESPACE = 0x544E


#: A tenant's transaction-level advisory lock as a call, for a statement that may do more
#: (see :func:`tenant_lock_params`): the tenant lock and the quota lock alike.
TENANT_LOCK_CALL = "pg_advisory_xact_lock(%(lock_ns)s, hashtext(%(lock_slug)s))"


def tenant_lock_params(slug: str, namespace: int = LOCK_NAMESPACE) -> dict[str, object]:
    """The parameters of :data:`TENANT_LOCK_CALL`: tenant ``slug``'s lock in ``namespace``."""
    return {"lock_ns": namespace, "lock_slug": slug}


def lock_tenant(connection: Connection, slug: str) -> None:
    """Wait for, then hold until the transaction ends, the lock on tenant ``slug``."""
    connection.exec_driver_sql(f"SELECT {TENANT_LOCK_CALL}", tenant_lock_params(slug))


#: classid of the per-tenant quota lock ("TQ"): a create checked against a plan quota
#: queues behind the other creates of its tenant, never behind a migration of its schema
#: (which holds the LOCK_NAMESPACE lock for as long as its DDL runs), and vice versa.
QUOTA_LOCK_NAMESPACE = 0x5451


def lock_tenant_quota(connection: Connection, slug: str) -> None:
    """Wait for, then hold until the transaction ends, the quota lock of tenant ``slug``."""
    connection.exec_driver_sql(f"SELECT {TENANT_LOCK_CALL}", tenant_lock_params(slug, QUOTA_LOCK_NAMESPACE))


#: classid of the per-installation lock ("TG"): every GitHub webhook delivery for one
#: installation queues here, before it takes the tenant lock (always in that order), so
#: an ``installation.created`` and the events racing it apply one after the other.
INSTALLATION_LOCK_NAMESPACE = 0x5447


def lock_installation(connection: Connection, installation_id: int) -> None:
    """Wait for, then hold until the transaction ends, the lock of GitHub installation ``installation_id``."""
    connection.exec_driver_sql(
        f"SELECT {TENANT_LOCK_CALL}", tenant_lock_params(str(installation_id), INSTALLATION_LOCK_NAMESPACE)
    )


#: classid/objid of the billing outbox lock ("TB"): every billing-event insert holds it
#: until COMMIT, so event ids are given out in commit order (app.tenancy.billing).
BILLING_LOCK = (0x5442, 1)


def lock_billing_outbox(connection: Connection) -> None:
    """Wait for, then hold until the transaction ends, the billing outbox's lock."""
    connection.exec_driver_sql(
        "SELECT pg_advisory_xact_lock(%(c)s, %(o)s)", {"c": BILLING_LOCK[0], "o": BILLING_LOCK[1]}
    )


#: classid of the fan-out lock ("TF"), apart from per-tenant locks so no slug can collide.
FANOUT_LOCK = (0x5446, 1)


def try_lock_fanout(connection: Connection) -> bool:
    """Take the database-wide fan-out lock for this session, or return False if it is held.

    Session-level on purpose: it must outlive the per-schema transactions of the run,
    and it vanishes with the connection if the run is killed.
    """
    return bool(connection.exec_driver_sql(
        "SELECT pg_try_advisory_lock(%(c)s, %(o)s)", {"c": FANOUT_LOCK[0], "o": FANOUT_LOCK[1]}
    ).scalar())


def unlock_fanout(connection: Connection) -> None:
    connection.exec_driver_sql(
        "SELECT pg_advisory_unlock(%(c)s, %(o)s)", {"c": FANOUT_LOCK[0], "o": FANOUT_LOCK[1]}
    )


def fanout_lock_holder(connection: Connection) -> int | None:
    """The backend pid holding the fan-out lock, if any."""
    return connection.exec_driver_sql(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = %(c)s AND objid = %(o)s AND objsubid = 2",
        {"c": FANOUT_LOCK[0], "o": FANOUT_LOCK[1]},
    ).scalar()
