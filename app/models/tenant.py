"""Tables inside each tenant schema. No schema here: search_path resolves them.

Citus-ready by construction (docs/architecture.md): every table has a primary key,
references only tables of its own schema, and uses no triggers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, MetaData, String, true
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
    #: Who acted: ``member:3``, ``api-key:12``, ``jwt:<sub>``, ``system`` (None: before t0003).
    actor: Mapped[str | None] = mapped_column(String(200))
    #: The member who acted, when a member did (no foreign key: the trail outlives members).
    member_id: Mapped[int | None] = mapped_column(BigInteger)


MEMBER_ROLES = ("viewer", "member", "admin", "owner")  # ordered: each includes the one before
MEMBER_STATUSES = ("invited", "active", "disabled")


class Member(TenantBase):
    """A person of the tenant: email (normalised, unique here), role, status, IdP subject.

    The role decides what the person may do when they authenticate with a JWT
    (:mod:`app.tenancy.members`); a token's own ``role`` claim is not used for members.
    """

    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint("role IN ('owner', 'admin', 'member', 'viewer')", name="role_known"),
        CheckConstraint("status IN ('invited', 'active', 'disabled')", name="status_known"),
        CheckConstraint("email = btrim(email) AND position('@' in email) > 1", name="email_shape"),
        Index("ix_members_role_status", "role", "status"),
    )

    id: Mapped[bigint_pk]
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str | None] = mapped_column(String(190), unique=True)
    invited_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __mapper_args__ = {"eager_defaults": True}


class Invitation(TenantBase):
    """A one-time invitation token of a member: only its SHA-256 is stored.

    Kept after acceptance (``accepted_at``), so a reused token is told apart from an unknown one.
    """

    __tablename__ = "invitations"

    id: Mapped[bigint_pk]
    member_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("members.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[created_at]
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
