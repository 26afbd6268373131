"""A single-tenant build of the app, for bench/request_path.py: the same code minus the tenancy machinery.

    gunicorn -c gunicorn.conf.py 'bench.single_tenant:create()'    # BENCH_SCHEMA=t_... and the usual env

:func:`create` builds the app exactly as ``wsgi.py`` does (``create_app()``, settings
from the environment), then takes out, and only takes out, what serving many tenants
adds to a request of the tenant API:

- **authentication and tenant resolution**: the ``before_request`` of the blueprints in
  :data:`BLUEPRINTS`, the ones bench/request_path.py calls (``tenant_key_required``: parse
  the bearer token, ``SELECT`` the key joined with its tenant and plan, compare the
  hash, check the tenant hints and the tenant's rate limit, and at the end of a
  successful request maybe ``UPDATE api_keys.last_used_at``), is replaced by a
  ``fixed_tenant`` hook that binds the fixed tenant to the context in Python, with no
  SQL (its slug aside, see below);
- **per-transaction binding**: the session listeners of :mod:`app.tenancy.binding`
  (``set_config('search_path', …, true)`` when a transaction begins and again when the
  key's tenant is applied, and the ORM guards: identity tokens, the checks on
  ``do_orm_execute`` and ``before_flush``) are removed. Instead each new pooled
  connection gets ``SET search_path TO "<schema>"`` once, from the engine's ``connect``
  event, as a single-tenant app on a dedicated schema would have it.

Everything else is the code of the multi-tenant app, unchanged: the same views,
schemas, services, SQL, pool (``pool_pre_ping`` included), the request-id and
unit-of-work hooks, the quota lock and plan read of a create (``reserve_repository``:
a plan belongs to the product, not to tenancy) and the audit event it writes (with a
fixed actor: ``single-tenant``, role ``admin``). The tenant stays bound to the context
during the request, because the services read it (``require_tenant()``); that costs a
context variable, no SQL.

One thing is kept apart on purpose: the key of the quota lock. A create holds its
tenant's advisory lock (``hashtext(slug)``) until COMMIT, so creates of one tenant
queue. With one fixed slug, every create of the single build would queue behind the
previous one and POST would measure that lock, not the tenancy machinery; so the
bound slug is the request's API key prefix (one per tenant, read from the header with
a string split, no SQL), and creates meet on a lock exactly when the multi-tenant
app's would.

``BENCH_SCHEMA`` (a tenant schema, e.g. ``t_b000000``), ``BENCH_TENANT_ID`` and the
usual settings (``DATABASE_URL`` …) come from the environment; this module is bench
code and is never imported by the app.
"""

from __future__ import annotations

import os
from dataclasses import replace

from flask import Flask, g, request
from sqlalchemy import event

from app import create_app
from app.api.auth import request_id
from app.extensions import db
from app.tenancy import audit, binding
from app.tenancy.context import TenantBinding, bind
from app.tenancy.naming import quote_ident

#: The tenant API's blueprints whose authentication is replaced (the ones bench/request_path.py calls).
BLUEPRINTS = ("repositories",)


def create() -> Flask:
    """gunicorn's entry point: the single-tenant build of ``create_app()`` for ``BENCH_SCHEMA``."""
    schema = os.environ["BENCH_SCHEMA"]
    tenant_id = int(os.environ.get("BENCH_TENANT_ID", "1"))
    return single_tenant(create_app(), TenantBinding(tenant_id, schema.removeprefix("t_"), schema))


def single_tenant(app: Flask, tenant: TenantBinding) -> Flask:
    """Turn a freshly built app (no connection made yet) into one that serves ``tenant`` only."""
    for name, listener in binding._LISTENERS:  # bench code: it needs the exact listeners install() added
        event.remove(db.session, name, listener)
    binding._INSTALLED.discard(db.session)
    with app.app_context():
        engine = db.engine
    path = quote_ident(tenant.schema_name)

    @event.listens_for(engine, "connect")
    def set_search_path_once(dbapi_connection, connection_record):  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET search_path TO {path}")
        dbapi_connection.commit()  # psycopg opened a transaction for it; the SET stays for the session

    with app.app_context():
        engine.dispose()  # nothing connected yet, normally; if something did, it had no path

    def fixed_tenant() -> None:
        g.api_key = None
        g.role = "admin"
        # The quota lock's key only (see the module docstring): tnt_<prefix>_<secret> -> <prefix>.
        prefix = request.headers.get("Authorization", "").partition("_")[2].partition("_")[0]
        g.tenant_token = bind(replace(tenant, slug=prefix or tenant.slug))
        g.audit_token = audit.bind_actor(audit.Actor(label="single-tenant", role="admin", request_id=request_id()))

    for name in BLUEPRINTS:
        app.before_request_funcs[name] = [fixed_tenant]
    return app
