"""API keys of the bound tenant, as its admins manage them: list, issue, revoke; and as an operator revokes them.

The keys live in ``public.api_keys`` (schema-qualified, so they resolve in a tenant
transaction whose search_path holds only the tenant's schema); the audit events go to
the tenant's own ``audit_events``, in the same transaction. Events never carry the
token or its hash. Functions never commit.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.models.public import ApiKey, Tenant
from app.pagination import Page
from app.tenancy import api_keys, audit, directory
from app.tenancy.api_keys import IssuedApiKey
from app.tenancy.binding import platform_access
from app.tenancy.context import require_tenant
from app.tenancy.errors import TenantNotFound

#: What an audit event shows of a key: never the token, never the hash.
AUDITED = ("prefix", "name", "role", "revoked_at")


def list_api_keys(session: Session, *, limit: int = 50, cursor: str | None = None) -> Page[ApiKey]:
    """The tenant's keys in id order, revoked ones included."""
    with platform_access(session):
        return api_keys.list_api_keys(session, require_tenant().tenant_id, limit=limit, cursor=cursor)


def create_api_key(session: Session, *, role: str, name: str | None = None) -> IssuedApiKey:
    """Issue a key; its token is in the result and nowhere else."""
    binding = require_tenant()
    # One query more: keys are issued rarely, and the tenant must still exist.
    with platform_access(session):
        tenant = session.get(Tenant, binding.tenant_id)
        if tenant is None:
            raise TenantNotFound(binding.slug)
        issued = api_keys.issue_api_key(session, tenant, role, name=name,  # flushed in here
                                        created_by_member_id=audit.current_actor().member_id)
    audit.record(session, "api_key.created", "api_key", issued.id,
                 after={"prefix": issued.prefix, "name": name, "role": role})
    return issued


def revoke_api_key(session: Session, key_id: int) -> ApiKey:
    """Revoke one of the tenant's keys (never its last active admin key)."""
    with platform_access(session):
        key = api_keys.revoke_api_key(session, require_tenant().tenant_id, key_id)
        session.flush()
    after = audit.snapshot(key, AUDITED)
    # Only an active key can be revoked, so before differs in revoked_at alone.
    audit.record(session, "api_key.revoked", "api_key", key_id,
                 before={**after, "revoked_at": None}, after=after)
    return key


def revoke_for_operator(session: Session, slug: str, key_id: int) -> ApiKey:
    """An operator (CLI or console) revokes a key of tenant ``slug``: a platform audit event, same rules.

    :raise TenantNotFound, ApiKeyNotFound, LastAdminKey, ApiKeyAlreadyRevoked: nothing changed.
    """
    tenant = directory.get_tenant(session, slug)
    key = api_keys.revoke_api_key(session, tenant.id, key_id)
    after = audit.snapshot(key, AUDITED)
    audit.record_platform(
        session, "api_key.revoked", "api_key", key_id, tenant_id=tenant.id, tenant_slug=slug,
        before={**after, "revoked_at": None}, after=after,
    )
    return key
