"""Fixtures of the end-to-end tests: the console's (a client, one signed in, cleanup), and a scratch Redis prefix."""

from __future__ import annotations

import uuid

import pytest

from app.testing import drop_tenants
from tests.e2e.test_console import sign_in
from tests.stack import REDIS_URL, redis_answers


@pytest.fixture
def console(app):
    """A test client from an address of its own: failed sign-ins of other tests never throttle it."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"
    return client


@pytest.fixture
def operator(console):
    """The console client, signed in as alice."""
    assert sign_in(console).status_code == 303
    return console


@pytest.fixture
def forget(engine):
    """``forget(slug)``: drop a tenant a test provisioned through the console (a form, a browser), after it."""
    made: list[str] = []
    yield made.append
    drop_tenants(engine, made)


@pytest.fixture
def redis_prefix():
    """A key prefix of the test's own in the local Redis; every key holding it is deleted after the test.

    Skipped when no Redis answers (``.ci/run`` starts one, so CI never skips).
    """
    if not redis_answers():
        pytest.skip("no Redis answers on 127.0.0.1:6379, so shared storage cannot be tested")
    import redis

    prefix = f"tenantry-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
