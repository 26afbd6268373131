"""Tables inside each tenant schema. No schema here: search_path resolves them.

Citus-ready by construction (docs/architecture.md): every table has a primary key,
references only tables of its own schema, and uses no triggers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, MetaData, String, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .public import NAMING_CONVENTION
from .types import bigint_pk, created_at, updated_at


class TenantBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Repository(TenantBase):
    """A GitHub repository a tenant has connected."""

    __tablename__ = "repositories"
    __table_args__ = (Index("ix_repositories_name", "name"),)

    id: Mapped[bigint_pk]
    github_repo_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    full_name: Mapped[str] = mapped_column(String(201))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class AuditEvent(TenantBase):
    """One change to this tenant's data, written in the change's own transaction.

    A change that rolls back leaves no event, and an event never exists without its change.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_occurred_at_id", "occurred_at", "id"),
        Index("ix_audit_events_action", "action"),
    )

    id: Mapped[bigint_pk]
    occurred_at: Mapped[created_at]
    action: Mapped[str] = mapped_column(String(60))
    resource: Mapped[str] = mapped_column(String(60))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    api_key_id: Mapped[int | None] = mapped_column(BigInteger)
    role: Mapped[str | None] = mapped_column(String(20))
    request_id: Mapped[str | None] = mapped_column(String(64))
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
