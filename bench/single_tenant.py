"""Single-tenant builds of the app, for bench/request_path.py: the same code minus the tenancy machinery.

    gunicorn -c gunicorn.conf.py 'bench.single_tenant:create()'    # BENCH_SCHEMA=t_..., BENCH_AUTH=key|none

:func:`create` builds the app exactly as ``wsgi.py`` does (``create_app()``, settings
from the environment), then takes out, and only takes out, what serving many tenants
adds to a request of the tenant API:

- **tenant resolution**: the ``before_request`` of the blueprints in :data:`BLUEPRINTS`,
  the ones bench/request_path.py calls (``tenant_key_required``: the API key joined
  with its tenant and plan in one statement that also binds the tenant's schema, the
  tenant hints, the tenant's rate limit), is replaced by :func:`key_required` (the
  ``single`` build, ``BENCH_AUTH=key``, the default) or by a hook that checks nothing
  (the ``bare`` build, ``BENCH_AUTH=none``). Both bind the fixed tenant to the context
  in Python, with no SQL.

  ``single`` still authenticates, as a single-tenant SaaS app serving these endpoints
  would: the bearer key is parsed the same way, read by its prefix from the same
  ``api_keys`` table (one indexed statement, plain columns, built once, as the
  multi-tenant lookup is), its hash compared in constant time, a revoked key refused,
  the role checked, and ``last_used_at`` touched at the end of the request by the same
  code. What it does not do is what tenancy adds: join the tenant and its plan, bind
  a schema, check hints, count a per-tenant budget. ``bare`` is the lower bound: an
  app with no authentication at all.
- **per-transaction binding**: the session listeners of :mod:`app.tenancy.binding`
  (``set_config('search_path', …, true)`` when a transaction begins, and the ORM
  guards: identity tokens, the checks on ``do_orm_execute`` and ``before_flush``) are
  removed. Instead each new pooled connection gets ``SET search_path TO "<schema>"``
  once, from the engine's ``connect`` event, as a single-tenant app on a dedicated
  schema would have it.

Everything else is the code of the multi-tenant app, unchanged: the same views,
schemas, services, SQL, pool (``pool_pre_ping`` included), the request-id and
unit-of-work hooks, the quota lock and plan read of a create (``reserve_repository``:
a plan belongs to the product, not to tenancy) and the audit event it writes. The
tenant stays bound to the context during the request, because the services read it
(``require_tenant()``); that costs a context variable, no SQL.

One thing is kept apart on purpose: the key of the quota lock. A create holds its
tenant's advisory lock (``hashtext(slug)``) until COMMIT, so creates of one tenant
queue. With one fixed slug, every create of the single build would queue behind the
previous one and POST would measure that lock, not the tenancy machinery; so the
bound slug is the request's API key prefix (one per tenant, read from the header with
a string split, no SQL), and creates meet on a lock exactly when the multi-tenant
app's would.

``BENCH_SCHEMA`` (a tenant schema, e.g. ``t_b000000``), ``BENCH_TENANT_ID``,
``BENCH_AUTH`` and the usual settings (``DATABASE_URL`` …) come from the environment;
this module is bench code and is never imported by the app.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import replace

from flask import Flask, g, request
from sqlalchemy import bindparam, event, select
from werkzeug.exceptions import Forbidden

from app import create_app
from app.api import auth
from app.extensions import db
from app.models.public import ApiKey
from app.tenancy import api_keys, audit, binding
from app.tenancy.context import TenantBinding, bind
from app.tenancy.errors import InvalidApiKey
from app.tenancy.naming import quote_ident

#: The tenant API's blueprints whose authentication is replaced (the ones bench/request_path.py calls).
BLUEPRINTS = ("repositories",)


def create() -> Flask:
    """gunicorn's entry point: the single-tenant build of ``create_app()`` for ``BENCH_SCHEMA``."""
    schema = os.environ["BENCH_SCHEMA"]
    tenant_id = int(os.environ.get("BENCH_TENANT_ID", "1"))
    authenticate = {"key": True, "none": False}[os.environ.get("BENCH_AUTH", "key")]
    return single_tenant(create_app(), TenantBinding(tenant_id, schema.removeprefix("t_"), schema), authenticate)


def single_tenant(app: Flask, tenant: TenantBinding, authenticate: bool = True) -> Flask:
    """Turn a freshly built app (no connection made yet) into one that serves ``tenant`` only.

    ``authenticate``: API keys are checked (the ``single`` build), or nothing is (``bare``).
    """
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
        bind_fixed_tenant("single-tenant")

    def bind_fixed_tenant(actor: str, api_key_id: int | None = None) -> None:
        # The quota lock's key only (see the module docstring): tnt_<prefix>_<secret> -> <prefix>.
        prefix = request.headers.get("Authorization", "").partition("_")[2].partition("_")[0]
        g.tenant_token = bind(replace(tenant, slug=prefix or tenant.slug))
        g.audit_token = audit.bind_actor(audit.Actor(
            label=actor, api_key_id=api_key_id, role=g.role, request_id=auth.request_id()))

    for name in BLUEPRINTS:
        app.before_request_funcs[name] = [key_required(bind_fixed_tenant) if authenticate else fixed_tenant]
    return app


#: The single build's key lookup: the key by prefix, plain columns, built once (as the
#: multi-tenant lookup is), with no tenant or plan to join and nothing to bind.
_KEY = select(
    ApiKey.__table__.c.id, ApiKey.__table__.c.role, ApiKey.__table__.c.last_used_at,
    ApiKey.__table__.c.secret_hash, ApiKey.__table__.c.revoked_at,
).where(ApiKey.__table__.c.prefix == bindparam("prefix"))


def key_required(bind_fixed_tenant: Callable[..., None]) -> Callable[[], None]:
    """The ``before_request`` of a single-tenant app with API keys: check the key and its role, then bind."""

    def check() -> None:
        parts = auth.bearer_token().split("_", 2)
        if len(parts) != 3 or parts[0] != api_keys.TOKEN_PREFIX or not parts[1] or not parts[2]:
            raise InvalidApiKey("Malformed API key.")
        _, prefix, secret = parts
        hashed = api_keys.hash_secret(secret)
        row = db.session.execute(_KEY, {"prefix": prefix}).first()
        expected = row.secret_hash if row else api_keys.hash_secret(prefix)
        if not hmac.compare_digest(expected, hashed) or row is None or row.revoked_at is not None:
            raise InvalidApiKey("Unknown API key.")
        g.api_key = row
        g.role = row.role
        needed = "viewer" if request.method in {"GET", "HEAD", "OPTIONS"} else "member"
        if auth._RANK[g.role] < auth._RANK[needed]:  # the tenant API's own role order
            raise Forbidden(f"This API key has role {g.role!r}; this needs {needed!r} or above.")
        auth._touch_at_the_end(row)  # the same touch as the multi-tenant app's, just before COMMIT
        bind_fixed_tenant(f"api-key:{row.id}", row.id)

    return check
