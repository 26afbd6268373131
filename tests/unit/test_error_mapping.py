"""Which exceptions mean "the database is away": 503 database-unavailable, never 500."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.api.errors import lookup


@pytest.mark.parametrize("exc", [
    OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
    InterfaceError("SELECT 1", {}, Exception("the connection is closed"), connection_invalidated=True),
    ProgrammingError("SELECT 1", {}, Exception("lost"), connection_invalidated=True),
    PoolTimeout("QueuePool limit reached"),
], ids=["operational", "interface-disconnect", "any-disconnect", "pool-timeout"])
def test_a_lost_or_unreachable_database_is_503(exc):
    kind = lookup(exc)
    assert (kind.status, kind.slug, kind.public_detail) == (503, "database-unavailable", False)


def test_an_interface_error_that_is_no_disconnect_stays_a_500():
    assert lookup(InterfaceError("SELECT 1", {}, Exception("bad parameter"))) is None
