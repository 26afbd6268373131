"""The tenancy core: which schema a unit of work belongs to, and how tenants come to exist.

Contract of this package (like flask's ``sansio``): it never imports ``flask`` or
``app.api``. It takes a SQLAlchemy session or connection plus plain values, returns
domain objects and raises :class:`TenancyError` subclasses. The HTTP layer and the CLI
sit on top of it; anything else (a worker, a script, a test) can use it directly.

One module per concern (tests/unit/test_layering.py checks this list against the
files, and that imports between them run one way: no module imports one that imports
it back):

Naming and binding a tenant
- ``naming``        slug -> schema name, validation, quoting
- ``errors``        :class:`TenancyError` and its subclasses, each carrying what a client needs
- ``context``       which tenant the current unit of work belongs to (a contextvar)
- ``binding``       ``set_config('search_path', ..., true)`` on every transaction; deny by default;
  ``tenant_scope``
- ``roles``         a database role per tenant: the second wall behind the search_path
- ``recycling``     replace a pooled connection after N distinct tenants (backend memory)

Tenants and their keys
- ``directory``     look tenants up in ``public.tenants``
- ``provisioning``  create a tenant atomically (row + schema + migrations + first key)
- ``lifecycle``     rename, change plan, suspend, resume, delete
- ``api_keys``      issuing, checking, listing and revoking tenant API keys
- ``jwt_tokens``    signed bearer tokens instead of a stored API key
- ``members``       the people of a tenant: email normalisation, the first owner, signing in with a JWT
- ``audit``         who acts (a context value) and the two audit trails it writes
- ``events``        log lines about tenants, written when their transaction commits
- ``portability``   export one tenant to a file, import a file into a new tenant
- ``periods``       calendar months (UTC): the periods usage is counted and billed in
- ``usage``         usage metering: counts per tenant, metric and month, flushed in batches; monthly limits
- ``usage_redis``   usage counters in Redis (``USAGE_STORAGE_URI``): one total shared by every process
- ``billing``       the billing outbox: events written with their change, closed months, claims and acknowledgements

Schemas and their migrations
- ``locks``         advisory locks shared by provisioning, migrations and deletion
- ``pipeline``      many statements in one round trip (psycopg pipeline mode)
- ``migrations``    the tenant Alembic stream, run against one schema inside a caller's transaction
- ``fanout``        migrate many schemas: plan, parallel workers, the ledger
- ``fanout_worker`` one worker thread: pre-rendered SQL, handing over to ``fanout_online``
- ``fanout_online`` Alembic online, for what cannot be pre-rendered
- ``fanout_sql``    the statements and failure reports both migrators share
- ``ledger``        reading the fan-out ledger (runs and outcomes)
- ``drift``         does each schema hold what its revision says?

Citus (schema-based sharding)
- ``cluster``       is this a Citus coordinator, its nodes, where each schema lives
- ``placement``     moves, rebalancing, draining, adoption
- ``citus_rules``   what would break a tenant schema on Citus
"""

from .binding import tenant_scope
from .context import TenantBinding, current_tenant, require_tenant
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
