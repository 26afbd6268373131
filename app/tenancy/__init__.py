"""The tenancy core: which schema a unit of work belongs to, and how tenants come to exist.

Contract of this package (like flask's ``sansio``): it never imports ``flask`` or
``app.api``. It takes a SQLAlchemy session or connection plus plain values, returns
domain objects and raises :class:`TenancyError` subclasses. The HTTP layer and the CLI
sit on top of it; anything else (a worker, a script, a test) can use it directly.

One module per concern:

- ``naming``        slug -> schema name, validation, quoting
- ``context``       which tenant the current unit of work belongs to (a contextvar)
- ``binding``       ``set_config('search_path', ..., true)`` on every transaction; deny by default
- ``locks``         advisory locks shared by provisioning and migrations
- ``migrations``    the tenant Alembic stream, run against one schema inside a caller's transaction
- ``api_keys``      issuing, checking, listing and revoking tenant API keys
- ``provisioning``  create a tenant atomically (row + schema + migrations + first key)
- ``audit``         who acts (a context value) and the two audit trails it writes
- ``events``        log lines about tenants, written when their transaction commits
- ``portability``   export one tenant to a file, import a file into a new tenant
"""

from .context import TenantBinding, current_tenant, require_tenant, tenant_scope
from .errors import (
    InvalidApiKey,
    InvalidSlug,
    ProvisioningFailed,
    TenancyError,
    TenantAlreadyExists,
    TenantContextError,
    TenantNotFound,
    TenantSuspended,
    UnknownPlan,
)
from .naming import quote_ident, schema_name_for, validate_slug

__all__ = [
    "InvalidApiKey",
    "InvalidSlug",
    "ProvisioningFailed",
    "TenancyError",
    "TenantAlreadyExists",
    "TenantBinding",
    "TenantContextError",
    "TenantNotFound",
    "TenantSuspended",
    "UnknownPlan",
    "current_tenant",
    "quote_ident",
    "require_tenant",
    "schema_name_for",
    "tenant_scope",
    "validate_slug",
]
