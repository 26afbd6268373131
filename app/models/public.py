"""Shared tables in the ``public`` schema: plans, tenants, API keys, the migration ledger, GitHub links.

Every table here carries ``schema="public"`` explicitly. Tenant transactions run with
a search_path that holds only the tenant's schema, so an unqualified public table
would not resolve there, which is the point.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .types import bigint_pk, created_at, updated_at

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TENANT_STATUSES = ("pending", "active", "suspended")
API_KEY_ROLES = ("viewer", "member", "admin")
RUN_STATUSES = ("running", "succeeded", "failed", "aborted")
OUTCOME_STATUSES = ("migrated", "current", "failed", "deleted")


class PublicBase(DeclarativeBase):
    metadata = MetaData(schema="public", naming_convention=NAMING_CONVENTION)


class Plan(PublicBase):
    """What a tenant pays for and what it may use."""

    __tablename__ = "plans"

    __table_args__ = (
        CheckConstraint(
            "(max_repositories IS NULL OR max_repositories >= 0)"
            " AND (rate_limit_per_minute IS NULL OR rate_limit_per_minute > 0)"
            " AND monthly_price_cents >= 0"
            " AND (max_api_requests_per_month IS NULL OR max_api_requests_per_month >= 0)",
            name="limits_positive",
        ),
    )

    id: Mapped[bigint_pk]
    name: Mapped[str] = mapped_column(String(40), unique=True)
    max_repositories: Mapped[int | None] = mapped_column(Integer)  # None = unlimited
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)  # None = unlimited
    max_api_requests_per_month: Mapped[int | None] = mapped_column(BigInteger)  # None = unlimited
    monthly_price_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[created_at]


class Tenant(PublicBase):
    """A customer, and the name of the schema that holds its data.

    The CHECK constraints repeat the slug rules of :mod:`app.tenancy.naming` in the
    database, so no code path (a manual INSERT included) can register a schema name
    that was not derived from a valid slug.
    """

    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint("slug ~ '^[a-z][a-z0-9_]{1,39}$'", name="slug_format"),
        CheckConstraint("schema_name = 't_' || slug", name="schema_name_derived"),
        CheckConstraint("status IN ('pending', 'active', 'suspended')", name="status_known"),
        # What answers the directory's filters, search and counts (migration 0006 says which does what).
        Index("ix_tenants_status_slug", "status", "slug"),
        Index("ix_tenants_plan_id_slug", "plan_id", "slug"),
        Index("ix_tenants_schema_revision", "schema_revision"),
        Index("ix_tenants_slug_pattern", "slug", postgresql_ops={"slug": "text_pattern_ops"}),
    )

    id: Mapped[bigint_pk]
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    schema_name: Mapped[str] = mapped_column(String(63), unique=True)
    plan_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("public.plans.id"))
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    #: The tenant schema's Alembic revision as last applied (``None`` before the first).
    schema_revision: Mapped[str | None] = mapped_column(String(64))
    #: The NOLOGIN role that owns the schema (``None``: provisioned with the role layer off).
    db_role: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    plan: Mapped[Plan] = relationship(lazy="joined", innerjoin=True)

    # Fetch server-side timestamps in the INSERT's RETURNING: callers answer with them.
    __mapper_args__ = {"eager_defaults": True}

    @property
    def plan_name(self) -> str:
        return self.plan.name


# An expression index takes its operator class by label: declared once the column exists.
Index("ix_tenants_name_lower_pattern", func.lower(Tenant.name).label("name_lower"),
      postgresql_ops={"name_lower": "text_pattern_ops"})


class ApiKey(PublicBase):
    """A tenant API key: a public lookup prefix and a hash of the secret, never the secret."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'member', 'admin')", name="role_known"),
    )

    id: Mapped[bigint_pk]
    tenant_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("public.tenants.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(20))
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[created_at]
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The member whose JWT created the key (a label: members live in the tenant's schema, no foreign key).
    created_by_member_id: Mapped[int | None] = mapped_column(BigInteger)

    tenant: Mapped[Tenant] = relationship(lazy="raise")

    __mapper_args__ = {"eager_defaults": True}


class MigrationRun(PublicBase):
    """One ``flask tenants migrate`` run: what it aimed at, who started it, how it ended.

    Rows are never overwritten by a later run. ``status`` stays ``running`` while the
    run holds the fan-out lock; a run found ``running`` by the next one (which could
    only take the lock because the first one's connection is gone) becomes ``aborted``.
    """

    __tablename__ = "migration_runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'aborted')", name="status_known"
        ),
    )

    id: Mapped[bigint_pk]
    status: Mapped[str] = mapped_column(String(20), default="running", server_default="running")
    target_revision: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    started_by: Mapped[str] = mapped_column(String(200))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: The PostgreSQL backend holding the fan-out lock, to name the run that holds it.
    backend_pid: Mapped[int] = mapped_column(Integer)
    selected: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    migrated: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    current: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    remaining: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[created_at]
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __mapper_args__ = {"eager_defaults": True}


