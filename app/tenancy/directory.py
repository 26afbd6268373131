"""Looking tenants up in ``public.tenants``: by slug, and page by page."""

from __future__ import annotations

from sqlalchemy import select
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


def list_tenants(session: Session, *, limit: int = 50, cursor: str | None = None) -> Page[Tenant]:
    """One page of tenants in slug order."""
    stmt = select(Tenant).order_by(Tenant.slug).limit(limit + 1)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Tenant.slug > after)
    return make_page(session.scalars(stmt).all(), limit, lambda t: t.slug)
