"""The JSON shape of a tenant, the same in every command that prints one."""

from __future__ import annotations

from typing import Any

from ..models.public import Tenant
from ..tenancy.provisioning import TenantRecord


def tenant_dict(tenant: Tenant | TenantRecord) -> dict[str, Any]:
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "schema_name": tenant.schema_name,
        "plan": tenant.plan_name,
        "status": tenant.status,
        "schema_revision": tenant.schema_revision,
        "created_at": tenant.created_at.isoformat(),
    }
