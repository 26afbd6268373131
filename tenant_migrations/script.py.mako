"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Tenant-schema migration: runs once per tenant schema, in that schema's own
transaction, with search_path set to that schema only. Do not name a schema, never
reference ``public`` tables except plain reads of shared data, no triggers, every
table keeps a primary key (docs/architecture.md, "Citus-ready").
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
