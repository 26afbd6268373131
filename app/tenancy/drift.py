"""Drift detection: does each tenant schema contain what its revision says it should?

Three records of a schema's state can disagree: ``public.tenants.schema_revision``
(the ledger), the schema's own ``alembic_version`` row, and the catalog itself (a
column dropped by hand, an index left INVALID by a failed concurrent build). For
each revision in use, a reference catalog is built by migrating a scratch schema to
that revision inside a transaction that is rolled back; every tenant's catalog is
compared with the reference of the revision its ``alembic_version`` names.

With the role layer on (:mod:`app.tenancy.roles`), every object in the schema must
belong to the tenant's role: anything else is ownership drift (created by hand as
another user, say), reported like the rest.

The catalog is read with the tenant schema alone on the search_path, so index and
constraint definitions come back unqualified and compare across schemas.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from . import citus_rules, cluster, migrations
from .naming import quote_ident

#: (kind, name) -> definition, e.g. ("column", "repositories.owner") -> "character varying(100) NOT NULL"
Catalog = dict[tuple[str, str], str]

_CATALOG_SQL = """
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)
SELECT 'relation', c.relname, c.relkind::text
  FROM pg_class c JOIN ns ON c.relnamespace = ns.oid
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT 'column', c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
       || CASE WHEN a.attidentity <> '' THEN ' IDENTITY' ELSE '' END
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN ns ON c.relnamespace = ns.oid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION ALL
SELECT 'index', i.relname,
       pg_get_indexdef(i.oid) || CASE WHEN x.indisvalid THEN '' ELSE ' (INVALID)' END
  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN ns ON i.relnamespace = ns.oid
UNION ALL
SELECT 'constraint', c.relname || '.' || con.conname, pg_get_constraintdef(con.oid)
  FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN ns ON con.connamespace = ns.oid
"""


@dataclass
class SchemaDrift:
    slug: str
    schema_name: str
    recorded_revision: str | None
    actual_revision: str | None
    problems: list[str] = field(default_factory=list)


@dataclass
class DriftReport:
    checked: int
    drifted: list[SchemaDrift]
    #: With ``citus``: what the stream's head revision, built in a scratch schema, would break.
    head: citus_rules.CitusFindings | None = None


def read_catalog(connection: Connection, schema_name: str) -> Catalog:
    """The schema's tables, columns, indexes and constraints (call inside a transaction)."""
    migrations.use_schema(connection, schema_name)
    rows = connection.exec_driver_sql(_CATALOG_SQL, {"schema": schema_name}).all()
    # pg_get_indexdef() qualifies the table with its schema whatever the search_path.
    own_schema = re.compile(rf'(?<![\w"])(?:{re.escape(schema_name)}|"{re.escape(schema_name)}")\.')
    return {(kind, name): own_schema.sub("", definition) for kind, name, definition in rows}


def reference_catalog(engine: Engine, revision: str | None, location: str | None = None) -> Catalog:
    """What a schema at ``revision`` contains: a scratch schema, migrated, read, rolled back."""
    scratch = f"t_check_{uuid.uuid4().hex[:12]}"
    with engine.connect() as connection, connection.begin() as transaction:
        connection.exec_driver_sql(f"CREATE SCHEMA {quote_ident(scratch)}")
        if revision is not None:
            migrations.migrate_schema(connection, scratch, revision, location=location)
        catalog = read_catalog(connection, scratch)
        transaction.rollback()
    return catalog


def compare(expected: Catalog, actual: Catalog) -> list[str]:
    """Human-readable differences, e.g. ``column repositories.owner missing``."""
    problems = []
    for key in sorted(expected.keys() | actual.keys()):
        kind, name = key
        if key not in actual:
            problems.append(f"{kind} {name} missing (expected: {expected[key]})")
        elif key not in expected:
            problems.append(f"{kind} {name} not in the revision (found: {actual[key]})")
        elif expected[key] != actual[key]:
            problems.append(f"{kind} {name} differs: expected {expected[key]!r}, found {actual[key]!r}")
    return problems


def check(
    engine: Engine,
    *,
    slugs: Iterable[str] = (),
    location: str | None = None,
    recycle_after: int = 250,
    citus: bool = False,
) -> DriftReport:
    """Check every tenant (or those named); one short read-only transaction per schema.

    Connections are opened unpooled from ``engine.url`` so that recycling them really
    ends the backend and frees its catalog cache. ``citus``: also what would break each
    schema, and the stream's head revision, on Citus (:mod:`app.tenancy.citus_rules`).
    """
    engine = create_engine(engine.url, poolclass=NullPool)
    try:
        report = _check(engine, list(slugs), location, recycle_after, citus)
        if citus:
            report.head = _head_findings(engine, location)
        return report
    finally:
        engine.dispose()


