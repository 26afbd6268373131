"""On Citus: plans become a reference table; every other public table stays on the coordinator

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

A no-op on plain PostgreSQL (no ``citus`` extension in the database).

Placed on purpose, table by table (docs/scale-out.md, "Public tables"):

- ``plans``: a **reference table**, copied to every worker. It is the one public table
  tenant data may reference (a tenant-side join to its plan's limits, a foreign key from
  a tenant table), and Citus allows that only to a reference table.
- ``tenants``, ``api_keys``, ``migration_runs``, ``migration_outcomes``: stay on the
  coordinator. Citus makes them "citus local tables" (its metadata knows them, their
  data stays on the coordinator) because they are chained to ``plans`` by foreign keys
  (``tenants.plan_id``), which Citus then requires; nothing in a tenant schema may
  reference them, and they are read by the coordinator alone (the key lookup, the
  ledger), so copying them to workers would only cost writes.
- ``audit_events``: stays an ordinary coordinator table (no foreign key chains it).

The identity sequences stay on the coordinator, which hands out every id (inserts go
through it); the conversion copies rows, so each sequence is set past the largest id
afterwards all the same, in two statements (a ``setval`` in a query that reads a
distributed table would run on a worker, where sequences are limited to that node's range).
"""
from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: Reference tables, and every table a conversion may touch (its id sequence is checked).
REFERENCE_TABLES = ("plans",)
CHAINED = ("plans", "tenants", "api_keys", "migration_runs", "migration_outcomes")


def _citus() -> bool:
    return bool(op.get_bind().exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')").scalar())


def _partition_method(table: str) -> str | None:
    return op.get_bind().exec_driver_sql(
        "SELECT partmethod::text FROM pg_dist_partition WHERE logicalrelid = to_regclass(%(t)s)",
        {"t": f"public.{table}"},
    ).scalar()


def _advance_sequences() -> None:
    bind = op.get_bind()
    for table in CHAINED:
        largest = bind.exec_driver_sql(f"SELECT coalesce(max(id), 0) FROM public.{table}").scalar_one()
        if largest:
            bind.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence(%(t)s, 'id'), greatest(%(n)s,"
                " (SELECT last_value FROM pg_sequences WHERE schemaname || '.' || sequencename ="
                "  pg_get_serial_sequence(%(t)s, 'id'))))",
                {"t": f"public.{table}", "n": largest},
            )


def upgrade() -> None:
    if not _citus():
        return
    bind = op.get_bind()
    for table in REFERENCE_TABLES:
        if _partition_method(table) is None:  # not yet known to Citus
            bind.exec_driver_sql("SELECT create_reference_table(%(t)s)", {"t": f"public.{table}"})
            # The rows now live in the table's shards; drop the coordinator's hidden local copy.
            bind.exec_driver_sql("SELECT truncate_local_data_after_distributing_table(%(t)s)",
                                 {"t": f"public.{table}"})
    _advance_sequences()


def downgrade() -> None:
    """Refused on Citus once converted: Citus cannot undistribute a table with an identity
    column ("cannot complete operation on a table with identity column", measured on 13.2),
    and every id here is one. A no-op on plain PostgreSQL."""
    if not _citus():
        return
    converted = [table for table in REFERENCE_TABLES if _partition_method(table) is not None]
    if converted:
        raise RuntimeError(
            f"0005 cannot be downgraded on Citus: {', '.join(converted)} is a reference table and Citus "
            "cannot undistribute a table with an identity column; restore a backup taken before 0005 instead"
        )
