"""Citus: whether the database is a Citus coordinator, its nodes, and where tenant schemas live.

With schema-based sharding on (``citus.enable_schema_based_sharding``), every tenant
schema Tenantry creates becomes a *distributed schema*: its tables are colocated on one
worker, and statements are routed there by the search_path. Nothing in the request
path changes; this module answers the operator's questions (which node holds a
tenant, how many tenants and bytes each node has, which tenant schemas are not
distributed yet) and moves schemas between workers (:mod:`app.tenancy.placement`).

Detection is one catalog read: the ``citus`` extension in this database. It is done
once per engine, on its first connection, and logged once.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .naming import SCHEMA_PREFIX

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

_FACTS = (
    "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'citus'),"
    " current_setting('citus.enable_schema_based_sharding', true)"
)


@dataclass(frozen=True)
class Citus:
    """What the first connection found: the extension's version and whether new schemas are distributed."""

    version: str
    schema_sharding: bool


_detected: weakref.WeakKeyDictionary[Engine, Citus | None] = weakref.WeakKeyDictionary()


def detect(connection: Connection) -> Citus | None:
    """Citus in this database, or None on plain PostgreSQL."""
    return _citus(*connection.exec_driver_sql(_FACTS).one())


def _citus(version: str | None, sharding: str | None) -> Citus | None:
    """What a row of :data:`_FACTS` says."""
    return None if version is None else Citus(version, sharding == "on")


def citus_of(engine: Engine) -> Citus | None:
    """Citus on this engine's database (decided once per engine, logged once)."""
    if engine not in _detected:
        with engine.connect() as connection:
            _remember(engine, detect(connection))
    return _detected[engine]


def _remember(engine: Engine, found: Citus | None) -> None:
    if engine in _detected:
        return
    _detected[engine] = found
    if found is not None:
        log.info(
            "Citus %s detected: schema-based sharding %s", found.version,
            "on (new tenant schemas are distributed)" if found.schema_sharding
            else "off (new tenant schemas stay on the coordinator; see docs/scale-out.md)",
            extra={"event": "citus.detected", "citus_version": found.version},
        )


def detect_on_first_connect(engine: Engine) -> None:
    """Detect (and log) Citus when the engine first connects, whatever connects it first."""
    from sqlalchemy import event

    def first_connect(dbapi_connection: Any, _record: object) -> None:
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(_FACTS)
                found = _citus(*cursor.fetchone())
            finally:
                cursor.close()
                dbapi_connection.rollback()
            _remember(engine, found)
        except Exception as exc:  # asked again (citus_of) by whoever needs the answer
            log.warning("Citus detection failed: %s", exc)

    event.listen(engine, "first_connect", first_connect)


# --- nodes and placements -------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    node_id: int
    host: str
    port: int
    role: str  # coordinator | worker
    active: bool
    takes_new_schemas: bool  # pg_dist_node.shouldhaveshards
    tenants: int = 0
    bytes: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def as_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "address": self.address, "host": self.host, "port": self.port,
                "role": self.role, "active": self.active, "takes_new_schemas": self.takes_new_schemas,
                "tenants": self.tenants, "bytes": self.bytes}


def nodes(connection: Connection) -> list[Node]:
    """The cluster's primary nodes, coordinator first."""
    rows = connection.exec_driver_sql(
        "SELECT nodeid, nodename, nodeport, groupid = 0, isactive, shouldhaveshards FROM pg_dist_node"
        " WHERE noderole = 'primary' ORDER BY groupid <> 0, nodename, nodeport"
    ).all()
    return [Node(node_id, host, port, "coordinator" if coordinator else "worker", active, takes)
            for node_id, host, port, coordinator, active, takes in rows]


#: The node holding each distributed tenant schema (its tables share one placement group).
_PLACEMENTS = f"""
SELECT DISTINCT ON (s.schemaid) s.schemaid::regnamespace::text, n.nodeid, n.nodename, n.nodeport
FROM pg_dist_schema s
JOIN pg_dist_partition p ON p.colocationid = s.colocationid
JOIN pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid
JOIN pg_dist_placement pl ON pl.shardid = sh.shardid
JOIN pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
WHERE starts_with(s.schemaid::regnamespace::text, '{SCHEMA_PREFIX}')
"""


