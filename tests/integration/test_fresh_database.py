"""app.testing.fresh_database (the shipped fixture helper, used by the benchmarks too)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool


def _exists(server_url: str, name: str) -> bool:
    engine = create_engine(server_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar())
    finally:
        engine.dispose()


def test_the_database_is_dropped_when_the_block_raises(tenantry_database_url):
    from app.testing import fresh_database

    with pytest.raises(RuntimeError, match="the body failed"), fresh_database(tenantry_database_url) as url:
        name = make_url(url).database
        assert _exists(tenantry_database_url, name)
        raise RuntimeError("the body failed")
    assert not _exists(tenantry_database_url, name)
