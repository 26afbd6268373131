"""A database role per tenant: the second wall behind the search_path.

Each tenant gets a ``NOLOGIN`` role that owns its schema and everything in it. Every
tenant transaction takes that role (``set_config('role', …, true)``, in the same
statement as its search_path), so from inside it another tenant's schema, named
explicitly, is ``permission denied``, and so are ``public.tenants`` and
``public.api_keys``. Code that must read platform tables in a tenant's transaction
says so with :func:`app.tenancy.binding.platform_access`.

This guards against bugs (a wrong search_path, raw SQL naming another schema), not
against SQL injection: injected SQL could ``RESET ROLE``.

Roles are cluster-wide while schemas live in one database, so a role's name carries a
prefix derived from the database (``tr<8 hex>_<slug>``): several databases on one
server (the test suite's among them) never collide.

Whether the layer is on is decided once per process (:func:`decide`): ``on``,
``off``, or ``auto``, which would turn it on only where it is cheap. Role membership is
cached per connection and every ``GRANT`` (every provisioning) throws that cache away
in every connection; the next ``SET ROLE`` on each connection rebuilds it over all
tenant roles. ``bench/roles.py`` measured that stall at 3-8 / 16-25 / 131 ms
(PostgreSQL 15) and 3 / 6-20 / 17 ms (18) at 1,000 / 3,000 / 10,000 tenants, over the
10 ms budget beyond about 1,000 tenants on both, so ``auto`` is off for now; ``on``
takes the cost knowingly. On Citus the layer stays off (:data:`CITUS_REASON`).
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .naming import quote_role

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.engine.interfaces import DBAPIConnection

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")

#: ``auto`` turns the layer on from this server version on; None: no server measured so far
#: stays within the budget (per-transaction overhead under 5%, the stall after a GRANT under
#: 10 ms) beyond about 1,000 tenants. bench/roles.py, docs/benchmarks.md#tenant-roles.
AUTO_MIN_SERVER_VERSION: int | None = None


@dataclass(frozen=True)
class Decision:
    active: bool
    reason: str


def role_prefix(database: str) -> str:
    """``tr`` + 8 hex digits of the database name + ``_``: unique per database on a cluster."""
    return "tr" + hashlib.sha256(database.encode()).hexdigest()[:8] + "_"


def role_name_for(connection: Connection, slug: str) -> str:
    database = connection.exec_driver_sql("SELECT current_database()").scalar_one()
    return role_prefix(database) + slug


_SERVER_FACTS = (
    "SELECT current_setting('server_version_num')::int,"
    " (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user),"
    " EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
)

#: Why the layer stays off on Citus. Measured on Citus 13.2: the coordinator opens its
#: connections to the workers as the current user, so a transaction that takes a tenant
#: role makes Citus log in to the worker as that role.
CITUS_REASON = (
    "on Citus the coordinator connects to the workers as the current user, so every tenant role "
    "would need to log in to every worker (credentials per tenant on each node, and a pool of "
    "worker connections per tenant); a role created in the provisioning transaction does not "
    "exist on the workers before it commits (docs/scale-out.md)"
)


def decide(connection: Connection, mode: str) -> Decision:
    """Whether tenant transactions take their tenant's role, and why (logged once by the caller)."""
    decision = _decide_without_server(mode)
    if decision is not None:
        return decision
    version, can_create, citus = connection.exec_driver_sql(_SERVER_FACTS).one()
    return _decide(mode, version, can_create, citus)


def _decide_without_server(mode: str) -> Decision | None:
    """The decision when the mode alone makes it (``off``); None when the server must be asked."""
    if mode not in MODES:
        raise ValueError(f"TENANT_ROLES must be one of {MODES}, not {mode!r}")
    return Decision(False, "TENANT_ROLES=off") if mode == "off" else None


