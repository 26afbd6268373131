"""Billing outbox: ``billing_events``, written in the transaction of the change it reports

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

- ``billing_events``: what a billing system needs (a plan changed; a tenant activated,
  suspended, resumed or deleted; a month closed with its final counts), one row per
  event, inserted by :mod:`app.tenancy.billing` in the same transaction as the change
  (a transactional outbox). ``id`` orders the stream (``GET /v1/admin/billing-events
  ?after=<id>``): every insert first takes one transaction-level advisory lock, so ids
  become visible in the order they were given and a reader past ``id`` never misses a
  smaller one committed later. ``idempotency_key`` (unique) is the key a consumer
  deduplicates on; for a closed month it is ``usage.period_closed:<tenant id>:<YYYY-MM>``,
  which makes ``flask usage close-period`` idempotent. The claim columns
  (``claim_token``, ``claimed_by``, ``claimed_until``, ``attempts``, ``acked_at``) let
  competing consumers take events with ``FOR UPDATE SKIP LOCKED``; the partial index
  ``ix_billing_events_unacked`` keeps a claim reading only what is left to deliver.
  No foreign key to ``tenants``: a deleted tenant's events are still owed.

On Citus (docs/scale-out.md, "Public tables"): nothing in a tenant schema references it
and only the coordinator reads and writes it, so it stays an ordinary coordinator table
(its identity column included), as ``audit_events`` and ``github_deliveries`` do.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("idempotency_key", sa.String(120), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        # No foreign key: the events outlive the tenant they bill.
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("tenant_slug", sa.String(40), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("claim_token", sa.Uuid(), nullable=True),
        sa.Column("claimed_by", sa.String(100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_billing_events"),
        sa.UniqueConstraint("idempotency_key", name="uq_billing_events_idempotency_key"),
        schema="public",
    )
    op.create_index("ix_billing_events_tenant_id", "billing_events", ["tenant_id"], schema="public")
    op.create_index("ix_billing_events_unacked", "billing_events", ["id"], schema="public",
                    postgresql_where=sa.text("acked_at IS NULL"))


def downgrade() -> None:
    op.drop_table("billing_events", schema="public")
