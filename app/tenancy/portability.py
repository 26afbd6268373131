"""Tenant export and import: a tenant's data in one portable file, and back into a new tenant.

The file is gzip-compressed JSON Lines, described in ``docs/export-format.md``:

- line 1, the header: format and version, the tenant (slug, name, plan, status) at
  export time, its schema revision, when the snapshot was taken, and every table with
  its columns, primary key and the next value of each identity sequence;
- one line per row, ``{"table": "repositories", "row": {...}}``, table by table in
  foreign-key order, each table in primary-key order;
- a last line, ``{"end": true, "rows": {"repositories": 3, ...}}``, so a truncated
  file is refused even when its gzip stream happens to end cleanly.

Values are rendered by PostgreSQL (``row_to_json``) and parsed back by PostgreSQL
(``json_populate_record``), so they round-trip exactly: bigints, timestamps with time
zone (to the microsecond, ``infinity`` included), numerics, booleans, NULLs. ``json``
and ``jsonb`` columns are written as strings holding their JSON text, which keeps SQL
NULL (``null``) apart from the JSON document ``null`` (``"null"``).

Tables and columns come from the schema's own catalog, not from the models: a schema
holds what its revision says (``flask tenants check``), and an import at an older
revision (``migrate=True``) must match that revision, not today's models.

**Export** reads the tenant in one ``REPEATABLE READ, READ ONLY`` transaction (one
snapshot; writes go on meanwhile and are not in the file), taken while holding the
tenant's advisory lock at session level, so no migration, provisioning or deletion
of that tenant is half-visible to it. Rows are streamed with a server-side cursor.

**Import** provisions a new tenant and loads the file in one transaction: the schema is
created at the file's revision, rows are inserted in batches, identity sequences are
moved past both the exported sequence position and the largest id, and (with
``migrate``) the schema is then migrated to head. Any failure (a corrupt line, a
constraint, a wrong column) rolls everything back: no tenant row, no schema, no key.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import IO, Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.models.public import Tenant

from . import audit
from .binding import set_search_path
from .context import current_tenant
from .errors import TenancyError, TenantNotFound, UnknownRevision
from .locks import LOCK_NAMESPACE
from .migrations import SchemaState, current_revision, head_revision, migrate_schema, resolve_target
from .naming import quote_ident, schema_name_for, validate_slug
from .provisioning import ProvisionedTenant, TenantRecord, provision_in_transaction

FORMAT = "tenantry-tenant-export"
VERSION = 1

#: Rows per INSERT when importing, and per fetch from the server-side cursor when exporting.
BATCH_ROWS = 1000
#: An import batch is also sent once its lines reach this many characters.
BATCH_CHARS = 4 * 1024 * 1024


class PortabilityError(TenancyError):
    """An export or import was refused or failed; nothing was created or changed."""


class InvalidExportFile(PortabilityError):
    """The file is not a tenant export this version can read (format, corruption, content)."""


class RevisionMismatch(InvalidExportFile):
    """The file's schema revision is not the head, and migrating was not asked for (or is impossible)."""


class ExportRefused(PortabilityError):
    """The tenant's schema does not agree with its recorded revision; exporting it would mislead."""


class ImportFailed(PortabilityError):
    """Loading the file failed in the database; the whole import was rolled back."""

    def __init__(self, slug: str, reason: str) -> None:
        super().__init__(f"importing tenant {slug!r} failed and was rolled back: {reason}")
        self.slug = slug


# --- the schema as the catalog describes it ----------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): "bigint", "character varying(100)", "jsonb", ...
    is_json: bool  # json or jsonb: carried as a string holding its JSON text
    has_sequence: bool  # an identity (or serial) column


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


