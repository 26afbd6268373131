"""migration ledger: runs and per-tenant outcomes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Public-schema migration. Runs with a lock_timeout set by env.py:
keep each step short, never rewrite a large table while holding a lock, and keep the
previous release working against the new schema (expand, then contract later).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('migration_runs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='running', nullable=False),
    sa.Column('target_revision', sa.String(length=64), nullable=False),
    sa.Column('options', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('started_by', sa.String(length=200), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('backend_pid', sa.Integer(), nullable=False),
    sa.Column('selected', sa.Integer(), server_default='0', nullable=False),
    sa.Column('migrated', sa.Integer(), server_default='0', nullable=False),
    sa.Column('current', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('skipped', sa.Integer(), server_default='0', nullable=False),
    sa.Column('remaining', sa.Integer(), server_default='0', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'aborted')",
                       name=op.f('ck_migration_runs_status_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_migration_runs')),
    schema='public'
    )
    op.create_table('migration_outcomes',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('tenant_id', sa.BigInteger(), nullable=True),
    sa.Column('tenant_slug', sa.String(length=40), nullable=False),
    sa.Column('from_revision', sa.String(length=64), nullable=True),
    sa.Column('to_revision', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='1', nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('migrated', 'current', 'failed', 'deleted')",
                       name=op.f('ck_migration_outcomes_status_known')),
    sa.ForeignKeyConstraint(['run_id'], ['public.migration_runs.id'],
                            name=op.f('fk_migration_outcomes_run_id_migration_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['public.tenants.id'],
                            name=op.f('fk_migration_outcomes_tenant_id_tenants'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_migration_outcomes')),
    sa.UniqueConstraint('run_id', 'tenant_slug', name=op.f('uq_migration_outcomes_run_id_tenant_slug')),
    schema='public'
    )
    op.create_index('ix_migration_outcomes_tenant_id', 'migration_outcomes', ['tenant_id'],
                    unique=False, schema='public')


def downgrade() -> None:
    op.drop_index('ix_migration_outcomes_tenant_id', table_name='migration_outcomes', schema='public')
    op.drop_table('migration_outcomes', schema='public')
    op.drop_table('migration_runs', schema='public')
