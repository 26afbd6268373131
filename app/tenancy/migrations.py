"""The tenant Alembic stream, run against exactly one schema, inside the caller's transaction.

``tenant_migrations/`` is an ordinary Alembic environment whose every run targets one
schema: the schema's own ``alembic_version`` table lives inside it, the search_path
holds only that schema, and ``public`` is never touched. Provisioning and the fan-out
hand it a connection with a transaction already open (Alembic's "sharing a
connection" recipe), so the migration commits or rolls back with everything else the
caller does.

The script directory is loaded once per process (per location) and reused, so
migrating many schemas does not re-read and re-import the version files each time.

Alembic's ``op`` and ``context`` proxies are module globals: run one migration at a
time per process (the lock below; the fan-out's threads take it too).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy.engine import Connection

from . import cluster, pipeline
from .binding import set_local_search_path
from .errors import UnknownRevision
from .naming import quote_ident

#: Alembic's proxies are process-global; this keeps two threads from interleaving runs.
_run_lock = threading.RLock()


def default_location() -> Path:
    """Where the tenant stream's scripts live (the ``tenant_migrations`` package)."""
    import tenant_migrations

    return Path(tenant_migrations.__file__).resolve().parent


def tenant_config(location: str | Path | None = None) -> Config:
    """An Alembic Config for the tenant stream; no ini file, everything in code."""
    cfg = Config()
    cfg.set_main_option("script_location", str(location or default_location()))
    return cfg


@lru_cache(maxsize=8)
def tenant_script(location: str | None = None) -> ScriptDirectory:
    """The tenant stream's script directory, loaded once per location per process."""
    return ScriptDirectory.from_config(tenant_config(location))


def head_revision(location: str | None = None) -> str:
    """The single head of the tenant stream (branches are refused, as in production)."""
    head = tenant_script(location).get_current_head()
    if head is None:
        raise RuntimeError("the tenant migration stream has no revisions")
    return head


def use_schema(connection: Connection, schema_name: str) -> None:
    """Point the open transaction's search_path at one tenant schema (and nothing else)."""
    set_local_search_path(connection, quote_ident(schema_name))


def configure_tenant_context(
    env: EnvironmentContext, connection: Connection, schema_name: str, **options: Any
) -> None:
    """Configure an Alembic environment for one tenant schema; shared by env.py and the runner.

    Inside a transaction the search_path is transaction-local. A run outside any
    transaction (``tenantry_outside_transaction``) sets it for the session instead; its
    caller owns the connection and resets it.
    """
    from app.models.tenant import TenantBase

    if options.get("tenantry_outside_transaction", False):
        connection.exec_driver_sql(
            "SELECT set_config('search_path', %(path)s, false)", {"path": quote_ident(schema_name)}
        )
    else:
        use_schema(connection, schema_name)
    env.configure(
        connection=connection,
        target_metadata=TenantBase.metadata,
        version_table_schema=schema_name,
        include_schemas=False,
        compare_type=True,
        include_object=_skip_version_table,
        **options,
    )