_TABLES_SQL = """
SELECT c.oid, c.relname FROM pg_class c
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND c.relname <> 'alembic_version'
"""
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod),
       a.atttypid IN ('json'::regtype, 'jsonb'::regtype),
       pg_get_serial_sequence(c.relnamespace::regnamespace::text || '.' || quote_ident(c.relname), a.attname)
         IS NOT NULL
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = %(schema)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attrelid, a.attnum
"""
_PRIMARY_KEYS_SQL = """
SELECT i.indrelid, a.attname FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE c.relnamespace = %(schema)s::regnamespace AND i.indisprimary
ORDER BY i.indrelid, array_position(i.indkey::int2[], a.attnum)
"""
_FOREIGN_KEYS_SQL = """
SELECT conrelid, confrelid FROM pg_constraint
WHERE contype = 'f' AND connamespace = %(schema)s::regnamespace AND conrelid <> confrelid
"""


def schema_tables(connection: Connection, schema_name: str) -> list[Table]:
    """The schema's tables (but ``alembic_version``), referenced tables before those referencing them.

    Generated columns are left out: PostgreSQL computes them again on insert.
    """
    params = {"schema": quote_ident(schema_name)}
    names = {oid: name for oid, name in connection.exec_driver_sql(_TABLES_SQL, params)}
    columns: dict[int, list[Column]] = {oid: [] for oid in names}
    for oid, name, type_, is_json, has_sequence in connection.exec_driver_sql(_COLUMNS_SQL, params):
        if oid in columns:
            columns[oid].append(Column(name, type_, bool(is_json), bool(has_sequence)))
    keys: dict[int, list[str]] = {oid: [] for oid in names}
    for oid, name in connection.exec_driver_sql(_PRIMARY_KEYS_SQL, params):
        if oid in keys:
            keys[oid].append(name)
    depends: dict[int, set[int]] = {oid: set() for oid in names}
    for child, parent in connection.exec_driver_sql(_FOREIGN_KEYS_SQL, params):
        if child in depends and parent in names:
            depends[child].add(parent)
    ordered: list[int] = []
    while depends:  # Kahn's algorithm, ties broken by name so the order is stable
        ready = sorted((oid for oid, parents in depends.items() if not parents), key=names.__getitem__)
        if not ready:
            cycle = ", ".join(sorted(names[oid] for oid in depends))
            raise PortabilityError(f"tables of {schema_name} reference each other in a cycle: {cycle}")
        for oid in ready:
            ordered.append(oid)
            del depends[oid]
        for parents in depends.values():
            parents.difference_update(ready)
    return [Table(names[oid], tuple(columns[oid]), tuple(keys[oid])) for oid in ordered]


def _quote(name: str) -> str:
    """Quote a table or column name read from the catalog."""
    return '"' + name.replace('"', '""') + '"'


def _ident(name: str) -> str:
    """:func:`_quote`, for driver-level SQL text (where ``%`` introduces a parameter)."""
    return _quote(name).replace("%", "%%")


def _qualified(schema_name: str, table: str) -> str:
    return f"{quote_ident(schema_name)}.{_ident(table)}"


def _regclass(schema_name: str, table: str) -> str:
    """The table's name as a parameter for functions taking a (quoted, qualified) name."""
    return f"{quote_ident(schema_name)}.{_quote(table)}"


# --- export ------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    slug: str
    tenant_id: int
    schema_revision: str
    exported_at: datetime
    rows: dict[str, int]


def export_tenant(engine: Engine, slug: str, sink: IO[bytes], *, compresslevel: int = 6) -> ExportResult:
    """Write tenant ``slug`` to ``sink`` (a binary stream, left open) and record ``tenant.exported``.

    :raise TenantNotFound: no tenant has this slug.
    :raise ExportRefused: the schema's ``alembic_version`` disagrees with ``public.tenants``.
    """
    schema_name = schema_name_for(validate_slug(slug))
    with engine.connect() as connection:
        # Session level, taken before the snapshot: a REPEATABLE READ snapshot is fixed by
        # its first query, and a transaction-level lock can only be taken by a query.
        lock = {"ns": LOCK_NAMESPACE, "slug": slug}
        connection.exec_driver_sql("SELECT pg_advisory_lock(%(ns)s, hashtext(%(slug)s))", lock)
        connection.commit()
        try:
            with connection.begin():
                result = _export(connection, slug, schema_name, sink, compresslevel)
        except BaseException:
            _unlock(connection, lock, quiet=True)
            raise
        _unlock(connection, lock)
        with Session(bind=connection) as session, session.begin():
            audit.record_platform(
                session, "tenant.exported", "tenant", slug, tenant_id=result.tenant_id, tenant_slug=slug,
                after={"schema_revision": result.schema_revision,
                       "exported_at": result.exported_at.isoformat(), "rows": result.rows},
            )
    return result


