"""Which tenant the current unit of work belongs to.

A :class:`contextvars.ContextVar`, so it follows threads and asyncio tasks correctly
and works outside Flask (a worker, a script, a test). Binding a tenant is all that
code above the core ever does; :mod:`app.tenancy.binding` turns it into the
search_path of every transaction, and its ``tenant_scope`` binds for a block. This
module sits below binding and imports nothing of SQLAlchemy.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from .errors import TenantContextError
from .naming import quote_ident, schema_name_for


@dataclass(frozen=True, slots=True)
class TenantBinding:
    """The minimum the database layer needs to serve one tenant."""

    tenant_id: int
    slug: str
    schema_name: str
    #: The tenant's database role, taken for each transaction (None: the role layer is off).
    role: str | None = None

    @classmethod
    def for_slug(cls, tenant_id: int, slug: str, role: str | None = None) -> TenantBinding:
        return cls(tenant_id=tenant_id, slug=slug, schema_name=schema_name_for(slug), role=role)

    @property
    def quoted_schema(self) -> str:
        return quote_ident(self.schema_name)


_current: contextvars.ContextVar[TenantBinding | None] = contextvars.ContextVar(
    "tenantry_tenant", default=None
)


def current_tenant() -> TenantBinding | None:
    """The tenant bound to this context, or ``None``."""
    return _current.get()


def require_tenant() -> TenantBinding:
    """The tenant bound to this context; :class:`TenantContextError` when there is none."""
    binding = _current.get()
    if binding is None:
        raise TenantContextError(
            "No tenant is bound. Wrap the work in `with tenant_scope(tenant): ...` "
            "(in a request, authenticate with a tenant API key first)."
        )
    return binding


def bind(binding: TenantBinding | None) -> contextvars.Token[TenantBinding | None]:
    """Bind ``binding`` to the current context; pass the token to :func:`unbind` after."""
    return _current.set(binding)


def unbind(token: contextvars.Token[TenantBinding | None]) -> None:
    """Restore the binding that was current before the matching :func:`bind`."""
    _current.reset(token)
