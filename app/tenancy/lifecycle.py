"""A tenant after onboarding: rename, change plan, suspend, resume, delete.

Every change is one transaction of the caller's (nothing here commits), with its
platform audit event in it, and the billing event a billing system needs (a plan
change, an activation, suspension, resumption or deletion: :mod:`.billing`) written
last. Suspension and deletion take effect for the next request in every server
process: authentication reads the tenant and its key from the database on each
request, there is no cache to go stale.

Deletion drops the schema and the row together, under the tenant's advisory lock (the
one provisioning and the fan-out take), so a tenant is never deleted under a
migration or a provisioning of the same slug; a tenant that is busy gets
:class:`TenantBusy` rather than a wait of unknown length.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.models.public import TENANT_STATUSES, Plan, Tenant

from . import audit, billing, events, roles
from .errors import InvalidTenantChange, TenantBusy, TenantNotFound, UnknownPlan
from .locks import LOCK_NAMESPACE
from .naming import quote_ident
from .provisioning import TenantRecord

#: How long a deletion waits for the tenant's in-flight transactions to let go of its tables.
DELETE_LOCK_TIMEOUT = "5s"

_ACTIONS = {"active": "tenant.resumed", "suspended": "tenant.suspended", "pending": "tenant.pending"}


def update_tenant(
    session: Session,
    slug: str,
    *,
    name: str | None = None,
    plan: str | None = None,
    status: str | None = None,
) -> TenantRecord:
    """Apply the given changes (None leaves a field alone); one audit event per kind of change.

    The display name is only a label: the schema keeps its name, derived from the slug.

    :raise TenantNotFound, UnknownPlan, InvalidTenantChange: nothing was changed.
    """
    tenant = _locked(session, slug)
    if status is not None and status not in TENANT_STATUSES:
        raise InvalidTenantChange("status", f"Unknown status {status!r}; expected one of {TENANT_STATUSES}.")
    if name is not None and not name.strip():
        raise InvalidTenantChange("name", "The name must not be blank.")
    changed = False
    outbox: list[tuple[str, dict[str, Any]]] = []  # billing events, written last (billing.record)
    if name is not None and name != tenant.name:
        _event(session, tenant, "tenant.renamed", {"name": tenant.name}, {"name": name})
        tenant.name = name
        changed = True
    if plan is not None and plan != tenant.plan.name:
        new_plan = session.scalar(select(Plan).where(Plan.name == plan))
        if new_plan is None:
            raise UnknownPlan(plan)
        _event(session, tenant, "tenant.plan_changed", {"plan": tenant.plan.name}, {"plan": plan})
        outbox.append((billing.PLAN_CHANGED, {"plan": plan, "previous_plan": tenant.plan.name}))
        tenant.plan = new_plan
        changed = True
    if status is not None and status != tenant.status:
        action = "tenant.activated" if tenant.status == "pending" and status == "active" else _ACTIONS[status]
        _event(session, tenant, action, {"status": tenant.status}, {"status": status})
        if action in billing.STATUS_EVENTS:
            outbox.append((action, {"status": status, "previous_status": tenant.status}))
        tenant.status = status
        changed = True
    if changed:
        session.flush()
        session.refresh(tenant, ["updated_at"])
    for event_type, data in outbox:
        billing.record(session, event_type, tenant.id, tenant.slug, {"plan": tenant.plan.name, **data})
    return TenantRecord.of(tenant)


def delete_tenant(session: Session, slug: str) -> TenantRecord:
    """Drop the tenant's schema and its row (its keys go with it) in the session's transaction.

    :raise TenantNotFound: no such tenant.
    :raise TenantBusy: a migration or provisioning holds the tenant, or its tables stayed
        locked by in-flight requests for longer than ``DELETE_LOCK_TIMEOUT``.
    """
    connection = session.connection()
    taken = connection.exec_driver_sql(
        "SELECT pg_try_advisory_xact_lock(%(ns)s, hashtext(%(slug)s))", {"ns": LOCK_NAMESPACE, "slug": slug}
    ).scalar()
    if not taken:
        raise TenantBusy(slug, "it is being migrated or provisioned")
    tenant = _locked(session, slug)
    record = TenantRecord.of(tenant)
    _event(session, tenant, "tenant.deleted", {
        "name": tenant.name, "plan": tenant.plan.name, "status": tenant.status,
        "schema_revision": tenant.schema_revision,
    }, None)
    connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{DELETE_LOCK_TIMEOUT}'")
    try:
        connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(tenant.schema_name)} CASCADE")
    except OperationalError as exc:  # the caller rolls the whole transaction back
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise TenantBusy(slug, "its tables are in use by other transactions; try again") from exc
        raise
    connection.exec_driver_sql("SET LOCAL lock_timeout = DEFAULT")
    if tenant.db_role is not None:
        roles.drop_tenant_role(connection, tenant.db_role)  # it owned only the schema just dropped
    session.delete(tenant)
    session.flush()
    billing.record(session, billing.DELETED, record.id, record.slug,
                   {"plan": record.plan_name, "status": record.status})
    return record


def _locked(session: Session, slug: str) -> Tenant:
    """The tenant row, locked for this transaction (two changes to one tenant serialise)."""
    tenant = session.scalar(select(Tenant).where(Tenant.slug == slug).with_for_update(of=Tenant))
    if tenant is None:
        raise TenantNotFound(slug)
    return tenant


def _event(
    session: Session, tenant: Tenant, action: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> None:
    """The change's audit event, in its transaction, and its log line, once that commits."""
    audit.record_platform(
        session, action, "tenant", tenant.slug, tenant_id=tenant.id, tenant_slug=tenant.slug,
        before=before, after=after,
    )
    events.log_on_commit(session, action, tenant.slug, f"{action}: {tenant.slug}")