def _unlock(connection: Connection, lock: dict[str, Any], *, quiet: bool = False) -> None:
    """Release the session-level lock; if the connection cannot, close it (that releases it too)."""
    try:
        connection.exec_driver_sql("SELECT pg_advisory_unlock(%(ns)s, hashtext(%(slug)s))", lock)
        connection.commit()
    except Exception:
        connection.invalidate()
        if not quiet:
            raise


def _export(
    connection: Connection, slug: str, schema_name: str, sink: IO[bytes], compresslevel: int
) -> ExportResult:
    connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    connection.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")
    connection.exec_driver_sql("SET LOCAL extra_float_digits = 3")  # every float digit, on any server
    tenant = connection.exec_driver_sql(
        "SELECT t.id, t.name, t.status, t.schema_revision, p.name, now() FROM public.tenants t"
        " JOIN public.plans p ON p.id = t.plan_id WHERE t.slug = %(slug)s",
        {"slug": slug},
    ).first()
    if tenant is None:
        raise TenantNotFound(slug)
    tenant_id, name, status, recorded, plan, exported_at = tenant
    revision = current_revision(connection, schema_name)
    if revision is None or revision != recorded:
        raise ExportRefused(
            f"schema {schema_name} is at revision {revision or 'none'} but public.tenants records "
            f"{recorded or 'none'}; run `flask tenants check --tenant {slug}` first"
        )
    tables = schema_tables(connection, schema_name)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "tenant": {"slug": slug, "name": name, "plan": plan, "status": status},
        "schema_revision": revision,
        "exported_at": exported_at.isoformat(),
        "tables": [
            {
                "name": table.name,
                "columns": [{"name": c.name, "type": c.type} for c in table.columns],
                "primary_key": list(table.primary_key),
                "sequences": _next_values(connection, schema_name, table),
            }
            for table in tables
        ],
    }
    rows: dict[str, int] = {}
    with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=compresslevel, mtime=0) as raw, \
            io.TextIOWrapper(raw, encoding="utf-8", newline="\n", write_through=False) as out:
        out.write(_dumps(header) + "\n")
        for table in tables:
            prefix = '{"table":' + json.dumps(table.name) + ',"row":'
            count = 0
            result = connection.exec_driver_sql(
                _select_rows(schema_name, table),
                execution_options={"stream_results": True, "max_row_buffer": BATCH_ROWS},
            )
            for (row,) in result:
                if "\n" in row:  # only as whitespace inside a json[] value: strings escape it
                    row = row.replace("\n", " ")
                out.write(prefix + row + "}\n")
                count += 1
            rows[table.name] = count
        out.write(_dumps({"end": True, "rows": rows}) + "\n")
        out.flush()
    return ExportResult(slug, tenant_id, revision, exported_at, rows)


def _next_values(connection: Connection, schema_name: str, table: Table) -> dict[str, int]:
    """The value each identity sequence of ``table`` would hand out next (not transactional)."""
    values = {}
    for column in table.columns:
        if column.has_sequence:
            values[column.name] = connection.exec_driver_sql(
                "SELECT CASE WHEN pg_sequence_last_value(s.seqrelid) IS NULL THEN s.seqstart"
                " ELSE pg_sequence_last_value(s.seqrelid) + s.seqincrement END"
                " FROM pg_sequence s WHERE s.seqrelid = pg_get_serial_sequence(%(t)s, %(c)s)::regclass",
                {"t": _regclass(schema_name, table.name), "c": column.name},
            ).scalar_one()
    return values


