"""Who is calling: the admin bearer token, or a tenant API key that binds its tenant.

The tenant binding made here is undone in ``teardown_request``, so no request can
leave a tenant bound to the thread or task that served it.
"""

from __future__ import annotations

import hmac

from flask import current_app, g, request
from werkzeug.exceptions import Forbidden, Unauthorized

from app.extensions import db
from app.tenancy import api_keys
from app.tenancy.binding import apply_binding
from app.tenancy.context import TenantBinding, bind, unbind


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("Missing Authorization header; send 'Authorization: Bearer <token>'.")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Malformed Authorization header; expected 'Bearer <token>'.")
    return token.strip()


def require_admin() -> None:
    """``before_request`` of the admin API: the ADMIN_TOKEN, compared in constant time."""
    token = bearer_token()
    expected = current_app.config.get("ADMIN_TOKEN")
    if not expected:
        raise Unauthorized("The admin API is disabled: ADMIN_TOKEN is not configured.")
    if hmac.compare_digest(token.encode(), expected.encode()):
        return
    if api_keys.looks_like_api_key(token):
        raise Forbidden("Tenant API keys cannot use the admin API.")
    raise Unauthorized("Invalid admin token.")


def require_tenant_key() -> None:
    """``before_request`` of the tenant API: resolve the key, bind its tenant to this request.

    The key lookup opens the request's transaction; binding applies the tenant's
    search_path to that same transaction at once.
    """
    key, tenant = api_keys.authenticate(db.session(), bearer_token())
    g.api_key = key
    g.tenant = tenant
    g.tenant_token = bind(TenantBinding.for_slug(tenant.id, tenant.slug))
    apply_binding(db.session())


def release_tenant(exc: BaseException | None = None) -> None:
    """``teardown_request``: unbind whatever this request bound."""
    token = g.pop("tenant_token", None)
    if token is not None:
        unbind(token)
