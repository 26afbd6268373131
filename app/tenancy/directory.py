"""Looking tenants up in ``public.tenants``: by slug, page by page (filtered), counted.

Counts are grouped queries over ``public.tenants`` (one statement each, whatever the
number of tenants): never one query per tenant.
"""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.models.public import Plan, Tenant
from app.pagination import Page, decode_cursor, make_page

from .errors import TenantNotFound


def get_tenant(session: Session, slug: str) -> Tenant:
    """:raise TenantNotFound: no tenant has this slug."""
    tenant = session.scalar(select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        raise TenantNotFound(slug)
    return tenant


def list_tenants(
    session: Session,
    *,
    limit: int = 50,
    cursor: str | None = None,
    revision: str | None = None,
    behind_of: str | None = None,
    behind: bool = True,
    prefix: str | None = None,
    status: str | None = None,
    plan: str | None = None,
) -> Page[Tenant]:
    """One page of tenants in slug order, optionally filtered.

    ``revision``: only tenants whose recorded ``schema_revision`` is exactly this.
    ``behind_of``: a revision (the tenant stream's head, usually) to compare with: only
    tenants not at it (``behind``, the default; a tenant with no revision recorded
    counts as behind), or with ``behind=False`` only those at it. ``prefix``: tenants
    whose slug or name starts with it (the name case-insensitively). ``status`` and
    ``plan`` (a plan's name): equal to it. Filters combine.
    """
    stmt = select(Tenant).order_by(Tenant.slug).limit(limit + 1)
    if prefix:
        pattern = _escape_like(prefix) + "%"
        stmt = stmt.where(or_(Tenant.slug.like(pattern, escape="\\"), Tenant.name.ilike(pattern, escape="\\")))
    if status is not None:
        stmt = stmt.where(Tenant.status == status)
    if plan is not None:
        # The plan's id first (no join: see count_by_plan); an unknown name matches no tenant.
        plan_id = session.scalar(select(Plan.id).where(Plan.name == plan))
        stmt = stmt.where(Tenant.plan_id == plan_id)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Tenant.slug > after)
    if revision is not None:
        stmt = stmt.where(Tenant.schema_revision == revision)
    if behind_of is not None:
        stmt = stmt.where(
            Tenant.schema_revision.is_distinct_from(behind_of)
            if behind
            else Tenant.schema_revision.is_not_distinct_from(behind_of)
        )
    return make_page(session.scalars(stmt).all(), limit, lambda t: t.slug)


def count_behind(session: Session, head: str) -> int:
    """How many tenants have a recorded ``schema_revision`` other than ``head`` (none recorded counts)."""
    return session.execute(
        select(func.count()).select_from(Tenant).where(Tenant.schema_revision.is_distinct_from(head))
    ).scalar_one()


def count_by_status(session: Session) -> dict[str, int]:
    """How many tenants have each status (statuses no tenant has are left out)."""
    rows = session.execute(select(Tenant.status, func.count()).group_by(Tenant.status).order_by(Tenant.status))
    return {status: count for status, count in rows}


def count_by_plan(session: Session) -> dict[str, int]:
    """How many tenants are on each plan, every plan listed (0 for an unused one), by plan name.

    Two statements rather than a join: on Citus, plans is a reference table and tenants
    a coordinator-local one.
    """
    counts = {plan_id: count for plan_id, count in session.execute(
        select(Tenant.plan_id, func.count()).group_by(Tenant.plan_id))}
    plans = session.execute(select(Plan.id, Plan.name).order_by(Plan.name))
    return {name: counts.get(plan_id, 0) for plan_id, name in plans}


def _escape_like(text: str) -> str:
    """``text`` matched literally in a LIKE pattern (``%`` and ``_`` are not wildcards there)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
