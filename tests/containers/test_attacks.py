"""What an attacker sends at the compose stack, through its proxy, the one published port.

The same attacks as tests/e2e/test_production_stack.py (from tests/attacks.py), here
against the real deployment: nginx (deploy/nginx.conf in the proxy container), gunicorn
in the image, PgBouncer, PostgreSQL and Redis as compose.yaml wires them (fixture
``stack``, podman_stack.py). And two the loopback stack cannot do: the database
dropping the app's connections (pg_terminate_backend) while requests are in flight, and
refusing PgBouncer's next logins for a moment (PgBouncer then opens no server connection
for server_login_retry, which compose.yaml lowers). After each attack the stack must
still be ready.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from podman_stack import Stack, logs, wait_until_ready

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
    with logs_on_failure(stack):
        run = hold_slow_clients(HOST, port, control_request(HOST, port, token), idle=1000, slowloris=100,
                                seconds=20)
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


@contextmanager
def logs_on_failure(stack: Stack) -> Iterator[None]:
    """If what runs inside fails: PgBouncer's, the app's and the proxy's logs, printed (pytest shows a
    failed test's output). What PgBouncer did with its server connections (a failed login
    holds new ones back for server_login_retry) and what the app answered."""
    try:
        yield
    except Exception:
        print(logs(stack.container("pgbouncer"), tail=200, chars=12000))
        print(logs(stack.container("app"), tail=100, chars=12000))
        print(logs(stack.container("proxy"), tail=60, chars=8000))
        raise


def traffic(stack: Stack, token: str, answers: list[tuple[int, str, float]], errors: list[str],
            stop: threading.Event) -> None:
    """A tenant's GET /v1/repositories, one after another until ``stop``: each answer's status,
    content type and seconds into ``answers``, each exception into ``errors``."""
    port = port_of(stack)
    while not stop.is_set():
        began = time.monotonic()
        conn = http.client.HTTPConnection(HOST, port, timeout=15)
        try:
            conn.request("GET", "/v1/repositories", headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Content-Type", ""), time.monotonic() - began))
        except Exception as exc:  # noqa: BLE001 - a reset or timeout is a finding
            errors.append(f"{type(exc).__name__} after {time.monotonic() - began:.1f} s: {exc}")
        finally:
            conn.close()


@contextmanager
def three_clients(stack: Stack, token: str) -> Iterator[tuple[list[tuple[int, str, float]], list[str]]]:
    """Three threads of ``traffic`` while the block runs; its answers and errors."""
    answers: list[tuple[int, str, float]] = []
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=traffic, args=(stack, token, answers, errors, stop)) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        yield answers, errors
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def summary(answers: list[tuple[int, str, float]], errors: list[str]) -> str:
    statuses = [status for status, _, _ in answers]
    slowest = max((seconds for _, _, seconds in answers), default=0.0)
    return (f"answers: { {s: statuses.count(s) for s in sorted(set(statuses))} }, slowest {slowest:.1f} s, "
            f"errors: {len(errors)}")


def assert_200s_and_problem_503s(answers: list[tuple[int, str, float]], errors: list[str]) -> None:
    statuses = [status for status, _, _ in answers]
    assert not errors, errors[:5]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert all(kind == "application/problem+json" for status, kind, _ in answers if status == 503), answers
    assert statuses.count(200) > 0, statuses


TERMINATE = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE datname = 'tenantry' AND pid <> pg_backend_pid() AND backend_type = 'client backend'")


def test_database_connections_terminated_mid_traffic_cost_503s_never_500s(stack: Stack):
    """PostgreSQL drops every connection of the app (through PgBouncer) three times while a
    tenant's requests go on: each answer is 200 or a problem+json 503, and the stack serves
    again right after."""
    with logs_on_failure(stack):
        token = new_tenant(stack, "terminated")
        terminated = []
        with three_clients(stack, token) as (answers, errors):
            time.sleep(1.0)
            for _ in range(3):
                terminated.append(int(stack.psql(TERMINATE)))
                time.sleep(1.0)
        print(f"terminated {terminated} connections; {summary(answers, errors)}")
        assert sum(terminated) > 0, terminated  # there were connections to drop
        assert_200s_and_problem_503s(answers, errors)
        assert_ready_again(stack, "the terminated connections")
        assert stack.request("GET", "/v1/repositories", token)[0] == 200


ALLOW_CONNECTIONS = "ALTER DATABASE tenantry ALLOW_CONNECTIONS {}"
TERMINATE_ALL = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                 "WHERE datname = 'tenantry' AND backend_type = 'client backend'")


def test_a_failed_server_login_costs_503s_for_a_second_not_a_stall(stack: Stack):
    """PostgreSQL refuses new connections to the database for half a second and drops the
    ones it has, while a tenant's requests go on: PgBouncer's next server login fails, and
    it opens no other for server_login_retry (compose.yaml: 1 s; PgBouncer's default, 15 s,
    held a queued request 15 s). Each answer is 200 or a problem+json 503, none takes 5 s,
    and the stack serves again right after."""
    with logs_on_failure(stack):
        token = new_tenant(stack, "loginretry")
        with three_clients(stack, token) as (answers, errors):
            time.sleep(1.0)
            # From database postgres: meanwhile tenantry refuses psql too.
            stack.psql(ALLOW_CONNECTIONS.format("false"), database="postgres")
            try:
                terminated = int(stack.psql(TERMINATE_ALL, database="postgres"))
                time.sleep(0.5)  # PgBouncer logs in again at once, for the requests going on: refused
            finally:
                stack.psql(ALLOW_CONNECTIONS.format("true"), database="postgres")
            time.sleep(4.0)
        print(f"terminated {terminated} connections; {summary(answers, errors)}")
        assert terminated > 0, terminated  # there were connections to drop
        # The scenario happened: PgBouncer tried to log in while PostgreSQL refused.
        pgbouncer_log = logs(stack.container("pgbouncer"), tail=100000, chars=10_000_000)
        assert "is not currently accepting connections" in pgbouncer_log, "PgBouncer's login never failed"
        assert_200s_and_problem_503s(answers, errors)
        slowest = max(seconds for _, _, seconds in answers)
        assert slowest < 5, f"a request took {slowest:.1f} s: PgBouncer's server_login_retry not lowered?"
        assert_ready_again(stack, "the refused logins")
        assert stack.request("GET", "/v1/repositories", token)[0] == 200