def _select_rows(schema_name: str, table: Table) -> str:
    items = ", ".join(
        f"t.{_ident(c.name)}::text AS {_ident(c.name)}" if c.is_json else f"t.{_ident(c.name)} AS {_ident(c.name)}"
        for c in table.columns
    )
    order = ", ".join(f"t.{_ident(name)}" for name in table.primary_key)
    return (
        f"SELECT row_to_json(r)::text FROM {_qualified(schema_name, table.name)} AS t"
        f" CROSS JOIN LATERAL (SELECT {items}) AS r" + (f" ORDER BY {order}" if order else "")
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- reading a file ----------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """A table as the file's header describes it."""

    name: str
    columns: tuple[str, ...]
    sequences: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportHeader:
    slug: str
    name: str
    plan: str
    schema_revision: str
    exported_at: str
    tables: tuple[TableSpec, ...]


class ExportReader:
    """Reads an export file line by line; every problem is an :class:`InvalidExportFile`, naming its line."""

    def __init__(self, source: IO[bytes]) -> None:
        self._text = io.TextIOWrapper(gzip.GzipFile(fileobj=source, mode="rb"), encoding="utf-8", newline="\n")
        self.line_number = 0
        first = self._next_line()
        if first is None:
            raise InvalidExportFile("the file is empty")
        self.header = _parse_header(self._parse(first))

    def _next_line(self) -> str | None:
        try:
            line = self._text.readline()
        except gzip.BadGzipFile as exc:
            if self.line_number == 0:
                raise InvalidExportFile(f"not a gzip-compressed tenant export ({exc})") from exc
            raise InvalidExportFile(f"the file is corrupt after line {self.line_number}: {exc}") from exc
        except EOFError as exc:
            raise InvalidExportFile(
                f"the file is truncated after line {self.line_number} (the gzip stream ends early)"
            ) from exc
        except (OSError, zlib.error) as exc:
            raise InvalidExportFile(f"the file is corrupt after line {self.line_number}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise InvalidExportFile(f"line {self.line_number + 1} is not UTF-8: {exc.reason}") from exc
        if not line:
            return None
        self.line_number += 1
        if not line.endswith("\n"):
            raise InvalidExportFile(f"line {self.line_number} is incomplete (no newline at the end of the file)")
        return line

    def _parse(self, line: str) -> Any:
        try:
            return json.loads(line)
        except ValueError as exc:
            raise InvalidExportFile(f"line {self.line_number} is not valid JSON: {exc}") from exc

    def records(self) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
        """``(line number, raw line, table, row)`` for every row line, then checks the end line."""
        columns = {t.name: set(t.columns) for t in self.header.tables}
        counts = dict.fromkeys(columns, 0)
        while (line := self._next_line()) is not None:
            record = self._parse(line)
            where = f"line {self.line_number}"
            if not isinstance(record, dict):
                raise InvalidExportFile(f"{where} is not a JSON object")
            if "end" in record:
                self._finish(record, counts)
                return
            if set(record) != {"table", "row"} or not isinstance(record["row"], dict):
                raise InvalidExportFile(f'{where} is neither a row ({{"table": ..., "row": {{...}}}}) nor the end line')
            table, row = record["table"], record["row"]
            if not isinstance(table, str) or table not in columns:
                raise InvalidExportFile(f"{where}: table {table!r} is not in the header")
            if set(row) != columns[table]:
                unknown, missing = sorted(set(row) - columns[table]), sorted(columns[table] - set(row))
                raise InvalidExportFile(
                    f"{where}: row of {table}"
                    + (f" has unknown column(s) {', '.join(unknown)}" if unknown else "")
                    + (" and" if unknown and missing else "")
                    + (f" lacks column(s) {', '.join(missing)}" if missing else "")
                )
            counts[table] += 1
            yield self.line_number, line, table, row
        raise InvalidExportFile(f"the file ends at line {self.line_number} without its end line (truncated?)")

    def _finish(self, record: dict[str, Any], counts: dict[str, int]) -> None:
        if record.get("end") is not True or not isinstance(record.get("rows"), dict):
            raise InvalidExportFile(f'line {self.line_number}: the end line must be {{"end": true, "rows": {{...}}}}')
        if record["rows"] != counts:
            raise InvalidExportFile(
                f"line {self.line_number}: the end line counts {record['rows']} rows, the file holds {counts}"
            )
        if self._next_line() is not None:
            raise InvalidExportFile(f"line {self.line_number} follows the end line")


def _parse_header(header: Any) -> ExportHeader:
    def bad(problem: str) -> InvalidExportFile:
        return InvalidExportFile(f"line 1 is not a tenant export header: {problem}")

    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise bad(f'expected {{"format": "{FORMAT}", ...}}')
    if header.get("version") != VERSION or isinstance(header.get("version"), bool):
        raise InvalidExportFile(
            f"unsupported export format version {header.get('version')!r} (this version of Tenantry reads {VERSION})"
        )
    tenant = header.get("tenant")
    if not isinstance(tenant, dict) or not all(isinstance(tenant.get(k), str) for k in ("slug", "name", "plan")):
        raise bad("'tenant' must hold strings slug, name and plan")
    for key in ("schema_revision", "exported_at"):
        if not isinstance(header.get(key), str):
            raise bad(f"{key!r} must be a string")
    tables = header.get("tables")
    if not isinstance(tables, list):
        raise bad("'tables' must be a list")
    specs = []
    for table in tables:
        if not isinstance(table, dict) or not isinstance(table.get("name"), str):
            raise bad("every table needs a name")
        columns = table.get("columns")
        if not isinstance(columns, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in columns
        ):
            raise bad(f"table {table['name']!r}: 'columns' must be a list of {{\"name\": ...}}")
        names = tuple(c["name"] for c in columns)
        sequences = table.get("sequences", {})
        if not isinstance(sequences, dict) or not all(
            k in names and isinstance(v, int) and not isinstance(v, bool) for k, v in sequences.items()
        ):
            raise bad(f"table {table['name']!r}: 'sequences' must map its columns to integers")
        if len(set(names)) != len(names):
            raise bad(f"table {table['name']!r} lists a column twice")
        specs.append(TableSpec(table["name"], names, sequences))
    if len({t.name for t in specs}) != len(specs):
        raise bad("a table is listed twice")
    return ExportHeader(
        slug=tenant["slug"], name=tenant["name"], plan=tenant["plan"],
        schema_revision=header["schema_revision"], exported_at=header["exported_at"], tables=tuple(specs),
    )


# --- import ------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    provisioned: ProvisionedTenant
    source: ExportHeader
    rows: dict[str, int]
    #: The file's revision when the schema was migrated after loading, else None.
    migrated_from: str | None


def check_revision(header: ExportHeader, *, migrate: bool, location: str | None = None) -> str:
    """The head the import ends at; :class:`RevisionMismatch` when the file cannot get there."""
    head = head_revision(location)
    revision = header.schema_revision
    if revision == head:
        return head
    try:
        known = resolve_target(revision, location) == revision
    except UnknownRevision:
        known = False
    if not known:
        raise RevisionMismatch(
            f"the file is at schema revision {revision!r}, which this version of Tenantry does not know "
            f"(head is {head!r}); import it with the release that wrote it"
        )
    if not migrate:
        raise RevisionMismatch(
            f"the file is at schema revision {revision!r}, not the head {head!r}; pass --migrate "
            f"to load it at {revision!r} and migrate it to {head!r} in the same transaction"
        )
    return head


def import_tenant(
    session: Session,
    source: IO[bytes],
    *,
    slug: str,
    plan: str | None = None,
    migrate: bool = False,
    location: str | None = None,
) -> ImportResult:
    """Provision tenant ``slug`` from an export file and load its rows: one transaction, all or nothing.

    Owns its transaction (the session must have none open). The tenant gets the file's
    name and plan (``plan`` overrides it) and a new admin API key; keys are not exported.

    :raise InvalidSlug, UnknownPlan, TenantAlreadyExists: as for provisioning.
    :raise InvalidExportFile: the file is not an export this version reads, or its
        revision is not the head (:class:`RevisionMismatch`; ``migrate`` lifts that for
        revisions of this stream).
    :raise ImportFailed: the database refused the data; everything was rolled back.
    """
    schema_name = schema_name_for(validate_slug(slug))
    reader = ExportReader(source)
    header = reader.header
    head = check_revision(header, migrate=migrate, location=location)
    if session.in_transaction():
        raise RuntimeError("import_tenant() needs a session with no open transaction")
    try:
        with session.begin():
            provisioned = provision_in_transaction(
                session, slug=slug, name=header.name, plan=plan or header.plan,
                location=location, revision=header.schema_revision,
            )
            connection = session.connection()
            tables = _match_tables(header, schema_tables(connection, schema_name))
            rows = _load(connection, slug, schema_name, tables, reader)
            _advance_sequences(connection, schema_name, tables, header)
            record = provisioned.tenant
            migrated_from = None
            if header.schema_revision != head:
                migrate_schema(connection, schema_name, head, location=location,
                               known=SchemaState(header.schema_revision, versioned=True))
                set_search_path(connection, current_tenant())
                tenant = session.get(Tenant, record.id)
                assert tenant is not None
                tenant.schema_revision = head
                session.flush()
                record, migrated_from = TenantRecord.of(tenant), header.schema_revision
            audit.record_platform(
                session, "tenant.imported", "tenant", slug, tenant_id=record.id, tenant_slug=slug,
                after={"source_slug": header.slug, "exported_at": header.exported_at,
                       "file_revision": header.schema_revision, "schema_revision": record.schema_revision,
                       "rows": rows},
            )
    except TenancyError:
        raise
    except Exception as exc:  # a migration or the connection failed: already rolled back
        raise ImportFailed(slug, _first_line(exc)) from exc
    return ImportResult(replace(provisioned, tenant=record), header, rows, migrated_from)


def _match_tables(header: ExportHeader, tables: list[Table]) -> dict[str, Table]:
    """The schema's tables by name, once the file is known to describe exactly them."""
    revision = header.schema_revision
    by_name = {t.name: t for t in tables}
    unknown = sorted({t.name for t in header.tables} - set(by_name))
    if unknown:
        raise InvalidExportFile(f"the file has table(s) {', '.join(unknown)} that revision {revision} does not have")
    missing = sorted(set(by_name) - {t.name for t in header.tables})
    if missing:
        raise InvalidExportFile(f"the file lacks table(s) {', '.join(missing)} of revision {revision}")
    for spec in header.tables:
        expected = set(by_name[spec.name].column_names)
        unknown = sorted(set(spec.columns) - expected)
        if unknown:
            raise InvalidExportFile(
                f"table {spec.name}: column(s) {', '.join(unknown)} are not in revision {revision}"
            )
        missing = sorted(expected - set(spec.columns))
        if missing:
            raise InvalidExportFile(f"table {spec.name}: the file lacks column(s) {', '.join(missing)}")
    return by_name


def _load(
    connection: Connection, slug: str, schema_name: str, tables: dict[str, Table], reader: ExportReader
) -> dict[str, int]:
    rows = dict.fromkeys(tables, 0)
    batch: list[str] = []
    size = 0
    first_line = 0
    current: str | None = None

    def flush() -> None:
        nonlocal batch, size
        if not batch or current is None:
            return
        table = tables[current]
        try:
            connection.exec_driver_sql(_insert_rows(schema_name, table), {"lines": "[" + ",".join(batch) + "]"})
        except DBAPIError as exc:
            span = f"line {first_line}" if len(batch) == 1 else f"lines {first_line}-{first_line + len(batch) - 1}"
            raise ImportFailed(slug, f"{span} (table {table.name}): {_first_line(exc.orig or exc)}") from exc
        rows[current] += len(batch)
        batch, size = [], 0

    for number, line, table_name, _row in reader.records():
        if table_name != current or len(batch) >= BATCH_ROWS or size >= BATCH_CHARS:
            flush()
            current, first_line = table_name, number
        batch.append(line)
        size += len(line)
    flush()
    return rows


def _insert_rows(schema_name: str, table: Table) -> str:
    names = ", ".join(_ident(c.name) for c in table.columns)
    values = ", ".join(
        f"(l.line->'row'->>{_literal(c.name)})::{'jsonb' if c.type == 'jsonb' else 'json'}"
        if c.is_json else f"r.{_ident(c.name)}"
        for c in table.columns
    )
    qualified = _qualified(schema_name, table.name)
    return (
        f"INSERT INTO {qualified} ({names}) OVERRIDING SYSTEM VALUE SELECT {values}"
        f" FROM json_array_elements(%(lines)s::json) AS l(line),"
        f" LATERAL json_populate_record(NULL::{qualified}, l.line->'row') AS r"
    )


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''").replace("%", "%%") + "'"


def _advance_sequences(
    connection: Connection, schema_name: str, tables: dict[str, Table], header: ExportHeader
) -> None:
    """Move every identity sequence past the exported position and past the largest id loaded."""
    exported = {spec.name: spec.sequences for spec in header.tables}
    for table in tables.values():
        for column in table.columns:
            if not column.has_sequence:
                continue
            # Two statements, not setval(...) FROM the table: on Citus that one runs where the
            # table lives, a worker, whose copy of the sequence is limited to that node's range.
            loaded = connection.exec_driver_sql(
                f"SELECT COALESCE(max({_ident(column.name)}) + 1, 1) FROM {_qualified(schema_name, table.name)}"
            ).scalar_one()
            connection.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence(%(t)s, %(c)s), %(next)s, false)",
                {"t": _regclass(schema_name, table.name), "c": column.name,
                 "next": max(loaded, exported[table.name].get(column.name, 1))},
            )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

