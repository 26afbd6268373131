"""Many statements in one network round trip: one message, or pipelined one statement a message.

Onboarding and the fan-out send a schema's whole DDL at once. On plain PostgreSQL the
statements travel joined in one simple-protocol message, which the server runs in
order. Citus refuses that: a ``CREATE INDEX`` on a distributed table, sent in a message
that holds other statements, is forwarded to the worker with the whole message as its
text, and the worker answers "cannot insert multiple commands into a prepared
statement". There, psycopg's pipeline mode sends each statement as its own
Parse/Bind/Execute and one Sync at the end: single statements for the server, one wait
on the network for the client.

Why not pipeline everywhere: it costs the client about 50 µs of Python per statement
(psycopg's per-``execute`` work), measured as +0.5 s of client CPU per 1,000 schemas in
``bench/fanout.py`` (docs/benchmarks.md), and plain PostgreSQL does not need it.

On an error the server skips every later statement (in one message, or up to the Sync),
a ``COMMIT`` among them, so a transaction begun in the batch is left aborted and the
error is raised here: the caller rolls back. Either way the results are the same.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:  # the worker's hot path imports this module without SQLAlchemy
    from sqlalchemy.engine import Connection


def execute(
    connection: psycopg.Connection[Any], statements: Sequence[str], *, rows: Collection[int] = (),
    pipelined: bool = False,
) -> dict[int, Any]:
    """Send ``statements`` (no parameters, ``%`` as it is) in one round trip; raise the first error.

    ``pipelined``: one protocol message per statement (Citus); else one message for all.
    ``rows``: indexes (negative ones count from the end) of the statements whose first
    row is wanted; the result maps each to its row (None when it returned none).
    """
    wanted = {index % len(statements) for index in rows}
    found = _pipelined(connection, statements, wanted) if pipelined else _one_message(connection, statements, wanted)
    return {index: found[index % len(statements)] for index in rows}



def driver_of(connection: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy one, to send it statements directly."""
    driver = connection.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):  # None once invalidated; another driver never
        raise TypeError(f"expected an open psycopg connection, not {type(driver).__name__}")
    return driver


def _one_message(connection: psycopg.Connection[Any], statements: Sequence[str], wanted: set[int]) -> dict[int, Any]:
    # No parameters: psycopg sends the text as it is, in one simple-protocol message, and
    # hands back one result per statement (nextset), a command's with no description.
    cursor = connection.cursor()
    cursor.execute(";".join(statements))
    found: dict[int, Any] = {}
    index = 0
    while True:
        if index in wanted:
            found[index] = cursor.fetchone() if cursor.description is not None else None
        index += 1
        if not cursor.nextset():
            return found


def _pipelined(connection: psycopg.Connection[Any], statements: Sequence[str], wanted: set[int]) -> dict[int, Any]:
    # Never prepared server-side: DDL texts repeat across schemas but run once per schema.
    cursors: dict[int, psycopg.Cursor[Any]] = {}
    with connection.pipeline():
        shared = connection.cursor()
        for index, statement in enumerate(statements):
            cursor = shared
            if index in wanted:
                cursor = cursors[index] = connection.cursor()
            cursor.execute(statement, prepare=False)
    return {index: cursor.fetchone() if cursor.description is not None else None
            for index, cursor in cursors.items()}
