"""Mapped classes: ``public`` (shared, always schema-qualified) and ``tenant`` (no schema).

The two sides have separate MetaData objects, because each is migrated by its own
Alembic stream, and the absence of a schema is what marks a tenant table
(see :mod:`app.tenancy.binding`).
"""

from .public import ApiKey, Plan, PublicBase, Tenant
from .tenant import Invitation, Member, Repository, TenantBase

__all__ = ["ApiKey", "Invitation", "Member", "Plan", "PublicBase", "Repository", "Tenant", "TenantBase"]
