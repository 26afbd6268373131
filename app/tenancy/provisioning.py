"""Create a tenant: row, schema, migrations to head, first API key and first owner, all or nothing.

PostgreSQL DDL is transactional, so the whole onboarding is one transaction: a
failed migration, a lost connection or a duplicate slug leaves no schema, no row and
no key. Concurrent attempts on one slug are serialised by an advisory lock on the
slug; the loser waits for the winner's commit, then sees the row and gets
:class:`TenantAlreadyExists`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Select, Table, bindparam, insert, literal, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.models.public import TENANT_STATUSES, ApiKey, Plan, PlatformAuditEvent, Tenant

from . import audit, locks, members, roles
from .api_keys import TOKEN_PREFIX, IssuedApiKey, hash_secret, new_prefix_and_secret
from .binding import adopt, binding_sql, binding_statement, confirm_binding, opening_statement_binds
from .context import current_tenant
from .errors import ProvisioningFailed, ProvisioningInterrupted, TenancyError, TenantAlreadyExists, UnknownPlan
from .migrations import build_new_schema, head_revision
from .naming import quote_ident, quote_role, schema_name_for, validate_slug

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantRecord:
    """A tenant as it was committed: plain values, usable after the session is gone."""

    id: int
    slug: str
    name: str
    schema_name: str
    plan_name: str
    status: str
    schema_revision: str | None
    created_at: datetime
    updated_at: datetime
    db_role: str | None = None

    @classmethod
    def of(cls, tenant: Tenant) -> TenantRecord:
        return cls(**{f.name: getattr(tenant, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class ProvisionedTenant:
    tenant: TenantRecord
    admin_key: IssuedApiKey
    #: The first owner, when an owner email was given.
    owner: members.OwnerRecord | None = None


def provision_tenant(
    session: Session,
    *,
    slug: str,
    name: str,
    plan: str = "free",
    migrations_location: str | None = None,
    revision: str | None = None,
    tenant_role: bool = False,
    owner_email: str | None = None,
) -> ProvisionedTenant:
    """Owns its transaction: provision a tenant, then commit; on any failure roll back and raise.

    The session must have no transaction open (everything this function does must
    commit or vanish together, and nothing else with it). ``revision``: migrate the new
    schema to this revision of the tenant stream instead of head. ``tenant_role``: give
    the tenant a database role that owns its schema (:mod:`app.tenancy.roles`).
    ``owner_email``: the tenant's first member, an active owner, in the same transaction.

    :raise InvalidSlug: the slug breaks the naming rules (nothing was sent to the database).
    :raise InvalidEmail: ``owner_email`` is not an address (nothing was sent either).
    :raise UnknownPlan: no plan has that name.
    :raise TenantAlreadyExists: the slug, or its schema, is taken.
    :raise ProvisioningFailed: anything after validation failed; all of it was rolled back.
    """
    schema_name_for(validate_slug(slug))  # InvalidSlug before any SQL
    if owner_email is not None:
        owner_email = members.normalise_email(owner_email, "owner_email")  # InvalidEmail, no SQL either
    if session.in_transaction():
        raise RuntimeError("provision_tenant() needs a session with no open transaction")
    started = time.perf_counter()
    try:
        with session.begin():
            provisioned = provision_in_transaction(
                session, slug=slug, name=name, plan=plan, location=migrations_location, revision=revision,
                tenant_role=tenant_role, owner_email=owner_email,
            )
    except TenancyError as exc:
        _log_failure(slug, started, exc)
        raise
    except Exception as exc:  # a failed migration, a lost connection: already rolled back
        _log_failure(slug, started, exc)
        if _connection_lost(exc):
            raise ProvisioningInterrupted(slug, exc) from exc
        raise ProvisioningFailed(slug, exc) from exc
    log.info(
        "tenant.provisioned: %s", slug,
        extra={"event": "tenant.provisioned", "tenant": slug, "plan": plan,
               "schema_revision": provisioned.tenant.schema_revision, "duration_ms": _ms_since(started)},
    )
    return provisioned


def _connection_lost(exc: BaseException) -> bool:
    """The database went away under the transaction (terminated backend, restart, network),
    as SQLAlchemy recognises it or as psycopg reports it: not a bug of ours."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError)
    return isinstance(exc, psycopg.OperationalError)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _log_failure(slug: str, started: float, exc: BaseException) -> None:
    """A refusal (slug taken, unknown plan) is INFO; anything else is a WARNING (the caller logs the details)."""
    level = logging.INFO if isinstance(exc, TenancyError) else logging.WARNING
    log.log(
        level, "tenant.provisioning_failed: %s (%s)", slug, type(exc).__name__,
        extra={"event": "tenant.provisioning_failed", "tenant": slug, "error": type(exc).__name__,
               "duration_ms": _ms_since(started)},
    )


