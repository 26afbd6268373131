"""members and invitations: the people of a tenant; audit events name who acted

Revision ID: t0003
Revises: t0002
Create Date: 2026-12-07

- ``members``: one row per person, by normalised email (unique in the tenant), with a
  role (owner > admin > member > viewer) and a status (invited, active, disabled). The
  identity provider's ``sub`` is unique when set. Citus rules: primary keys, foreign keys
  only inside the schema, no triggers (``updated_at`` is set by the ORM).
- ``invitations``: a one-time token (only its SHA-256 is stored) for an invited member,
  with its expiry and when it was accepted (kept, so a reused token is told apart from an
  unknown one). Deleting the member deletes its invitations.
- ``audit_events.actor`` and ``member_id``: every event says who acted (``member:3``,
  ``api-key:12``, ``jwt:<sub>``). No foreign key: the trail outlives the members it names.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "t0003"
down_revision = "t0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "members",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("subject", sa.String(190), nullable=True),
        sa.Column("invited_by", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('owner', 'admin', 'member', 'viewer')", name=op.f("ck_members_role_known")),
        sa.CheckConstraint("status IN ('invited', 'active', 'disabled')", name=op.f("ck_members_status_known")),
        sa.CheckConstraint("email = btrim(email) AND position('@' in email) > 1", name=op.f("ck_members_email_shape")),
        sa.PrimaryKeyConstraint("id", name="pk_members"),
        sa.UniqueConstraint("email", name="uq_members_email"),
        sa.UniqueConstraint("subject", name="uq_members_subject"),
    )
    op.create_index("ix_members_role_status", "members", ["role", "status"])
    op.create_table(
        "invitations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name="fk_invitations_member_id_members",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        sa.UniqueConstraint("token_hash", name="uq_invitations_token_hash"),
    )
    op.create_index("ix_invitations_member_id", "invitations", ["member_id"])
    op.add_column("audit_events", sa.Column("actor", sa.String(200), nullable=True))
    op.add_column("audit_events", sa.Column("member_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_events", "member_id")
    op.drop_column("audit_events", "actor")
    op.drop_table("invitations")
    op.drop_table("members")
