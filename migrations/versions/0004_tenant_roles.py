"""tenants.db_role: the database role that owns the tenant's schema (when the role layer is on)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("db_role", sa.String(63), nullable=True), schema="public")


def downgrade() -> None:
    op.drop_column("tenants", "db_role", schema="public")
