"""Reading the tenant-migration ledger: ``public.migration_runs`` and ``public.migration_outcomes``.

The fan-out (:mod:`app.tenancy.fanout`) writes the ledger; this module only reads it,
one keyset page at a time: runs newest first, a run's outcomes in tenant slug order.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models.public import MigrationOutcome, MigrationRun
from app.pagination import Page, decode_cursor, make_page

from .errors import MigrationRunNotFound

#: Ids are ``bigint``: anything outside cannot name a run (and must not reach SQL as one).
_MAX_ID = 2**63 - 1


def list_runs(session: Session, *, limit: int = 50, cursor: str | None = None) -> Page[MigrationRun]:
    """One page of runs, newest first (id descending)."""
    stmt = select(MigrationRun).order_by(MigrationRun.id.desc()).limit(limit + 1)
    before = decode_cursor(cursor, int)
    if before is not None and before <= _MAX_ID:  # beyond bigint: every id is before it
        stmt = stmt.where(MigrationRun.id < max(before, 0))
    return make_page(session.scalars(stmt).all(), limit, lambda run: run.id)


def get_run(session: Session, run_id: int) -> MigrationRun:
    """:raise MigrationRunNotFound: the ledger has no such run."""
    run = session.get(MigrationRun, run_id) if 0 < run_id <= _MAX_ID else None
    if run is None:
        raise MigrationRunNotFound(run_id)
    return run


def list_outcomes(
    session: Session,
    run_id: int,
    *,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[MigrationOutcome]:
    """One page of a run's per-tenant outcomes in slug order; ``status`` filters when given.

    A run with no outcomes (or no such run) gives an empty page; use :func:`get_run`
    to tell the two apart.
    """
    stmt = (
        select(MigrationOutcome)
        .where(MigrationOutcome.run_id == run_id)
        .order_by(MigrationOutcome.tenant_slug)
        .limit(limit + 1)
    )
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(MigrationOutcome.tenant_slug > after)
    if status is not None:
        stmt = stmt.where(MigrationOutcome.status == status)
    return make_page(session.scalars(stmt).all(), limit, lambda outcome: outcome.tenant_slug)