def _decide(mode: str, version: int, can_create: bool, citus: bool = False) -> Decision:
    if citus:
        if mode == "on":
            raise RuntimeError(f"TENANT_ROLES=on is not supported: {CITUS_REASON}")
        return Decision(False, f"auto: {CITUS_REASON}")
    if not can_create:
        if mode == "on":
            raise RuntimeError("TENANT_ROLES=on, but the database user may not create roles (no CREATEROLE)")
        return Decision(False, "auto: the database user has no CREATEROLE")
    if mode == "on":
        return Decision(True, "TENANT_ROLES=on")
    if AUTO_MIN_SERVER_VERSION is None or version < AUTO_MIN_SERVER_VERSION:
        return Decision(False, f"auto: on PostgreSQL {version // 10000} every GRANT makes each pooled connection "
                               "re-check role membership over all tenant roles (16-25 ms at 3,000 tenants, "
                               "131 ms at 10,000 on PostgreSQL 15, docs/benchmarks.md); "
                               "set TENANT_ROLES=on to take that cost")
    return Decision(True, f"auto: PostgreSQL {version // 10000}")


_decisions: weakref.WeakKeyDictionary[Engine, Decision] = weakref.WeakKeyDictionary()


def active(engine: Engine, mode: str) -> bool:
    """Whether new tenants get a role on this engine's database: decided once, logged once.

    Only provisioning asks. A tenant provisioned with a role keeps taking it whatever
    the setting says later (its schema belongs to that role).
    """
    decision = _decisions.get(engine)
    if decision is None:
        with engine.connect() as connection:
            decision = decide(connection, mode)
        _remember(engine, decision)
    return decision.active


def _remember(engine: Engine, decision: Decision) -> None:
    if engine not in _decisions:
        _decisions[engine] = decision
        log.info("tenant database roles %s (%s)", "on" if decision.active else "off", decision.reason)


def decide_on_first_connect(engine: Engine, mode: str) -> None:
    """Log the role layer's mode now, and decide (and log) ``auto`` on the engine's first connection.

    The application factory never connects (it starts while the database may be down),
    so the decision waits for the first connection the pool opens, whatever opens it:
    a request, ``/readyz``, a CLI command.
    """
    from sqlalchemy import event

    decision = _decide_without_server(mode)
    if decision is not None:
        _remember(engine, decision)
        return
    log.info("tenant database roles: TENANT_ROLES=%s, decided on the first database connection", mode)

    def first_connect(dbapi_connection: DBAPIConnection, _record: object) -> None:
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(_SERVER_FACTS)
                [(version, can_create, citus)] = cursor.fetchall()
            finally:
                cursor.close()
                dbapi_connection.rollback()
            _remember(engine, _decide(mode, version, can_create, citus))
        except Exception as exc:  # e.g. on without CREATEROLE: provisioning raises it, with its message
            log.error("tenant database roles: %s", exc)

    event.listen(engine, "first_connect", first_connect)


def create_tenant_role(connection: Connection, role: str) -> None:
    """The tenant's role, and the right of the current (login) user to take it but not inherit it."""
    quoted = quote_role(role)
    connection.exec_driver_sql(f"CREATE ROLE {quoted} NOLOGIN")
    version = connection.exec_driver_sql("SELECT current_setting('server_version_num')::int").scalar_one()
    if version >= 160000:
        connection.exec_driver_sql(f"GRANT {quoted} TO CURRENT_USER WITH INHERIT FALSE, SET TRUE")
    else:  # PostgreSQL 15: inheritance is the login role's NOINHERIT attribute (docs/security.md)
        connection.exec_driver_sql(f"GRANT {quoted} TO CURRENT_USER")


def exists(connection: Connection, role: str) -> bool:
    return bool(connection.exec_driver_sql("SELECT 1 FROM pg_roles WHERE rolname = %(r)s", {"r": role}).scalar())


def drop_tenant_role(connection: Connection, role: str) -> None:
    """Drop the role (its schema must be gone already: DROP SCHEMA … CASCADE took its objects)."""
    connection.exec_driver_sql(f"DROP ROLE IF EXISTS {quote_role(role)}")


def become(connection: Connection, role: str | None) -> None:
    """Act as ``role`` until the transaction ends (``None``: as the login user again)."""
    connection.exec_driver_sql("SELECT set_config('role', %(r)s, true)", {"r": role or "none"})


def roles_with_prefix(connection: Connection, prefix: str) -> list[str]:
    """The roles of one database's tenants (tests and cleanup)."""
    return list(connection.exec_driver_sql(
        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %(p)s) ORDER BY 1", {"p": prefix}
    ).scalars())
