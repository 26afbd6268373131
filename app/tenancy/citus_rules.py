"""What would break a tenant schema on Citus, read from the catalog (``flask tenants check --citus``).

Citus refuses most of these when the DDL runs (on one schema at provisioning, or on
every schema in the middle of a fan-out), and some only later, when a schema is moved.
Reading the catalog finds them first, on plain PostgreSQL as well as on a cluster, so a
tenant revision can be checked on a staging database before it is deployed.

Problems (``check`` exits 1):

- a table with neither a primary key nor a usable replica identity:
  ``citus_schema_move`` copies tables by logical replication, which needs one;
- a trigger: Citus refuses triggers on distributed tables unless
  ``citus.enable_unsafe_triggers`` is on, and then runs them on the worker;
- a foreign key to another tenant schema: a distributed schema's tables may only
  reference their own schema;
- a foreign key to a public table that is not a Citus reference table (on plain
  PostgreSQL no table is one).

Notes (reported, not failing): identity columns, since ``citus_schema_undistribute``
cannot bring a schema that has one back to the coordinator (every Tenantry tenant
table has one: leaving the cluster is export and import).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from . import cluster
from .naming import SCHEMA_PREFIX

_TABLES_WITHOUT_IDENTITY = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p')
  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
  AND c.relreplident NOT IN ('f', 'i')
ORDER BY 1
"""

_TRIGGERS = """
SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = %(schema)s::regnamespace AND NOT t.tgisinternal
ORDER BY 2, 1
"""

#: Foreign keys leaving the schema: (constraint, table, referenced schema, referenced table).
_FOREIGN_KEYS_OUT = """
SELECT k.conname, c.relname, rn.nspname, r.relname, r.oid
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_class r ON r.oid = k.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE k.contype = 'f' AND c.relnamespace = %(schema)s::regnamespace AND r.relnamespace <> c.relnamespace
ORDER BY 2, 1
"""

_IDENTITY_COLUMNS = """
SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p')
  AND a.attidentity <> '' AND NOT a.attisdropped
ORDER BY 1, 2
"""

_REFERENCE_TABLES = (
    "SELECT logicalrelid::oid FROM pg_dist_partition WHERE partmethod = 'n' AND repmodel = 't'"
)


@dataclass
class CitusFindings:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def reference_tables(connection: Connection) -> set[int]:
    """The oids of Citus reference tables in this database (none without Citus)."""
    if cluster.detect(connection) is None:
        return set()
    return set(connection.exec_driver_sql(_REFERENCE_TABLES).scalars())


def inspect(connection: Connection, schema_name: str, references: set[int]) -> CitusFindings:
    """The schema's Citus problems and notes (``references``: :func:`reference_tables`)."""
    found = CitusFindings()
    params = {"schema": schema_name}
    for (table,) in connection.exec_driver_sql(_TABLES_WITHOUT_IDENTITY, params):
        found.problems.append(
            f"citus: table {table} has no primary key or replica identity (citus_schema_move cannot move it online)")
    for trigger, table in connection.exec_driver_sql(_TRIGGERS, params):
        found.problems.append(
            f"citus: trigger {trigger} on {table} (Citus refuses triggers on distributed tables "
            "unless citus.enable_unsafe_triggers)")
    for constraint, table, schema, target, oid in connection.exec_driver_sql(_FOREIGN_KEYS_OUT, params):
        if schema.startswith(SCHEMA_PREFIX):
            found.problems.append(
                f"citus: foreign key {constraint} on {table} references another tenant schema ({schema}.{target})")
        elif oid not in references:
            found.problems.append(
                f"citus: foreign key {constraint} on {table} references {schema}.{target}, "
                "which is not a Citus reference table")
    identity = [f"{table}.{column}" for table, column in connection.exec_driver_sql(_IDENTITY_COLUMNS, params)]
    if identity:
        found.notes.append(
            f"citus: identity column(s) {', '.join(identity)}: citus_schema_undistribute cannot bring "
            "the schema back to the coordinator (leave the cluster by export and import)")
    return found
