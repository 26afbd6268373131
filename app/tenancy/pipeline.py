"""Many statements in one network round trip, each statement its own protocol message.

Onboarding and the fan-out send a schema's whole DDL at once. They used to join the
statements into one text (PostgreSQL's simple query protocol runs them in order), but
Citus refuses that: a ``CREATE INDEX`` on a distributed table, sent in a message that
holds other statements, is forwarded to the worker with the whole message as its
text, and the worker answers "cannot insert multiple commands into a prepared
statement". psycopg's pipeline mode sends each statement as its own Parse/Bind/Execute
and one Sync at the end: every server, Citus included, sees single statements, and
the client still waits for the network once.

On an error the server skips every later statement up to the Sync (a ``COMMIT`` among
them), so a transaction begun in the batch is left aborted and the error is raised
here: the caller rolls back, as after a failed multi-statement message.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import psycopg


def execute(
    connection: psycopg.Connection[Any], statements: Sequence[str], *, rows: Collection[int] = ()
) -> dict[int, Any]:
    """Send ``statements`` (no parameters, ``%`` as it is) in one round trip; raise the first error.

    ``rows``: indexes (negative ones count from the end) of the statements whose first
    row is wanted; the result maps each to its row (None when it returned none).
    Statements are never prepared server-side: DDL texts repeat across schemas but run
    once per schema, and Citus plans each routed statement itself.
    """
    wanted = {index % len(statements) for index in rows}
    cursors: dict[int, psycopg.Cursor[Any]] = {}
    with connection.pipeline():
        shared = connection.cursor()
        for index, statement in enumerate(statements):
            cursor = shared
            if index in wanted:
                cursor = cursors[index] = connection.cursor()
            cursor.execute(statement, prepare=False)
    found = {
        index: cursor.fetchone() if cursor.description is not None else None
        for index, cursor in cursors.items()
    }
    return {index: found[index % len(statements)] for index in rows}
