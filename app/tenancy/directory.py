"""Looking tenants up in ``public.tenants``: by slug, page by page (filtered), counted.

Counts are grouped queries over ``public.tenants`` (one statement each, whatever the
number of tenants): never one query per tenant.

Every filter and the search here is written so that an index of migration 0006 finds
its tenants (issue 22: the console at 10,000 tenants): a filtered page is read in slug
order off ``(status, slug)`` or ``(plan_id, slug)``; the search is ``slug LIKE 'p%' OR
lower(name) LIKE lower('p%')``, two ranges of pattern-ops indexes (``name ILIKE`` could
use none); "behind a revision" is two ranges and ``IS NULL`` on ``schema_revision``
(``IS DISTINCT FROM`` could use none). The counts by status and by plan can be
answered from an index alone, but a count of every tenant is a pass over every tenant
whichever way it is read (the planner prefers the table, rightly): about 4 ms per
10,000 tenants for the three counts, so callers that repeat them (the console's
overview) keep them for a bounded time. tests/integration/test_directory_plans.py
holds each statement to its plan.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, or_, select
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
    whose slug or name starts with it (the name case-insensitively: both lowercased
    with PostgreSQL's ``lower()``). ``status`` and
    ``plan`` (a plan's name): equal to it. Filters combine.
    """
    stmt = select(Tenant).limit(limit + 1)
    order: ColumnElement[str] = Tenant.slug.expression
    if prefix:
        pattern = _escape_like(prefix) + "%"
        stmt = stmt.where(or_(
            Tenant.slug.like(pattern, escape="\\"),
            func.lower(Tenant.name).like(func.lower(pattern), escape="\\"),
        ))
        # The same order (a slug is lowercase: ck_tenants_slug_format), but one no index
        # gives: else the planner may walk the slug index up to the page's last match,
        # and a name's matches sit together in slug order (a slug is usually made from the
        # name), so a prefix late in the alphabet had it read nearly every tenant (61 ms
        # at 100,000). Now the two pattern indexes find the matches, then they are sorted:
        # the cost follows the number of matches, not where they are.
        order = func.lower(Tenant.slug)
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
        stmt = stmt.where(_behind(behind_of) if behind else Tenant.schema_revision == behind_of)
    return make_page(session.scalars(stmt.order_by(order)).all(), limit, lambda t: t.slug)


def count_behind(session: Session, head: str) -> int:
    """How many tenants have a recorded ``schema_revision`` other than ``head`` (none recorded counts)."""
    return session.execute(select(func.count()).select_from(Tenant).where(_behind(head))).scalar_one()


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


def _behind(head: str) -> ColumnElement[bool]:
    """``schema_revision IS DISTINCT FROM head``, as an index on ``schema_revision`` can answer it.

    Two ranges and ``IS NULL`` instead of ``<>``: a btree has no "not equal", so the
    direct form reads every tenant, while this one reads only the entries that are not
    ``head`` (none, for a fleet that is up to date). The same rows: the default
    collation is deterministic, so a revision is either equal to ``head``, below it or above it.
    """
    revision = Tenant.schema_revision
    return or_(revision < head, revision > head, revision.is_(None))


def _escape_like(text: str) -> str:
    """``text`` matched literally in a LIKE pattern (``%`` and ``_`` are not wildcards there)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
