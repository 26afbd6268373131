"""What an attacker sends at the compose stack, through its proxy, the one published port.

The same attacks as tests/e2e/test_production_stack.py (from tests/attacks.py), here
against the real deployment: nginx (deploy/nginx.conf in the proxy container), gunicorn
in the image, PgBouncer, PostgreSQL and Redis as compose.yaml wires them (fixture
``stack``, podman_stack.py). And one the loopback stack cannot do: the database
dropping the app's connections (pg_terminate_backend) while requests are in flight.
After each attack the stack must still be ready.
"""

from __future__ import annotations

import http.client
import threading
import time

from podman_stack import Stack, wait_until_ready

from tests.attacks import MALFORMED, chunked_body_failures, control_request, hold_slow_clients, malformed_failures

HOST = "127.0.0.1"


def port_of(stack: Stack) -> int:
    return int(stack.base_url.rpartition(":")[2])


def new_tenant(stack: Stack, slug: str, plan: str = "enterprise") -> str:
    status, body = stack.request("POST", "/v1/admin/tenants", stack.admin_token,
                                 {"slug": slug, "name": slug, "plan": plan})
    assert status == 201, body
    return body["api_key"]["token"]


def assert_ready_again(stack: Stack, after: str) -> None:
    wait_until_ready(stack, f"the stack ready again after {after}")


def test_idle_and_slowloris_connections_do_not_stall_another_tenant(stack: Stack):
    """1,000 connections that send nothing and 100 that send a header line every 4 s, held
    for 20 s against the proxy: a control tenant's requests all succeed, p50 under 100 ms."""
    token = new_tenant(stack, "slowctl")
    assert stack.request("POST", "/v1/repositories", token,
                         {"github_repo_id": 1, "owner": "octo", "name": "hello"})[0] == 201
    port = port_of(stack)
    run = hold_slow_clients(HOST, port, control_request(HOST, port, token), idle=1000, slowloris=100, seconds=20)
    print(run.summary())
    assert run.failures == [], run.summary() + "\n" + "\n".join(sorted(set(run.failures))[:5])
    assert run.p50_ms < 100, run.summary()
    # The attack really was held: nginx closed the idle ones on its timeout, and they came back.
    assert run.held_at_end >= 1000, run.summary()
    assert run.closed_by_server >= 1000, run.summary()
    assert_ready_again(stack, "the slow clients")


def test_a_chunked_body_meets_the_same_size_and_type_rules(stack: Stack):
    port = port_of(stack)
    token = new_tenant(stack, "chunked")
    failures = chunked_body_failures(HOST, port, token)
    assert not failures, "\n".join(failures)
    status, body = stack.request("GET", "/v1/repositories", token)
    assert status == 200 and [r["name"] for r in body["items"]] == ["chunked"], body
    assert_ready_again(stack, "the chunked bodies")


def test_requests_the_http_parser_refuses_are_problem_json(stack: Stack):
    port = port_of(stack)
    failures = malformed_failures(HOST, port)
    assert not failures, f"{len(failures)} of {len(MALFORMED)} through the proxy:\n" + "\n".join(failures)
    assert_ready_again(stack, "the malformed requests")


TERMINATE = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE datname = 'tenantry' AND pid <> pg_backend_pid() AND backend_type = 'client backend'")


def test_database_connections_terminated_mid_traffic_cost_503s_never_500s(stack: Stack):
    """PostgreSQL drops every connection of the app (through PgBouncer) three times while a
    tenant's requests go on: each answer is 200 or a problem+json 503, and the stack serves
    again right after."""
    token = new_tenant(stack, "terminated")
    port = port_of(stack)
    answers: list[tuple[int, str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            conn = http.client.HTTPConnection(HOST, port, timeout=15)
            try:
                conn.request("GET", "/v1/repositories", headers={"Authorization": f"Bearer {token}"})
                response = conn.getresponse()
                response.read()
                answers.append((response.status, response.getheader("Content-Type", "")))
            except Exception as exc:  # noqa: BLE001 - a reset or timeout is a finding
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for thread in threads:
        thread.start()
    terminated = []
    try:
        time.sleep(1.0)
        for _ in range(3):
            terminated.append(int(stack.psql(TERMINATE)))
            time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    statuses = [status for status, _ in answers]
    print(f"terminated {terminated} connections; answers: "
          f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }, errors: {len(errors)}")
    assert sum(terminated) > 0, terminated  # there were connections to drop
    assert not errors, errors[:5]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert all(kind == "application/problem+json" for status, kind in answers if status == 503), answers
    assert statuses.count(200) > 0, statuses
    assert_ready_again(stack, "the terminated connections")
    assert stack.request("GET", "/v1/repositories", token)[0] == 200
