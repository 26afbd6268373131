"""The bound tenant's own record, as ``GET /v1/tenant`` shows it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.models.public import Tenant
from app.tenancy.binding import platform_access
from app.tenancy.context import require_tenant
from app.tenancy.errors import TenantNotFound


def current_tenant(session: Session) -> Tenant:
    """The bound tenant's row, its plan loaded with it.

    Read here, not kept from authentication: a request's key lookup reads only the few
    columns every request needs (:class:`app.tenancy.api_keys.AuthenticatedKey`).
    """
    binding = require_tenant()
    with platform_access(session):  # the tenants table is platform data
        tenant = session.get(Tenant, binding.tenant_id)
    if tenant is None:
        raise TenantNotFound(binding.slug)
    return tenant
