"""API keys remember the member who created them: ``api_keys.created_by_member_id``

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

A key created by a person (a member's JWT, ``JWT_ROLE_SOURCE=member``) carries that
member's id; one created by another key, the admin API, the console or the CLI carries
null. No foreign key: members live in the tenant's schema, and the id stays as a label
after the member is removed. ``api_keys`` is a Citus local table on Citus; adding a
nullable column is a catalog change there too.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("created_by_member_id", sa.BigInteger(), nullable=True), schema="public")


def downgrade() -> None:
    op.drop_column("api_keys", "created_by_member_id", schema="public")