def _skip_version_table(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (type_ == "table" and name == "alembic_version")


def current_revision(connection: Connection, schema_name: str) -> str | None:
    """The revision recorded in the schema's own ``alembic_version`` (None if absent)."""
    row = connection.exec_driver_sql(
        "SELECT to_regclass(%(t)s) IS NOT NULL", {"t": f"{quote_ident(schema_name)}.alembic_version"}
    ).scalar()
    if not row:
        return None
    return connection.exec_driver_sql(
        f"SELECT version_num FROM {quote_ident(schema_name)}.alembic_version"
    ).scalar()


def resolve_target(target: str, location: str | None = None) -> str | None:
    """The revision id ``target`` names (``head``, ``base`` or a revision id or prefix).

    :raise UnknownRevision: the tenant stream has no such revision.
    """
    script = tenant_script(location)
    if target == "base":
        return None
    if target == "head":
        return head_revision(location)
    try:
        found = script.get_revision(target)
    except Exception as exc:  # alembic raises several CommandError/ResolutionError flavours
        raise UnknownRevision(target) from exc
    if found is None:
        raise UnknownRevision(target)
    return found.revision


@dataclass(frozen=True)
class Step:
    """One revision to apply to a schema, and whether it may run inside a transaction."""

    revision: str | None  # the revision the schema is at once this step is done
    direction: str  # "upgrade" or "downgrade"
    transactional: bool
    renderable: bool = True  # may be applied as SQL rendered once (see rendered_path)


@lru_cache(maxsize=256)
def plan_steps(current: str | None, target: str | None, location: str | None = None) -> tuple[Step, ...]:
    """The revisions between ``current`` and ``target``, in the order they run (cached)."""
    if current == target:
        return ()
    script = tenant_script(location)
    if _is_downgrade(script, current, target):
        steps = []
        for rev in script.iterate_revisions(current, target or "base"):
            if rev.revision == target:
                break
            after = rev.down_revision if isinstance(rev.down_revision, str | None) else None
            steps.append(Step(after, "downgrade", _transactional(rev), _renderable(rev)))
        return tuple(steps)
    revs = reversed(list(script.iterate_revisions(target, current or "base", implicit_base=True)))
    return tuple(
        Step(rev.revision, "upgrade", _transactional(rev), _renderable(rev))
        for rev in revs if rev.revision != current
    )


def _transactional(script: Any) -> bool:
    return bool(getattr(script.module, "run_in_transaction", True))


def _renderable(script: Any) -> bool:
    return bool(getattr(script.module, "render_as_sql", True))


def outside_transaction() -> bool:
    """For migration scripts: does this revision run outside a transaction right now?

    A revision that declares ``run_in_transaction = False`` is applied by the fan-out in
    autocommit mode (so it may ``CREATE INDEX CONCURRENTLY``), but provisioning still
    applies it inside its one transaction, on a new and empty schema nobody can see
    yet. Write such DDL as ``op.create_index(..., postgresql_concurrently=outside_transaction())``.
    """
    from alembic import op

    return bool(op.get_context().opts.get("tenantry_outside_transaction", False))


@dataclass(frozen=True)
class SchemaState:
    """What the caller already knows of a schema's ``alembic_version``, read in this transaction."""

    revision: str | None
    versioned: bool  # the alembic_version table exists (it may be empty at base)


#: A schema just created in this transaction: no alembic_version table yet.
NEW_SCHEMA = SchemaState(revision=None, versioned=False)


def migrate_schema(
    connection: Connection,
    schema_name: str,
    target: str | None,
    *,
    location: str | None = None,
    outside_transaction: bool = False,
    known: SchemaState | None = None,
) -> str | None:
    """Move one schema to ``target`` (up or down) on ``connection``; return where it is now.

    Runs inside the transaction already open on ``connection`` and does not commit
    (with ``outside_transaction``, the connection is in autocommit mode and every
    statement commits as it goes: only for revisions written to be re-run). The
    search_path is replaced for the rest of the transaction; callers that go on with
    other work re-apply their own.

    ``known``: the schema's version state, when the caller has read it under its lock
    in this transaction. Alembic then skips its own catalog probes (two ``has_table``
    queries and two reads of ``alembic_version`` per schema, about 40% of a small
    migration's time across thousands of schemas).
    """
    script = tenant_script(location)
    cfg = tenant_config(location)
    destination = target or "base"

    def step(rev: Any, context: Any) -> Any:
        if _is_downgrade(script, rev, target):
            return script._downgrade_revs(destination, rev)
        return script._upgrade_revs(destination, rev)

    with _run_lock, EnvironmentContext(cfg, script, fn=step, destination_rev=destination) as env:
        configure_tenant_context(
            env, connection, schema_name,
            transactional_ddl=not outside_transaction,
            tenantry_outside_transaction=outside_transaction,
        )
        if known is not None:
            _trust(env.get_context(), connection, known)
        with env.begin_transaction():
            env.run_migrations()
        if known is not None:
            return target  # run_migrations raised unless every step to the target ran
        return env.get_context().get_current_revision()


def build_new_schema(
    connection: Connection, schema_name: str, target: str | None, *, location: str | None = None,
    create: Sequence[str] = (), then: str = "",
) -> tuple[str | None, Any]:
    """Build a new, empty schema at ``target`` inside the open transaction.

    The onboarding fast path: the stream from base to ``target`` is rendered once per
    (target, location) (:func:`rendered_path`) and sent with ``create`` (the caller's
    ``CREATE SCHEMA`` …), the search_path and ``then`` (the caller's next statement, a
    SELECT) in one round trip (:mod:`app.tenancy.pipeline`: one message, or pipelined on
    Citus), instead of Alembic's Python machinery per tenant (which measured about
    three times the DDL's own time).
    The result is the catalog the migrations produce: tests compare it with a schema
    migrated online and ``flask tenants check`` would report any difference. A stream
    the text cannot carry (see :func:`rendered_path`) runs online as before.

    Returns ``target`` and the first row of ``then`` (run after the schema is built,
    whichever way it was).
    """
    rendered = rendered_path(None, target, location)
    driver = pipeline.driver_of(connection)
    pipelined = cluster.citus_of(connection.engine) is not None
    if rendered is None:
        if create:
            pipeline.execute(driver, create, pipelined=pipelined)
        target = migrate_schema(connection, schema_name, target, location=location, known=NEW_SCHEMA)
        if not then:
            return target, None
        return target, pipeline.execute(driver, [then], rows=[0])[0]
    path = sql.Literal(quote_ident(schema_name)).as_string(None)
    statements = [*create, f"SELECT set_config('search_path', {path}, true)", *rendered, *([then] if then else [])]
    found = pipeline.execute(driver, statements, rows=[-1] if then else [], pipelined=pipelined)
    return target, found.get(-1)


def _trust(context: Any, connection: Connection, known: SchemaState) -> None:
    """Answer Alembic's questions about the version table from what the caller read."""
    context.get_current_heads = lambda: (known.revision,) if known.revision else ()
    if known.versioned:
        context._ensure_version_table = lambda purge=False: None
    else:
        context._ensure_version_table = lambda purge=False: context._version.create(connection)


def _is_downgrade(script: ScriptDirectory, current: Any, target: str | None) -> bool:
    """Is ``target`` below ``current`` (base is below everything)?"""
    if not current or current == target:
        return False
    return target is None or target in {r.revision for r in script.iterate_revisions(current, "base")}


def upgrade_schema(
    connection: Connection,
    schema_name: str,
    target: str = "head",
    *,
    location: str | None = None,
) -> str | None:
    """Upgrade one schema to ``target`` on ``connection``; return the revision it is now at.

    Runs inside the transaction already open on ``connection`` and does not commit.
    """
    return migrate_schema(connection, schema_name, resolve_target(target, location), location=location)


def render_sql(
    schema_name: str, current: str | None, target: str | None, *, location: str | None = None
) -> str:
    """The SQL that moves ``schema_name`` from ``current`` to ``target``, without running it."""
    return "".join(f"{chunk}\n\n" for chunk in _render(current, target, location, schema_name))


@lru_cache(maxsize=64)
def rendered_path(current: str | None, target: str | None, location: str | None = None) -> tuple[str, ...] | None:
    """The statements of the path from ``current`` to ``target``, rendered once, for any schema.

    Tenant migrations name their tables unqualified, so Alembic's offline rendering
    (with an unqualified ``alembic_version``) is the same text for every schema: the
    fan-out renders a path once and sends it to each schema in one round trip instead
    of running Alembic's Python machinery per schema (which measured 3-5x the time of
    the SQL itself). ``tenants check`` compares the result with schemas migrated online.
    One string per statement, without its terminator and without Alembic's comments,
    for :func:`app.tenancy.pipeline.execute`.

    None when the path cannot be applied that way: a revision on it runs outside a
    transaction, declares ``render_as_sql = False`` (it reads data through
    ``op.get_bind()`` or branches on what it finds), or fails to render offline.
    """
    steps = plan_steps(current, target, location)
    if not steps or not all(step.transactional and step.renderable for step in steps):
        return None
    try:
        chunks = _render(current, target, location, schema_name=None)
    except Exception:  # e.g. op.get_bind() has no connection offline: run it online instead
        return None
    return tuple(chunk.removesuffix(";") for chunk in chunks if not _only_comments(chunk))


def _only_comments(chunk: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("--") for line in chunk.splitlines())


class _Statements(io.StringIO):
    """Alembic's offline output buffer, kept one chunk per write: it writes each
    statement (or comment) whole, followed by a blank line."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []

    def write(self, text: str) -> int:
        chunk = text.strip()
        if chunk:
            self.chunks.append(chunk)
        return len(text)


def _render(current: str | None, target: str | None, location: str | None, schema_name: str | None) -> list[str]:
    from app.models.tenant import TenantBase

    script = tenant_script(location)
    cfg = tenant_config(location)
    destination = target or "base"
    downgrade = _is_downgrade(script, current, target)
    buffer = _Statements()

    def step(rev: Any, context: Any) -> Any:
        if downgrade:
            return script._downgrade_revs(destination, current)
        # alembic annotates current_rev as str, but reads None as base, as for a downgrade.
        return script._upgrade_revs(destination, current)  # type: ignore[arg-type]

    with _run_lock, EnvironmentContext(
        cfg, script, fn=step, as_sql=True, starting_rev=current, destination_rev=destination
    ) as env:
        env.configure(
            dialect_name="postgresql",
            target_metadata=TenantBase.metadata,
            version_table_schema=schema_name,
            literal_binds=True,
            output_buffer=buffer,
            # Standalone scripts carry BEGIN/COMMIT; a rendered path runs in the caller's transaction.
            transactional_ddl=schema_name is not None,
            tenantry_outside_transaction=False,
        )
        with env.begin_transaction():
            if schema_name is not None:
                env.execute(f"SET LOCAL search_path TO {quote_ident(schema_name)}")
            env.run_migrations()
    return buffer.chunks
