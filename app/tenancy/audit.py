"""The audit trail: who changed what, written in the same transaction as the change.

Two trails:

- **tenant events** (``audit_events`` in the tenant's schema): every mutating tenant
  request. The row is added to the session of the change, so it commits with it or
  not at all: a change that rolls back leaves no event, and no event exists without
  its change.
- **platform events** (``public.audit_events``): provisioning, suspension, resumption,
  deletion, plan changes, key revocations by an operator. The table has no foreign key
  to tenants, so the trail outlives the tenants it mentions.

Who acts is a context value (:func:`acting_as`), set once by whoever authenticated the
caller (the HTTP layer for a request, the CLI for a command), so services record events
without every function carrying an actor argument.
"""

from __future__ import annotations

import contextvars
import getpass
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models.public import PlatformAuditEvent
from app.models.tenant import AuditEvent
from app.pagination import Page, decode_cursor, make_page


@dataclass(frozen=True)
class Actor:
    """Who is acting: a tenant API key, a member (or JWT), the admin token, or an operator at the CLI."""

    label: str  # "api-key:42", "member:7", "jwt:<sub>", "admin-api", "cli:alice@host"
    api_key_id: int | None = None
    role: str | None = None
    request_id: str | None = None
    #: The member acting (a JWT matched to a member of the tenant); None for keys and operators.
    member_id: int | None = None


#: Changes made with no actor bound (scripts, tests) are recorded as the system's.
SYSTEM = Actor(label="system")


def os_user() -> str:
    """The operating-system user running this process (its uid when it has no passwd entry)."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry for this uid (containers)
        return str(os.getuid())


def cli_actor() -> Actor:
    """An operator at the command line: ``cli:<user>@<host>``."""
    return Actor(label=f"cli:{os_user()}@{socket.gethostname()}")


_actor: contextvars.ContextVar[Actor] = contextvars.ContextVar("tenantry_actor", default=SYSTEM)


def current_actor() -> Actor:
    return _actor.get()


def bind_actor(actor: Actor) -> contextvars.Token[Actor]:
    return _actor.set(actor)


def unbind_actor(token: contextvars.Token[Actor]) -> None:
    _actor.reset(token)


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def snapshot(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The named attributes of ``obj`` as JSON-ready values (for before/after)."""
    return {name: _jsonable(getattr(obj, name)) for name in fields}


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A compact before/after: only the fields that differ (all of them on create or delete)."""
    if before is None and after is None:
        return None
    if before is None or after is None:
        return {"before": dict(before) if before else None, "after": dict(after) if after else None}
    changed = [k for k in after if before.get(k) != after.get(k)]
    return {"before": {k: before.get(k) for k in changed}, "after": {k: after[k] for k in changed}}


def record(
    session: Session,
    action: str,
    resource: str,
    resource_id: object = None,
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    """Add a tenant event to the session (the bound tenant's schema, the change's transaction)."""
    actor = current_actor()
    session.add(AuditEvent(
        action=action, resource=resource,
        resource_id=None if resource_id is None else str(resource_id),
        api_key_id=actor.api_key_id, role=actor.role, request_id=actor.request_id,
        changes=changes(before, after), actor=actor.label, member_id=actor.member_id,
    ))


def record_platform(
    session: Session,
    action: str,
    resource: str,
    resource_id: object = None,
    *,
    tenant_id: int | None = None,
    tenant_slug: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    """Add a platform event to the session, in the transaction of the action it records."""
    actor = current_actor()
    session.add(PlatformAuditEvent(
        actor=actor.label, action=action, resource=resource,
        resource_id=None if resource_id is None else str(resource_id),
        tenant_id=tenant_id, tenant_slug=tenant_slug, request_id=actor.request_id,
        changes=changes(before, after),
    ))


def list_events(
    session: Session,
    *,
    platform: bool = False,
    limit: int = 50,
    cursor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
) -> Page[Any]:
    """Newest first, keyset-paginated on id; filter by action, a time range and (platform) tenant slug."""
    model: Any = PlatformAuditEvent if platform else AuditEvent
    stmt = select(model).order_by(model.id.desc()).limit(limit + 1)
    before_id = decode_cursor(cursor, int)
    if before_id is not None:
        stmt = stmt.where(model.id < before_id)
    if action is not None:
        stmt = stmt.where(model.action == action)
    if since is not None:
        stmt = stmt.where(model.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(model.occurred_at < until)
    if platform and tenant is not None:
        stmt = stmt.where(model.tenant_slug == tenant)
    rows = session.scalars(stmt).all()
    return make_page(rows, limit, lambda e: e.id)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value