@dataclass(frozen=True)
class Placement:
    schema_name: str
    node_id: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def placements(connection: Connection, schema_names: list[str] | None = None) -> dict[str, Placement]:
    """Schema name -> the node its tables live on, for distributed tenant schemas.

    A distributed schema without tables yet has no placement and is absent.
    """
    sql, params = _PLACEMENTS, {}
    if schema_names is not None:
        sql += " AND s.schemaid::regnamespace::text = ANY(%(names)s)"
        params["names"] = schema_names
    rows = connection.exec_driver_sql(sql, params).all()
    return {name: Placement(name, node_id, host, port) for name, node_id, host, port in rows}


def placement_of(connection: Connection, schema_name: str) -> Placement | None:
    return placements(connection, [schema_name]).get(schema_name)


def address_of(connection: Connection, schema_name: str) -> str | None:
    """``HOST:PORT`` of the worker holding the schema; None while it is not distributed."""
    placed = placement_of(connection, schema_name)
    return placed.address if placed else None


def schema_bytes(connection: Connection) -> dict[str, int]:
    """Bytes of each distributed tenant schema (all its shards, indexes included), asked of the workers."""
    rows = connection.exec_driver_sql(
        "SELECT s.schemaid::regnamespace::text, coalesce(sum(sz.size), 0)::bigint"
        " FROM pg_dist_schema s JOIN pg_dist_partition p ON p.colocationid = s.colocationid"
        " LEFT JOIN citus_shard_sizes() sz ON sz.shard_id IN"
        "   (SELECT shardid FROM pg_dist_shard WHERE logicalrelid = p.logicalrelid)"
        f" WHERE starts_with(s.schemaid::regnamespace::text, '{SCHEMA_PREFIX}')"
        " GROUP BY 1"
    ).all()
    return {name: size for name, size in rows}


@dataclass
class ClusterStatus:
    citus_version: str
    schema_sharding: bool
    nodes: list[Node]
    tenants: int  # rows in public.tenants
    not_distributed: list[str] = field(default_factory=list)  # tenant slugs whose schema is local

    def as_dict(self) -> dict[str, Any]:
        return {"citus_version": self.citus_version, "schema_sharding": self.schema_sharding,
                "tenants": self.tenants, "nodes": [n.as_dict() for n in self.nodes],
                "not_distributed": self.not_distributed}


def status(connection: Connection, *, with_bytes: bool = True) -> ClusterStatus:
    """Nodes with their tenants and bytes, and the tenants whose schema is not distributed.

    ``with_bytes`` asks every worker for its shard sizes (one round trip per worker).
    """
    found = detect(connection)
    if found is None:
        raise NotCitus()
    tenants = connection.exec_driver_sql("SELECT slug, schema_name FROM public.tenants ORDER BY slug").all()
    placed = placements(connection)
    sizes = schema_bytes(connection) if with_bytes else {}
    counts: dict[int, int] = {}
    volume: dict[int, int] = {}
    for name, placement in placed.items():
        counts[placement.node_id] = counts.get(placement.node_id, 0) + 1
        volume[placement.node_id] = volume.get(placement.node_id, 0) + sizes.get(name, 0)
    distributed = _distributed_schemas(connection)
    listed = [replace(n, tenants=counts.get(n.node_id, 0), bytes=volume.get(n.node_id, 0))
              for n in nodes(connection)]
    return ClusterStatus(
        citus_version=found.version, schema_sharding=found.schema_sharding, nodes=listed,
        tenants=len(tenants),
        not_distributed=[slug for slug, schema in tenants if schema not in distributed],
    )


def _distributed_schemas(connection: Connection) -> set[str]:
    return set(connection.exec_driver_sql(
        "SELECT schemaid::regnamespace::text FROM pg_dist_schema").scalars())


class NotCitus(Exception):
    """Raised by cluster operations on a database without Citus."""

    def __str__(self) -> str:
        return "this database is not a Citus coordinator (no citus extension); see docs/scale-out.md"
