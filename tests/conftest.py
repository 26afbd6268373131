"""Tenantry's own suite uses the fixtures it ships (app.testing, a pytest11 plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.testing import drop_tenants


@pytest.fixture(autouse=True)
def _clean_tenants(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the database, drop every tenant it created, by any route."""
    uses_db = {"engine", "app", "tenantry_database_url"} & set(request.fixturenames)
    engine: Engine | None = request.getfixturevalue("engine") if uses_db else None
    yield
    if engine is not None:
        drop_tenants(engine)