def provision_in_transaction(
    session: Session,
    *,
    slug: str,
    name: str,
    plan: str,
    location: str | None = None,
    revision: str | None = None,
    tenant_role: bool = False,
    status: str = "active",
    owner_email: str | None = None,
) -> ProvisionedTenant:
    """The body of :func:`provision_tenant`, in a transaction the caller owns and ends.

    For callers that do more in the same transaction (a tenant import loads its data
    before committing, a GitHub installation its repositories). Flushes, never commits;
    the caller rolls back on any error. ``revision``: the tenant-stream revision to
    migrate the new schema to (head when None). ``status``: ``pending`` for a tenant
    that exists but whose keys are refused until an operator activates it.
    """
    if status not in TENANT_STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {TENANT_STATUSES}")
    schema_name = schema_name_for(validate_slug(slug))
    caller = current_tenant()
    # The transaction's first statement binds it (the caller's binding, usually the deny
    # path) and takes the tenant's lock: one round trip, not two.
    statement, params = binding_statement(caller, reset_role=False, leaving=False)
    with opening_statement_binds(session):
        connection = session.connection()
        reported = connection.exec_driver_sql(
            f"{statement}, {locks.TENANT_LOCK_CALL}", {**params, **locks.tenant_lock_params(slug)}
        ).scalar()
    adopt(session, caller, reported)
    # After the lock, in a new snapshot, in one round trip: the plan, the slug, the schema name.
    params = {"slug": slug, "schema": schema_name, "plan": plan}
    row = session.execute(_CHECK, params).one_or_none()
    if row is None:  # no such plan; a taken slug still says so first
        if session.scalar(select(_TAKEN), params):
            raise TenantAlreadyExists(slug)
        raise UnknownPlan(plan)
    plan_id, plan_name, is_taken, orphan = row
    if is_taken:
        raise TenantAlreadyExists(slug)
    if orphan:  # a schema without a tenant row: never adopt it, someone must look at it
        raise TenantAlreadyExists(
            slug, f"schema {schema_name!r} exists without a tenant row; inspect and drop it first"
        )

    role = None
    if tenant_role:
        role = roles.role_name_for(connection, slug)
        if roles.exists(connection, role):
            raise TenantAlreadyExists(slug, f"role {role!r} exists without a tenant row; inspect and drop it first")
        roles.create_tenant_role(connection, role)
        # The schema and everything the migrations create belong to the tenant's role.
        # Created by the login user, then everything in it by the tenant's role.
        create = [
            f"CREATE SCHEMA {quote_ident(schema_name)} AUTHORIZATION {quote_role(role)}",
            f"SELECT set_config('role', {sql.Literal(role).as_string(None)}, true)",
        ]
    else:
        create = [f"CREATE SCHEMA {quote_ident(schema_name)}"]
    # Then, in the same round trip, back to the caller's binding, and off the tenant's role:
    # public.tenants and the first key are platform data.
    revision, restored = build_new_schema(
        connection, schema_name, revision or head_revision(location), location=location, create=create,
        then=binding_sql(caller, reset_role=role is not None),
    )
    confirm_binding(connection, caller, restored[0])

    provisioned = _insert_records(session, slug=slug, name=name, schema_name=schema_name, plan_id=plan_id,
                                  plan_name=plan_name, revision=revision, role=role,
                                  status=status)
    if owner_email is None:
        return provisioned
    owner = members.create_first_owner(session, schema_name, members.normalise_email(owner_email, "owner_email"),
                                       role=role)
    return replace(provisioned, owner=owner)