class MigrationOutcome(PublicBase):
    """What one run did to one tenant schema.

    A ``migrated`` or ``current`` row is written in the same transaction as the
    schema change, so it exists if and only if the change committed. ``failed`` rows
    are written after the schema's transaction rolled back.
    """

    __tablename__ = "migration_outcomes"
    __table_args__ = (
        UniqueConstraint("run_id", "tenant_slug"),
        CheckConstraint(
            "status IN ('migrated', 'current', 'failed', 'deleted')", name="status_known"
        ),
        Index("ix_migration_outcomes_tenant_id", "tenant_id"),
    )

    id: Mapped[bigint_pk]
    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("public.migration_runs.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("public.tenants.id", ondelete="SET NULL")
    )
    tenant_slug: Mapped[str] = mapped_column(String(40))
    from_revision: Mapped[str | None] = mapped_column(String(64))
    to_revision: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[created_at]


class PlatformAuditEvent(PublicBase):
    """A platform action (provision, suspend, resume, delete, plan change, operator revocation).

    No foreign key to tenants: the trail outlives the tenants it mentions.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_occurred_at_id", "occurred_at", "id"),)

    id: Mapped[bigint_pk]
    occurred_at: Mapped[created_at]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    tenant_id: Mapped[int | None] = mapped_column(BigInteger)
    tenant_slug: Mapped[str | None] = mapped_column(String(40), index=True)
    resource: Mapped[str] = mapped_column(String(60))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class UsageCounter(PublicBase):
    """One tenant's count of one metric in one UTC month (``period``: the month's first day).

    Written by the batched upserts of :mod:`app.tenancy.usage` only. No foreign key to
    tenants: the counts outlive the tenant they bill.
    """

    __tablename__ = "usage_counters"
    __table_args__ = (
        CheckConstraint("extract(day FROM period) = 1", name="period_is_month_start"),
        CheckConstraint("value >= 0", name="value_non_negative"),
        Index("ix_usage_counters_metric_period_value", "metric", "period", "value"),
    )

    tenant_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    period: Mapped[date] = mapped_column(Date, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[updated_at]


GITHUB_ACCOUNT_TYPES = ("Organization", "User")
DELIVERY_OUTCOMES = ("applied", "ignored", "duplicate", "failed")


class TenantInstallation(PublicBase):
    """The GitHub App installation a tenant stands for (operator-provisioned tenants have none).

    Keyed by its tenant (one installation per tenant) and unique by installation id (one
    tenant per installation). Kept after ``installation.deleted``: ``uninstalled_at`` says
    when, and ``flask tenants purge`` deletes such tenants later.
    """

    __tablename__ = "tenant_installations"
    __table_args__ = (
        CheckConstraint("account_type IN ('Organization', 'User')", name="account_type_known"),
        Index("ix_tenant_installations_account_id", "account_id"),
    )

    tenant_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("public.tenants.id", ondelete="CASCADE"), primary_key=True
    )
    installation_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    account_login: Mapped[str] = mapped_column(String(100))
    account_type: Mapped[str] = mapped_column(String(20))
    installed_at: Mapped[created_at]
    suspended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    uninstalled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[updated_at]


class GithubDelivery(PublicBase):
    """One GitHub webhook delivery, by its ``X-GitHub-Delivery`` id, and what came of it.

    ``payload`` (the body as received) is kept only for deliveries that were not applied
    (failed, or for an installation not known yet), so they can be replayed. No foreign
    key to tenants: the record outlives the tenant it mentions.
    """

    __tablename__ = "github_deliveries"
    __table_args__ = (
        CheckConstraint("outcome IN ('applied', 'ignored', 'duplicate', 'failed')", name="outcome_known"),
        Index("ix_github_deliveries_received_at", "received_at"),
        Index("ix_github_deliveries_installation_id", "installation_id"),
    )

    id: Mapped[bigint_pk]
    delivery_id: Mapped[str] = mapped_column(String(64), unique=True)
    event: Mapped[str] = mapped_column(String(60))
    action: Mapped[str | None] = mapped_column(String(60))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    tenant_id: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[created_at]
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[str | None] = mapped_column(Text)


BILLING_EVENT_TYPES = (
    "tenant.plan_changed", "tenant.activated", "tenant.suspended", "tenant.resumed", "tenant.deleted",
    "usage.period_closed",
)


class BillingEvent(PublicBase):
    """One event of the billing outbox, written in the transaction of its change (:mod:`app.tenancy.billing`).

    No foreign key to tenants: a deleted tenant's events are still owed.
    """

    __tablename__ = "billing_events"
    __table_args__ = (
        Index("ix_billing_events_unacked", "id", postgresql_where=text("acked_at IS NULL")),
    )

    id: Mapped[bigint_pk]
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    tenant_id: Mapped[int] = mapped_column(BigInteger, index=True)
    tenant_slug: Mapped[str | None] = mapped_column(String(40))
    occurred_at: Mapped[created_at]
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    claim_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
