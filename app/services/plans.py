"""Plans: what a tenant may use (repositories, requests per minute) and what it costs.

Platform data in ``public.plans``, changed through the admin API only. Every change
adds its platform audit event to the same transaction. A limit of ``None`` means
unlimited. Lowering a limit below what tenants use already is allowed: the quota
check then refuses further creates until their usage is back under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models.public import Plan
from app.tenancy import audit

from .errors import Conflict, NotFound

UPDATABLE = frozenset({"max_repositories", "rate_limit_per_minute", "monthly_price_cents"})
#: What an audit event shows of a plan.
AUDITED = ("name", "max_repositories", "rate_limit_per_minute", "monthly_price_cents")


def list_plans(session: Session) -> Sequence[Plan]:
    """Every plan, cheapest first (a handful of rows: no pagination)."""
    return session.scalars(select(Plan).order_by(Plan.monthly_price_cents, Plan.name)).all()


def get_plan(session: Session, name: str, *, for_update: bool = False) -> Plan:
    stmt = select(Plan).where(Plan.name == name)
    if for_update:  # NO KEY UPDATE: provisioning (a foreign key to the plan) need not wait for it
        stmt = stmt.with_for_update(key_share=True)
    plan = session.scalar(stmt)
    if plan is None:
        raise NotFound("plan", name)
    return plan


def create_plan(
    session: Session,
    *,
    name: str,
    max_repositories: int | None,
    rate_limit_per_minute: int | None,
    monthly_price_cents: int,
) -> Plan:
    """Insert a plan; :class:`Conflict` if the name is taken (also under races: one wins)."""
    stmt = (
        insert(Plan)
        .values(
            name=name,
            max_repositories=max_repositories,
            rate_limit_per_minute=rate_limit_per_minute,
            monthly_price_cents=monthly_price_cents,
        )
        .on_conflict_do_nothing(index_elements=[Plan.name])
        .returning(Plan)
    )
    created = session.scalars(stmt).one_or_none()
    if created is None:
        raise Conflict(f"A plan named {name!r} exists already.", "name")
    audit.record_platform(session, "plan.created", "plan", name, after=audit.snapshot(created, AUDITED))
    return created


def update_plan(session: Session, name: str, changes: dict[str, Any]) -> Plan:
    """Change limits and/or price. The row is locked first, so the audit's ``before`` is exact."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    plan = get_plan(session, name, for_update=True)
    before = audit.snapshot(plan, AUDITED)
    for field, value in changes.items():
        setattr(plan, field, value)
    after = audit.snapshot(plan, AUDITED)
    if after != before:
        audit.record_platform(session, "plan.updated", "plan", name, before=before, after=after)
    session.flush()
    return plan
