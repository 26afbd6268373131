"""Switch the search_path per transaction, never per session; deny by default.

Every transaction a session begins first runs::

    SELECT set_config('search_path', '"t_acme"', true), set_config('application_name', 'tenantry:acme', true)

``true`` makes the setting transaction-local (``SET LOCAL``): PostgreSQL reverts it at
COMMIT or ROLLBACK, whatever happens, so a pooled connection (or a PgBouncer server
connection in transaction mode) never carries one tenant's path into the next
transaction. The path holds only the tenant's schema: public models are
schema-qualified, and a missing tenant table must fail, not fall through to ``public``.

The same statement sets ``application_name`` (also transaction-local) to
``tenantry:<slug>``, so ``pg_stat_activity`` and the server log (``%a`` in
``log_line_prefix``) show which tenant a busy or slow backend is serving, at no extra
round trip; at COMMIT it reverts to the connection's own name.

With no tenant bound the path is ``pg_catalog``, where no tenant table exists, and the
ORM guards below raise :class:`TenantContextError` before a tenant model is read or
written. A tenant table is recognised by its schema: tenant tables have none (they
resolve through search_path); public tables always carry ``public``.

One transaction serves at most one tenant. Binding a tenant into a transaction that
already has one raises; binding a tenant into a transaction that has none yet (the API
key lookup ran first) switches that transaction at once.

Primary keys collide across schemas (both tenants have repository 1), so tenant rows
carry their schema in SQLAlchemy's identity key (the ``identity_token`` that the
horizontal-sharding extension uses for the same problem): one session can hold
tenant A's repository 1 and tenant B's repository 1 as two objects, and refreshing an
object of A while B is bound raises instead of loading B's row into it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import sql
from sqlalchemy import ColumnElement, and_, case, event, func, literal
from sqlalchemy.engine import Connection
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.orm.attributes import instance_state

from . import events
from .context import TenantBinding, bind, current_tenant, unbind
from .errors import TenantContextError
from .recycling import note_search_path

#: The search_path of a transaction with no tenant: nothing of ours resolves there.
DENY_SEARCH_PATH = "pg_catalog"

#: ``application_name`` of a transaction serving a tenant: this prefix and its slug
#: (at most 49 characters, under PostgreSQL's 63).
APPLICATION_NAME_PREFIX = "tenantry:"

_SET_SEARCH_PATH = "SELECT set_config('search_path', %(path)s, true)"
_SET_APPLICATION_NAME = "set_config('application_name', %(app)s, true)"
#: A transaction leaving its tenant goes back to the connection's own name (what RESET
#: would restore: the setting is only ever changed transaction-locally).
_RESET_APPLICATION_NAME = (
    "set_config('application_name', (SELECT reset_val FROM pg_settings WHERE name = 'application_name'), true)"
)
#: With the role layer on (app.tenancy.roles): the tenant's role too, in the same statement.
_SET_ROLE = "set_config('role', %(role)s, true)"

# session.info keys. APPLIED: what the open transaction's search_path was set to (a
# binding, or None for "deny"); absent when the transaction has no connection yet.
# SERVED: the tenant this transaction has served, once it served one.
_APPLIED = "tenantry.applied"
_SERVED = "tenantry.served"
# SELF_BOUND: the transaction about to begin takes its binding from its first statement
# (see opening_statement_binds); after_begin leaves it to that statement.
_SELF_BOUND = "tenantry.self_bound"


def search_path_for(binding: TenantBinding | None) -> str:
    """The exact search_path value a transaction gets for ``binding``."""
    return DENY_SEARCH_PATH if binding is None else binding.quoted_schema


def application_name_for(binding: TenantBinding) -> str:
    """The ``application_name`` of a transaction serving ``binding``."""
    return APPLICATION_NAME_PREFIX + binding.slug


def set_search_path(
    connection: Connection, binding: TenantBinding | None, *, reset_role: bool = False, leaving: bool = False
) -> None:
    """Make the open transaction on ``connection`` serve ``binding``, in one statement (bound parameters).

    A binding also names the transaction (``application_name``) and, with a role, takes
    that role for the rest of the transaction. ``leaving``: the transaction served a
    tenant until now, so its name goes back to the connection's; ``reset_role``: it
    held that tenant's role, so it returns to the login user.
    """
    path = search_path_for(binding)
    if binding is None and not (leaving or reset_role):  # the common case: a transaction begins unbound
        set_local_search_path(connection, path)
        return
    statement, params = binding_statement(binding, reset_role=reset_role, leaving=leaving)
    _confirm(connection, path, connection.exec_driver_sql(statement, params).scalar_one())


def binding_statement(
    binding: TenantBinding | None, *, reset_role: bool, leaving: bool
) -> tuple[str, dict[str, Any]]:
    """What :func:`set_search_path` sends: the statement and its parameters.

    The search_path is its first column (what :func:`adopt` verifies); a caller may add
    columns after it (onboarding adds its lock, see :func:`opening_statement_binds`).
    """
    role = binding.role if binding is not None else None
    columns = [_SET_SEARCH_PATH]
    params: dict[str, Any] = {"path": search_path_for(binding)}
    if binding is not None:
        columns.append(_SET_APPLICATION_NAME)
        params["app"] = application_name_for(binding)
    elif leaving:
        columns.append(_RESET_APPLICATION_NAME)
    if role is not None or reset_role:
        columns.append(_SET_ROLE)
        params["role"] = role or "none"
    return ", ".join(columns), params


def binding_sql(binding: TenantBinding | None, *, reset_role: bool = False) -> str:
    """The statement :func:`set_search_path` would send, with its values as quoted literals.

    For a caller that sends it in one message with other statements, where bound
    parameters cannot go (onboarding restores its caller's binding in the message that
    builds the schema). The values are a validated schema name, ``tenantry:<slug>`` and
    a generated role name, quoted by psycopg all the same. Check what it reports with
    :func:`confirm_binding`.
    """
    statement, params = binding_statement(binding, reset_role=reset_role, leaving=False)
    return statement % {k: sql.Literal(v).as_string(None) for k, v in params.items()}


def confirm_binding(connection: Connection, binding: TenantBinding | None, reported_path: object) -> None:
    """Check the search_path a :func:`binding_sql` statement reported (fail closed, as every binding)."""
    _confirm(connection, search_path_for(binding), reported_path)


@contextmanager
def platform_access(session: Session) -> Iterator[None]:
    """Read or write platform tables (``public.*``) inside a tenant's transaction.

    With the role layer on, the tenant's role may not touch ``public.tenants`` or
    ``public.api_keys``; the few tenant requests that must (a key's ``last_used_at``,
    the plan's limits, the tenant's own keys) say so here, and act as the login user
    for the block only. Greppable on purpose: every use is a place where tenant code
    reaches platform data. A no-op when the transaction holds no tenant role.
    """
    applied = session.info.get(_APPLIED)
    role = applied.role if applied is not None else None
    if role is None:
        yield
        return
    connection = session.connection()
    connection.exec_driver_sql("SELECT set_config('role', 'none', true)")
    try:
        yield
    finally:
        if not connection.invalidated and session.in_transaction():
            connection.exec_driver_sql("SELECT set_config('role', %(r)s, true)", {"r": role})


def set_local_search_path(connection: Connection, path: str) -> None:
    """``set_config('search_path', path, true)``: for the open transaction only."""
    _confirm(connection, path, connection.exec_driver_sql(_SET_SEARCH_PATH, {"path": path}).scalar())


def _confirm(connection: Connection, wanted: str, got: object) -> None:
    """Every path set goes through here.

    Fail closed if the server reports another path than the one just set (a proxy or a
    hook rewrote it): the statement's own result, so the check costs no round trip. A
    tenant's path then counts toward ``DB_RECYCLE_AFTER_TENANTS`` (:mod:`.recycling`).
    """
    if got != wanted:
        raise TenantContextError(f"search_path is {got!r} after setting {wanted!r}; refusing to go on")
    if wanted != DENY_SEARCH_PATH:
        note_search_path(connection, wanted)


def is_tenant_table(table: Any) -> bool:
    """Tenant tables carry no schema: they are resolved through search_path."""
    return getattr(table, "schema", "public") is None


def apply_binding(session: Session) -> None:
    """Bring the session's open transaction in line with the context's tenant, now.

    A no-op when the transaction has no connection yet (``after_begin`` will bind it)
    or is already bound as the context says.
    """
    if _APPLIED not in session.info:
        return
    binding = current_tenant()
    if session.info[_APPLIED] == binding:
        return
    served = session.info.get(_SERVED)
    if binding is not None and served is not None and served != binding:
        raise TenantContextError(
            f"This transaction already served tenant {served.slug!r}; it cannot serve "
            f"{binding.slug!r} too. Commit or roll back before switching tenants."
        )
    previous = session.info[_APPLIED]
    set_search_path(
        session.connection(), binding,
        reset_role=previous is not None and previous.role is not None, leaving=previous is not None,
    )
    _record(session, binding)


@contextmanager
def tenant_scope(
    tenant: TenantBinding | None, session: Session | None = None
) -> Iterator[TenantBinding | None]:
    """Run the block with ``tenant`` bound (``None`` binds no tenant).

    If ``session`` is given and already inside a transaction, the search_path of that
    transaction is switched at once (and switched back on exit); otherwise the next
    transaction picks the binding up when it begins.
    """
    token = bind(tenant)
    try:
        if session is not None and session.in_transaction():
            apply_binding(session)
        yield tenant
    except BaseException:
        # The transaction may be aborted: switching it back would raise over the real
        # error. The next statement re-syncs it (or the rollback discards it).
        unbind(token)
        raise
    unbind(token)
    if session is not None and session.in_transaction():
        apply_binding(session)


def _record(session: Session, binding: TenantBinding | None) -> None:
    session.info[_APPLIED] = binding
    if binding is not None:
        session.info[_SERVED] = binding


@contextmanager
def opening_statement_binds(session: Session) -> Iterator[None]:
    """The statement run inside this block sets the transaction's binding itself.

    For the credential lookup that opens a request's transaction
    (:func:`app.tenancy.api_keys.authenticate` with ``bind=True``): it sets the
    search_path, ``application_name`` and role of the key's tenant, or the deny path,
    in the same statement that finds the key, and :func:`adopt` then records what it
    reported. ``after_begin`` would otherwise spend a round trip on the deny path just
    before. Onboarding does the same with its tenant lock. When the session's
    transaction already has its connection, nothing is skipped (the statement still
    binds, over the path ``after_begin`` set). The flag never outlives
    the block: a lookup that raises before reaching the database leaves nothing behind.
    """
    if _APPLIED not in session.info:  # no connection in this transaction yet: after_begin is still to come
        session.info[_SELF_BOUND] = True
    try:
        yield
    finally:
        session.info.pop(_SELF_BOUND, None)


def binding_columns(
    *, good: ColumnElement[bool], schema_name: ColumnElement[str], slug: ColumnElement[str],
    role: ColumnElement[str | None],
) -> tuple[ColumnElement[str], ...]:
    """``set_config`` columns binding the transaction to the row's tenant when ``good``, else denying.

    For the opening statement of :func:`opening_statement_binds`. The search_path comes
    first (what :func:`adopt` verifies); the values are the ones :func:`set_search_path`
    would set for that tenant (``schema_name`` is a validated tenant schema name: the
    tenants table's CHECK constraint holds it to ``t_`` and a slug, so it needs no
    escaping inside the double quotes).
    """
    return (
        func.set_config("search_path", case(
            (good, literal('"') + schema_name + literal('"')), else_=literal(DENY_SEARCH_PATH)), True),
        func.set_config("application_name", case(
            (good, literal(APPLICATION_NAME_PREFIX) + slug), else_=func.current_setting("application_name")), True),
        func.set_config("role", case((and_(good, role.is_not(None)), role), else_=literal("none")), True),
    )


def adopt(session: Session, binding: TenantBinding | None, reported_path: str | None) -> None:
    """Record the binding an opening statement set (see :func:`opening_statement_binds`).

    ``reported_path``: the search_path that statement's ``set_config`` returned, checked
    like every other binding; None when the statement found no row and set nothing,
    in which case the deny path is set now.
    """
    if reported_path is None:  # whatever the statement may have set: deny, as the login user
        set_search_path(session.connection(), None, reset_role=True, leaving=True)
        _record(session, None)
        return
    _confirm(session.connection(), search_path_for(binding), reported_path)
    _record(session, binding)


def _after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if session.info.pop(_SELF_BOUND, False):
        return  # the statement that opens this transaction binds it (opening_statement_binds)
    # SQLAlchemy's advice for this hook: use the Connection given, not the Session.
    binding = current_tenant()
    set_search_path(connection, binding)
    _record(session, binding)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the root transaction, not a savepoint
        session.info.pop(_SERVED, None)
        session.info.pop(_APPLIED, None)


def _do_orm_execute(state: ORMExecuteState) -> None:
    binding = current_tenant()
    touches_tenant = any(is_tenant_table(mapper.local_table) for mapper in state.all_mappers)
    if binding is None and touches_tenant:
        raise TenantContextError(
            "A tenant table was queried with no tenant bound. Wrap the work in "
            "`with tenant_scope(tenant): ...`."
        )
    if binding is not None and touches_tenant:
        owner = getattr(state.load_options, "_identity_token", None) if state.is_select else None
        if owner is not None and owner != binding.schema_name:
            raise TenantContextError(
                f"An object of {owner!r} was refreshed while {binding.schema_name!r} is bound."
            )
        state.update_execution_options(identity_token=binding.schema_name)
    apply_binding(state.session)


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    binding = current_tenant()
    tenant_objects = [
        obj for obj in (*session.new, *session.dirty, *session.deleted)
        if is_tenant_table(getattr(type(obj), "__table__", None))
    ]
    if tenant_objects:
        if binding is None:
            raise TenantContextError(
                "Tenant rows were written with no tenant bound. Wrap the work in "
                "`with tenant_scope(tenant): ...`."
            )
        _stamp_identity(tenant_objects, binding.schema_name)
    apply_binding(session)


def _stamp_identity(objects: list[Any], schema_name: str) -> None:
    """Give new tenant objects their schema as identity token; refuse another tenant's."""
    for obj in objects:
        state = instance_state(obj)
        if state.key is None:
            state.identity_token = schema_name
        elif state.identity_token != schema_name:
            raise TenantContextError(
                f"An object of {state.identity_token!r} was changed while {schema_name!r} is bound."
            )


#: Targets install() has equipped; weak, so a dead target's address can be reused safely.
_INSTALLED: weakref.WeakSet[Any] = weakref.WeakSet()

_LISTENERS = (
    ("after_begin", _after_begin),
    ("after_transaction_end", _after_transaction_end),
    ("do_orm_execute", _do_orm_execute),
    ("before_flush", _before_flush),
    *events.LISTENERS,  # tenant log lines written at COMMIT ride along: same sessions
)


def install(target: Any) -> None:
    """Install per-transaction binding (and :mod:`.events`) on a Session class, sessionmaker or scoped_session.

    Idempotent: installing twice on the same target does not bind twice. The targets
    already installed are remembered in a WeakSet, not asked of ``event.contains()``:
    SQLAlchemy keys that registry by ``id(target)``, and a sessionmaker freed by its
    reference count leaves its entry behind until the cyclic GC collects its Session
    subclass, so a new sessionmaker born at the same address looked installed and got
    no listeners at all, hence no search_path and no guard (this was the intermittent
    test failure of November 2026; ``tests/integration/test_binding.py`` reproduces it).
    """
    if target in _INSTALLED:
        return
    for name, listener in _LISTENERS:
        event.listen(target, name, listener)
    _INSTALLED.add(target)
