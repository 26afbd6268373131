"""plans, tenants, api_keys; seed the free, pro and enterprise plans

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    plans = op.create_table(
        "plans",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("max_repositories", sa.Integer(), nullable=True),
        sa.Column("monthly_price_cents", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
        sa.UniqueConstraint("name", name="uq_plans_name"),
        schema="public",
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("slug", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("schema_name", sa.String(63), nullable=False),
        sa.Column("plan_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), server_default="active", nullable=False),
        sa.Column("schema_revision", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("slug ~ '^[a-z][a-z0-9_]{1,39}$'", name="ck_tenants_slug_format"),
        sa.CheckConstraint("schema_name = 't_' || slug", name="ck_tenants_schema_name_derived"),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="ck_tenants_status_known"),
        sa.ForeignKeyConstraint(["plan_id"], ["public.plans.id"], name="fk_tenants_plan_id_plans"),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("slug", name="uq_tenants_slug"),
        sa.UniqueConstraint("schema_name", name="uq_tenants_schema_name"),
        schema="public",
    )
    op.create_index("ix_tenants_plan_id", "tenants", ["plan_id"], schema="public")
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'member', 'admin')", name="ck_api_keys_role_known"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["public.tenants.id"], name="fk_api_keys_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
        schema="public",
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"], schema="public")
    op.bulk_insert(
        plans,
        [
            {"name": "free", "max_repositories": 5, "monthly_price_cents": 0},
            {"name": "pro", "max_repositories": 50, "monthly_price_cents": 4900},
            {"name": "enterprise", "max_repositories": None, "monthly_price_cents": 49900},
        ],
    )


def downgrade() -> None:
    op.drop_table("api_keys", schema="public")
    op.drop_table("tenants", schema="public")
    op.drop_table("plans", schema="public")
