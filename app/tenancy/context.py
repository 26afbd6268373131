"""Which tenant the current unit of work belongs to.

A :class:`contextvars.ContextVar`, so it follows threads and asyncio tasks correctly
and works outside Flask (a worker, a script, a test). Binding a tenant is all that
code above the core ever does; :mod:`app.tenancy.binding` turns it into the
search_path of every transaction.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import TenantContextError
from .naming import quote_ident, schema_name_for

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


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


@contextmanager
def tenant_scope(
    tenant: TenantBinding | None, session: Session | None = None
) -> Iterator[TenantBinding | None]:
    """Run the block with ``tenant`` bound (``None`` binds no tenant).

    If ``session`` is given and already inside a transaction, the search_path of that
    transaction is switched at once (and switched back on exit); otherwise the next
    transaction picks the binding up when it begins.
    """
    from .binding import apply_binding  # the one place context reaches binding

    token = _current.set(tenant)
    try:
        if session is not None and session.in_transaction():
            apply_binding(session)
        yield tenant
    except BaseException:
        # The transaction may be aborted: switching it back would raise over the real
        # error. The next statement re-syncs it (or the rollback discards it).
        _current.reset(token)
        raise
    _current.reset(token)
    if session is not None and session.in_transaction():
        apply_binding(session)