def _head_findings(engine: Engine, location: str | None) -> citus_rules.CitusFindings:
    """The Citus rules on a scratch schema built at the stream's head, rolled back (and, on a
    cluster, kept off the workers: schema-based sharding is off for that transaction)."""
    scratch = f"t_check_{uuid.uuid4().hex[:12]}"
    with engine.connect() as connection, connection.begin() as transaction:
        references = citus_rules.reference_tables(connection)
        if cluster.detect(connection) is not None:
            connection.exec_driver_sql("SET LOCAL citus.enable_schema_based_sharding = off")
        connection.exec_driver_sql(f"CREATE SCHEMA {quote_ident(scratch)}")
        migrations.migrate_schema(connection, scratch, migrations.head_revision(location), location=location)
        found = citus_rules.inspect(connection, scratch, references)
        transaction.rollback()
    return found


def _check(
    engine: Engine, wanted: list[str], location: str | None, recycle_after: int, citus: bool = False,
) -> DriftReport:
    with engine.connect() as connection:
        sql = "SELECT slug, schema_name, schema_revision, db_role FROM public.tenants"
        if wanted:
            sql += " WHERE slug = ANY(%(slugs)s)"
        tenants = connection.exec_driver_sql(sql + " ORDER BY slug", {"slugs": wanted}).all()
        citus_references = citus_rules.reference_tables(connection) if citus else set()
    references: dict[str | None, Catalog] = {}
    drifted: list[SchemaDrift] = []
    for start in range(0, len(tenants), recycle_after):
        # A fresh backend every ``recycle_after`` schemas: each one caches every catalog it reads.
        with engine.connect() as connection:
            for slug, schema_name, recorded, role in tenants[start : start + recycle_after]:
                with connection.begin():
                    connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                    drift = _check_one(connection, slug, schema_name, recorded)
                    if drift.problems:
                        drifted.append(drift)
                        continue
                    catalog = read_catalog(connection, schema_name)
                    foreign = _not_owned_by(connection, schema_name, role) if role else []
                    on_citus = citus_rules.inspect(connection, schema_name, citus_references).problems \
                        if citus else []
                revision = drift.actual_revision
                if revision not in references:
                    references[revision] = reference_catalog(engine, revision, location)
                drift.problems = compare(references[revision], catalog)
                drift.problems += [f"{name} is owned by {owner}, not by the tenant role {role}"
                                   for name, owner in foreign]
                drift.problems += on_citus
                if drift.problems:
                    drifted.append(drift)
    return DriftReport(checked=len(tenants), drifted=drifted)


def _check_one(connection: Connection, slug: str, schema_name: str, recorded: str | None) -> SchemaDrift:
    drift = SchemaDrift(slug, schema_name, recorded, None)
    exists, versioned = connection.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(s)s), to_regclass(%(t)s) IS NOT NULL",
        {"s": schema_name, "t": f"{quote_ident(schema_name)}.alembic_version"},
    ).one()
    if not exists:
        drift.problems.append(f"schema {schema_name} does not exist")
        return drift
    if not versioned:
        drift.problems.append("no alembic_version table")
        return drift
    versions = connection.exec_driver_sql(
        f"SELECT version_num FROM {quote_ident(schema_name)}.alembic_version"
    ).scalars().all()
    if len(versions) > 1:
        drift.problems.append(f"alembic_version holds {len(versions)} rows: {', '.join(sorted(versions))}")
        return drift
    drift.actual_revision = versions[0] if versions else None
    if drift.actual_revision != recorded:
        drift.problems.append(
            f"public.tenants records revision {recorded}, alembic_version says {drift.actual_revision}"
        )
    return drift


def _not_owned_by(connection: Connection, schema_name: str, role: str) -> list[tuple[str, str]]:
    """Ownership drift: the schema and the objects in it that the tenant's role does not own."""
    return [tuple(row) for row in connection.exec_driver_sql(
        "SELECT 'schema ' || n.nspname, pg_get_userbyid(n.nspowner) FROM pg_namespace n"
        " WHERE n.nspname = %(s)s AND pg_get_userbyid(n.nspowner) <> %(r)s"
        " UNION ALL"
        " SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %(s)s AND pg_get_userbyid(c.relowner) <> %(r)s ORDER BY 1",
        {"s": schema_name, "r": role},
    ).all()]
