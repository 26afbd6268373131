"""The overview: what an on-call engineer checks first; its last fan-out run section refreshes itself while running.

Its tenant counts (by status, by plan, behind the head) are the one part whose cost
grows with the number of tenants. Each is one grouped statement (no query per tenant;
"behind" is two index ranges, empty for a fleet at its head: migration 0006), but the
counts by status and by plan are a pass over every tenant however they are read: the
three take about 4 ms at 10,000 tenants and 45 ms at 100,000 (docs/benchmarks.md,
"Console at 10,000 tenants"). So they are kept for ``CONSOLE_COUNTS_TTL_SECONDS`` (10
by default) per process, and the page says when they were counted: the overview is
the page left open and reloaded, and with the cache its cost grows neither with how
often it is reloaded nor, between two counts, with the number of tenants.

Why a time bound and not counts kept up to date as tenants change: status, plan and
revision change from the admin API, the CLI and the fan-out, in other processes; an
incremental counter would have to be written by every one of them, in their
transactions, and would be one more thing to get wrong for a page that can be ten
seconds late. The lists stay exact: only the overview's numbers are cached. Tests set
the bound to 0 (:func:`app.testing.make_test_app`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app, render_template
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from app import public_migrations
from app.extensions import db
from app.models.public import MigrationRun, PlatformAuditEvent
from app.tenancy import audit, directory, ledger
from app.tenancy.migrations import head_revision

from .blueprint import bp

RECENT_EVENTS = 10
_COUNTS = "tenantry_console_counts"


@dataclass(frozen=True)
class TenantCounts:
    """The overview's tenant counts, as counted at ``counted_at``."""

    by_status: dict[str, int]
    by_plan: dict[str, int]
    tenant_head: str
    behind: int
    counted_at: datetime


@dataclass(frozen=True)
class Overview:
    counts: TenantCounts
    last_run: MigrationRun | None
    public_revision: str | None
    public_head: str | None
    pool_in_use: int | None
    pool_size: int | None
    events: list[PlatformAuditEvent]

    @property
    def tenants(self) -> int:
        return sum(self.counts.by_status.values())


def tenant_counts(session: Session, head: str) -> TenantCounts:
    """The counts, from this process's cache while younger than ``CONSOLE_COUNTS_TTL_SECONDS``, else counted now.

    The cache is one entry in ``app.extensions`` (a tuple replaced whole, so threads
    read either the old entry or the new one); a different tenant head counts afresh.
    """
    ttl = current_app.config["CONSOLE_COUNTS_TTL_SECONDS"]
    cached: tuple[float, TenantCounts] | None = current_app.extensions.get(_COUNTS)
    now = time.monotonic()
    if cached is not None and now - cached[0] < ttl and cached[1].tenant_head == head:
        return cached[1]
    counts = TenantCounts(
        by_status=directory.count_by_status(session),
        by_plan=directory.count_by_plan(session),
        tenant_head=head,
        behind=directory.count_behind(session, head),
        counted_at=datetime.now(UTC),
    )
    if ttl:
        current_app.extensions[_COUNTS] = (now, counts)
    return counts


@bp.get("/")
def overview() -> ResponseReturnValue:
    session = db.session()
    pool: Any = db.engine.pool
    data = Overview(
        counts=tenant_counts(session, head_revision(current_app.config["TENANT_MIGRATIONS_LOCATION"])),
        last_run=latest_run(session),
        public_revision=public_migrations.current_revision(session.connection()),
        public_head=public_migrations.head_revision(),
        pool_in_use=pool.checkedout() if hasattr(pool, "checkedout") else None,
        pool_size=pool.size() if hasattr(pool, "size") else None,
        events=list(audit.list_events(session, platform=True, limit=RECENT_EVENTS).items),
    )
    return render_template("console/overview.html", data=data, now=datetime.now(UTC),
                           counts_ttl=current_app.config["CONSOLE_COUNTS_TTL_SECONDS"])


@bp.get("/runs/latest/fragment")
def last_run() -> ResponseReturnValue:
    """The overview's last-run section alone: what console.js fetches every few seconds while the run goes on."""
    return render_template("console/last_run.html", run=latest_run(db.session()), now=datetime.now(UTC))


def latest_run(session: Session) -> MigrationRun | None:
    runs = ledger.list_runs(session, limit=1).items
    return runs[0] if runs else None
