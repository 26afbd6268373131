"""Tenantry's own suite uses the fixtures it ships (app.testing, a pytest11 plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.testing import drop_tenants


@pytest.fixture(autouse=True)
def _clean_tenants(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the database, drop every tenant it created, by any route."""
    yield
    if "engine" in request.fixturenames or "app" in request.fixturenames:
        engine: Engine = request.getfixturevalue("engine")
        drop_tenants(engine)
