"""Plan quotas of the bound tenant: what it uses against what its plan allows.

Counting and then inserting is a race on its own: two creates that both count 4 of 5
would both insert. So a create first takes a transaction-level advisory lock of the
tenant's own (:func:`app.tenancy.locks.lock_tenant_quota`), then counts. Concurrent
creates of one tenant queue on that lock, and each one counts after the one before it
committed: under READ COMMITTED every statement sees what committed before it started.
The lock goes with the transaction (COMMIT or ROLLBACK), so a crash never leaves one.

The limit is read from the plan at each check, so a plan change (a downgrade below
the current usage included) applies from the next create on. Usage over the limit
is allowed to stand; it only blocks further creates until it is back under.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models.public import Plan, Tenant
from app.models.tenant import Repository
from app.tenancy import usage as metering
from app.tenancy.binding import platform_access
from app.tenancy.context import require_tenant
from app.tenancy.locks import lock_tenant_quota

from .errors import QuotaExceeded


@dataclass(frozen=True)
class Usage:
    """How much of one quota the tenant uses; ``limit`` None means unlimited."""

    used: int
    limit: int | None


def usage(session: Session) -> dict[str, Usage]:
    """Every quota of the bound tenant, by name (what ``GET /v1/tenant`` shows).

    ``api_requests_this_month`` is the stored counter, as flushed (a primary-key read): a
    few seconds behind what the request path checks, which adds what is not flushed yet
    (:mod:`app.tenancy.usage`).
    """
    binding = require_tenant()
    key = (binding.tenant_id, metering.API_REQUESTS, metering.period_or_current(None))
    with platform_access(session):  # plans and usage counters are platform data
        repositories, requests = session.execute(
            select(Plan.max_repositories, Plan.max_api_requests_per_month)
            .join(Tenant, Tenant.plan_id == Plan.id).where(Tenant.id == binding.tenant_id)
        ).one()
        requested = metering.read_stored(session.connection(), key)
    return {"repositories": Usage(used=repository_count(session), limit=repositories),
            "api_requests_this_month": Usage(used=requested, limit=requests)}


def reserve_repository(session: Session) -> None:
    """Make sure the bound tenant may add one repository; hold its quota lock until the end.

    Call it in the transaction that inserts, before the insert.

    :raise QuotaExceeded: the tenant has ``max_repositories`` or more already.
    """
    binding = require_tenant()
    lock_tenant_quota(session.connection(), binding.slug)
    limit = _repository_limit(session, binding.tenant_id)
    if limit is None:
        return  # unlimited: no count(*) on every create
    used = repository_count(session)
    if used >= limit:
        raise QuotaExceeded("repositories", limit, used)


def repository_count(session: Session) -> int:
    """The bound tenant's repositories, counted."""
    return session.scalar(select(func.count()).select_from(Repository)) or 0


def _repository_limit(session: Session, tenant_id: int) -> int | None:
    with platform_access(session):  # the plan is platform data
        return session.scalar(
            select(Plan.max_repositories).join(Tenant, Tenant.plan_id == Plan.id).where(Tenant.id == tenant_id)
        )
