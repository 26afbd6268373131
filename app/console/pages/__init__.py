"""The console's pages: one module per page family, all on one blueprint.

Each view reads its arguments, calls the core (:mod:`app.tenancy`) or a service
(:mod:`app.services`) once or a few times, and renders: the same functions the admin
API calls, so the lock, the validation and the audit event are the same, with the
actor ``console:<operator>``. The request's unit of work is the app's: committed after
a response below 400 (a redirect after a change), rolled back otherwise.

- ``blueprint``   the blueprint, its sign-in and CSRF checks, the console's 404
- ``session``     sign-in and sign-out
- ``overview``    the first page: counts, the last fan-out run, health, latest events
- ``tenants``     the tenant list, a tenant, and what an operator does to one
- ``plans``       plans with their limits, prices and tenants; create and change one
- ``migrations``  fan-out runs from the ledger and each run's per-tenant outcomes
- ``audit``       the platform audit trail, filtered by tenant, action and time
- ``forms``       form fields and query strings read through the admin API's schemas
"""

from __future__ import annotations

from . import audit, migrations, overview, plans, session, tenants
from .blueprint import bp

__all__ = ["audit", "bp", "migrations", "overview", "plans", "session", "tenants"]
