"""GitHub App installations: a tenant may be one; webhook deliveries; tenant status ``pending``

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

- ``tenants.status`` may be ``pending``: provisioned (from a GitHub installation), not yet
  usable by API keys until an operator activates it.
- ``tenant_installations``: the GitHub App installation a tenant stands for, one row per
  linked tenant (an operator-provisioned tenant has none). A table of its own rather than
  columns of ``tenants``: the key lookup reads ``tenants`` on every request and needs none
  of this, and six nullable columns there would mean nothing for most tenants.
- ``github_deliveries``: every webhook delivery received, by its ``X-GitHub-Delivery`` id
  (unique: the idempotency key), with what came of it. No foreign key to tenants: like
  the platform audit trail, it outlives the tenants it mentions; purged by age.

On Citus (docs/scale-out.md, "Public tables"): nothing in a tenant schema references
either table, and only the coordinator reads them. ``tenant_installations`` references
``tenants`` (a Citus local table, chained to the reference table ``plans``), so Citus
makes it a Citus local table too when its foreign key is created, as it did for
``api_keys``; ``github_deliveries`` has no foreign key and stays an ordinary
coordinator table. Neither has an identity column Citus would have to copy
(``tenant_installations`` is keyed by its tenant), so nothing needs 0005's sequence care.
Checked on Citus 13.2.2 (coordinator and two workers): ``pg_dist_partition`` then lists
``tenant_installations`` as a Citus local table (``n``/``s``) and not
``github_deliveries``, and the webhook and sync tests pass there.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0001 named it before the naming convention applied to it: ck_tenants_ck_tenants_status_known.
    op.drop_constraint(op.f("ck_tenants_ck_tenants_status_known"), "tenants", schema="public")
    op.create_check_constraint(  # the convention's name: ck_tenants_status_known
        "status_known", "tenants", "status IN ('pending', 'active', 'suspended')", schema="public"
    )
    op.create_table(
        "tenant_installations",
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),
        sa.Column("installation_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("account_login", sa.String(100), nullable=False),
        sa.Column("account_type", sa.String(20), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("uninstalled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("account_type IN ('Organization', 'User')",
                           name="account_type_known"),
        sa.ForeignKeyConstraint(["tenant_id"], ["public.tenants.id"], ondelete="CASCADE",
                                name="fk_tenant_installations_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_tenant_installations"),
        sa.UniqueConstraint("installation_id", name="uq_tenant_installations_installation_id"),
        schema="public",
    )
    op.create_index("ix_tenant_installations_account_id", "tenant_installations", ["account_id"], schema="public")
    op.create_table(
        "github_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("delivery_id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(60), nullable=False),
        sa.Column("action", sa.String(60), nullable=True),
        sa.Column("installation_id", sa.BigInteger(), nullable=True),
        # No foreign key: the record outlives the tenant it mentions.
        sa.Column("tenant_id", sa.BigInteger(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.CheckConstraint("outcome IN ('applied', 'ignored', 'duplicate', 'failed')",
                           name="outcome_known"),
        sa.PrimaryKeyConstraint("id", name="pk_github_deliveries"),
        sa.UniqueConstraint("delivery_id", name="uq_github_deliveries_delivery_id"),
        schema="public",
    )
    op.create_index("ix_github_deliveries_received_at", "github_deliveries", ["received_at"], schema="public")
    op.create_index("ix_github_deliveries_installation_id", "github_deliveries", ["installation_id"],
                    schema="public")


def downgrade() -> None:
    op.drop_table("github_deliveries", schema="public")
    op.drop_table("tenant_installations", schema="public")
    op.execute("UPDATE public.tenants SET status = 'suspended' WHERE status = 'pending'")
    op.drop_constraint(op.f("ck_tenants_status_known"), "tenants", schema="public")
    op.create_check_constraint(
        op.f("ck_tenants_ck_tenants_status_known"), "tenants", "status IN ('active', 'suspended')", schema="public"
    )
