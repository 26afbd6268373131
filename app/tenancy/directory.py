"""Looking tenants up in ``public.tenants``: by slug, page by page (optionally by revision), counted."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models.public import Tenant
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
) -> Page[Tenant]:
    """One page of tenants in slug order, optionally filtered by schema revision.

    ``revision``: only tenants whose recorded ``schema_revision`` is exactly this.
    ``behind_of``: a revision (the tenant stream's head, usually) to compare with: only
    tenants not at it (``behind``, the default; a tenant with no revision recorded
    counts as behind), or with ``behind=False`` only those at it. Filters combine.
    """
    stmt = select(Tenant).order_by(Tenant.slug).limit(limit + 1)
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
