"""plan rate limits, key names, the platform audit trail

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("plans", sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True), schema="public")
    op.create_check_constraint(
        "ck_plans_limits_positive", "plans",
        "(max_repositories IS NULL OR max_repositories >= 0)"
        " AND (rate_limit_per_minute IS NULL OR rate_limit_per_minute > 0)"
        " AND monthly_price_cents >= 0",
        schema="public",
    )
    op.execute(
        "UPDATE public.plans SET rate_limit_per_minute = CASE name"
        " WHEN 'free' THEN 60 WHEN 'pro' THEN 600 ELSE NULL END"
    )
    op.add_column("api_keys", sa.Column("name", sa.String(100), nullable=True), schema="public")
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        # No foreign key: the trail outlives the tenants it mentions.
        sa.Column("tenant_id", sa.BigInteger(), nullable=True),
        sa.Column("tenant_slug", sa.String(40), nullable=True),
        sa.Column("resource", sa.String(60), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        schema="public",
    )
    op.create_index("ix_audit_events_occurred_at_id", "audit_events", ["occurred_at", "id"], schema="public")
    op.create_index("ix_audit_events_tenant_slug", "audit_events", ["tenant_slug"], schema="public")


def downgrade() -> None:
    op.drop_table("audit_events", schema="public")
    op.drop_column("api_keys", "name", schema="public")
    op.drop_constraint("ck_plans_limits_positive", "plans", schema="public")
    op.drop_column("plans", "rate_limit_per_minute", schema="public")