def _table(model: type[Any]) -> Table:
    """A mapped class's table (declarative types ``__table__`` as any FROM clause)."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


_tenants, _keys, _events, _plans = _table(Tenant), _table(ApiKey), _table(PlatformAuditEvent), _table(Plan)
_TAKEN = select(_tenants.c.id).where(_tenants.c.slug == bindparam("slug")).exists()
#: The plan by name, whether the slug is taken, whether its schema exists (an orphan).
#: Statements built once (as every statement of a hot path here): building them per call
#: cost more Python than their round trips.
_CHECK = select(
    _plans.c.id, _plans.c.name, _TAKEN,
    text("EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :schema)"),
).where(_plans.c.name == bindparam("plan"))


def _insert_records(
    session: Session, *, slug: str, name: str, schema_name: str, plan_id: int, plan_name: str,
    revision: str | None, role: str | None, status: str = "active",
) -> ProvisionedTenant:
    """The tenant row, its first (admin) key and the platform audit event: one statement.

    Three INSERTs chained by data-modifying CTEs (the key and the event take the new
    tenant's id from the first), all values bound parameters. Written in Core, not as
    three ORM objects flushed one by one: that was three round trips and the unit of
    work's Python, a good part of what onboarding added to its DDL.
    """
    prefix, secret = new_prefix_and_secret()
    actor = audit.current_actor()
    row = session.execute(_INSERT_RECORDS, {
        "slug": slug, "name": name, "schema_name": schema_name, "plan_id": plan_id, "revision": revision,
        "role": role, "status": status, "prefix": prefix, "secret_hash": hash_secret(secret), "actor": actor.label,
        "request_id": actor.request_id,
        "changes": audit.changes(None, {"name": name, "plan": plan_name, "schema_revision": revision,
                                        **({"status": status} if status != "active" else {})}),
    }).one()
    tenant = TenantRecord(slug=slug, name=name, schema_name=schema_name, plan_name=plan_name,
                          schema_revision=revision, db_role=role, **{f: row._mapping[f] for f in _TENANT_RETURNED})
    key = IssuedApiKey(id=row.key_id, prefix=prefix, role="admin", token=f"{TOKEN_PREFIX}_{prefix}_{secret}",
                       created_at=row.key_created_at)
    return ProvisionedTenant(tenant=tenant, admin_key=key)


def _build_insert_records() -> Select[Any]:
    new_tenant = (
        insert(_tenants)
        .values(slug=bindparam("slug"), name=bindparam("name"), schema_name=bindparam("schema_name"),
                plan_id=bindparam("plan_id"),
                schema_revision=bindparam("revision", type_=_tenants.c.schema_revision.type),
                db_role=bindparam("role", type_=_tenants.c.db_role.type),
                status=bindparam("status", type_=_tenants.c.status.type))  # explicit: no default in a CTE
        .returning(*(_tenants.c[f] for f in _TENANT_RETURNED))
        .cte("new_tenant")
    )
    new_key = (
        insert(_keys)
        .from_select(["tenant_id", "prefix", "secret_hash", "role"], select(
            new_tenant.c.id, bindparam("prefix", type_=_keys.c.prefix.type),
            bindparam("secret_hash", type_=_keys.c.secret_hash.type), literal("admin")))
        .returning(_keys.c.id, _keys.c.created_at, _keys.c.tenant_id)
        .cte("new_key")
    )
    new_event = insert(_events).from_select(
        ["actor", "action", "resource", "resource_id", "tenant_id", "tenant_slug", "request_id", "changes"],
        select(bindparam("actor", type_=_events.c.actor.type), literal("tenant.provisioned"), literal("tenant"),
               bindparam("slug", type_=_events.c.resource_id.type), new_tenant.c.id,
               bindparam("slug", type_=_events.c.tenant_slug.type),
               bindparam("request_id", type_=_events.c.request_id.type),
               bindparam("changes", type_=_events.c.changes.type)),
    ).cte("new_event")
    return (
        select(new_tenant, new_key.c.id.label("key_id"), new_key.c.created_at.label("key_created_at"))
        .join_from(new_tenant, new_key, new_key.c.tenant_id == new_tenant.c.id)
        .add_cte(new_event)
    )


#: What the database decides of a new tenant row (the rest is what the caller gave).
_TENANT_RETURNED = ("id", "status", "created_at", "updated_at")
_INSERT_RECORDS = _build_insert_records()
