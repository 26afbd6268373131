"""The console's sign-in throttle behind a reverse proxy (``TRUSTED_PROXY_COUNT``).

Every request reaches the app from the proxy's address, as through compose.yaml's
nginx: the client test sets ``REMOTE_ADDR`` to it, and sends the X-Forwarded-For that
nginx's ``$proxy_add_x_forwarded_for`` would (what the client sent, then the client's
real address). Each app here is new, so its in-memory throttle starts empty.
"""

from __future__ import annotations

import logging

import pytest

from app.console.auth import FAILED_SIGN_INS
from tests.e2e.test_console import sign_in

PROXY = "172.18.0.5"
ATTACKER, OPERATOR = "203.0.113.7", "198.51.100.9"


@pytest.fixture
def via_proxy(make_app):
    """``via_proxy(count)``: a test client of an app with ``TRUSTED_PROXY_COUNT=count``, reached from the proxy."""
    def make(count: int):
        client = make_app(TRUSTED_PROXY_COUNT=count).test_client()
        client.environ_base["REMOTE_ADDR"] = PROXY
        return client
    return make


def forwarded(chain: str) -> dict:
    return {"headers": {"X-Forwarded-For": chain}}


def fail_until_throttled(client, chains: list[str]) -> None:
    """One failed sign-in per chain (as many as the throttle allows)."""
    assert len(chains) == FAILED_SIGN_INS.amount
    for chain in chains:
        assert sign_in(client, token="wrong", **forwarded(chain)).status_code == 403


def test_behind_one_proxy_each_client_address_is_throttled_on_its_own(via_proxy, caplog):
    client = via_proxy(1)
    with caplog.at_level(logging.WARNING, logger="app.console.auth"):
        fail_until_throttled(client, [ATTACKER] * FAILED_SIGN_INS.amount)
    assert f"console sign-in refused from {ATTACKER}" in caplog.text and PROXY not in caplog.text
    assert sign_in(client, **forwarded(ATTACKER)).status_code == 429  # even with the right token
    assert sign_in(client, **forwarded(OPERATOR)).status_code == 303  # not locked out by the attacker


def test_a_hop_the_client_prepends_does_not_escape_the_throttle(via_proxy):
    """The client writes X-Forwarded-For itself; nginx appends its real address: only that one counts."""
    client = via_proxy(1)
    fail_until_throttled(client, [f"10.0.0.{i}, {ATTACKER}" for i in range(FAILED_SIGN_INS.amount)])
    assert sign_in(client, **forwarded(f"{OPERATOR}, {ATTACKER}")).status_code == 429


def test_with_no_trusted_proxy_x_forwarded_for_is_ignored(via_proxy):
    """Directly exposed (the default): every client address in the header is a lie the app does not read."""
    client = via_proxy(0)
    fail_until_throttled(client, [f"10.0.0.{i}" for i in range(FAILED_SIGN_INS.amount)])
    assert sign_in(client, **forwarded(OPERATOR)).status_code == 429  # the proxy's address is throttled
