"""Logs, metrics and probes as an operator sees them: the JSON lines on stderr, the /metrics text.

The secret test reads two things: the lines the app's handler writes (what ships to a
log store) and the log records themselves (pytest's caplog, which bypasses our
redaction), so it fails if a credential reaches a record at all, not only if the
scrubber misses it.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from app.extensions import db
from app.testing import ADMIN_TOKEN, assert_problem

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """Apps made here reconfigure the process's logging (INFO, JSON): put it back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def json_app(make_app, logging_restored):
    return make_app(LOG_FORMAT="json", LOG_LEVEL="INFO")


def json_lines(err: str) -> list[dict]:
    """Every line on stderr is one JSON object (a traceback included)."""
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def provision(client, slug: str) -> str:
    response = client.post("/v1/admin/tenants", json={"slug": slug, "name": slug}, headers=ADMIN)
    assert response.status_code == 201, response.json
    return response.json["api_key"]["token"]


def test_no_credential_reaches_the_logs_and_request_lines_name_tenant_and_request(json_app, capsys, caplog):
    caplog.set_level(logging.INFO)
    client = json_app.test_client()
    first, second = provision(client, "obs_alpha"), provision(client, "obs_beta")
    made = client.post("/v1/api-keys", json={"role": "viewer"}, headers={"Authorization": f"Bearer {first}"})
    assert made.status_code == 201
    keys = [first, second, made.json["token"]]
    for key in keys:
        assert client.get("/v1/repositories", headers={
            "Authorization": f"Bearer {key}", "X-Request-ID": "obs-ok-1"}).status_code == 200
        for header in (key, f"Token {key}", f"Bearer {key} extra", f"Basic {key}", f"Bearer  {key[:-3]}"):
            assert client.get("/v1/repositories", headers={"Authorization": header}).status_code == 401
        client.get(f"/v1/repositories?api_key={key}&token={ADMIN_TOKEN}", headers={"Authorization": f"Bearer {key}"})
        client.get("/v1/repositories", headers={"Authorization": f"Bearer {key}", "X-Tenant": key})  # 404, logged
        client.get(f"/v1/admin/tenants?key={key}", headers={"Authorization": f"Bearer {key}"})  # 403
    client.get(f"/v1/admin/tenants?token={ADMIN_TOKEN}", headers=ADMIN)
    client.get("/v1/admin/tenants", headers={"Authorization": f"Token {ADMIN_TOKEN}"})
    client.patch("/v1/admin/tenants/obs_beta", json={"status": "suspended"}, headers=ADMIN)
    client.get("/v1/repositories", headers={"Authorization": f"Bearer {second}"})  # suspended: 403

    shipped = capsys.readouterr().err
    for secret in (*keys, ADMIN_TOKEN):
        assert secret not in shipped
        assert secret not in caplog.text
    lines = json_lines(shipped)
    requests = [line for line in lines if line["logger"] == "app.requests"]
    ok = [line for line in requests if line["request_id"] == "obs-ok-1"]
    assert {line["tenant"] for line in ok} == {"obs_alpha", "obs_beta"}
    assert all(line["route"] == "/v1/repositories" and line["status"] == 200 and line["key_id"] for line in ok)
    assert all(set(line) >= {"request_id", "tenant", "key_id", "method", "route", "status", "duration_ms"}
               for line in requests)
    assert all("?" not in (line["route"] or "") for line in requests)


def test_the_request_line_sends_nothing_to_the_database_after_the_commit(make_app, logging_restored, tenant, engine):
    """The line is written after the COMMIT: reading the (expired) tenant or key objects then
    would begin a new transaction, as the tenant's role where there is one."""
    from sqlalchemy import event

    app = make_app(LOG_LEVEL="INFO")
    with app.app_context():
        app_engine = db.engine
    seen: list[str] = []
    record = lambda *args: seen.append("COMMIT" if len(args) == 1 else args[2].split()[0])  # noqa: E731
    event.listen(app_engine, "commit", record)
    event.listen(app_engine, "before_cursor_execute", record)
    try:
        assert app.test_client().get("/v1/repositories", headers=tenant.auth).status_code == 200
    finally:
        event.remove(app_engine, "commit", record)
        event.remove(app_engine, "before_cursor_execute", record)
    assert seen[-1] == "COMMIT", seen


def test_lifecycle_events_are_logged_at_commit_with_the_request_id(json_app, capsys):
    client = json_app.test_client()
    provision(client, "obs_life")
    for status, rid in (("suspended", "obs-sus"), ("active", "obs-res")):
        client.patch("/v1/admin/tenants/obs_life", json={"status": status}, headers={**ADMIN, "X-Request-ID": rid})
    client.delete("/v1/admin/tenants/obs_life", headers={**ADMIN, "X-Request-ID": "obs-del"})
    client.post("/v1/admin/tenants", json={"slug": "obs_life", "name": "x", "plan": "nope"}, headers=ADMIN)
    events = {line["event"]: line for line in json_lines(capsys.readouterr().err) if line.get("event")}
    assert events["tenant.provisioned"]["tenant"] == "obs_life" and events["tenant.provisioned"]["duration_ms"] > 0
    assert (events["tenant.suspended"]["tenant"], events["tenant.suspended"]["request_id"]) == ("obs_life", "obs-sus")
    assert events["tenant.resumed"]["request_id"] == "obs-res"
    assert events["tenant.deleted"]["request_id"] == "obs-del"
    assert events["tenant.provisioning_failed"]["error"] == "UnknownPlan"


def test_a_rolled_back_change_logs_nothing(app, session_factory, tenant, caplog):
    from app.tenancy import lifecycle

    caplog.set_level(logging.INFO, logger="app.tenancy")
    with session_factory() as session:
        lifecycle.update_tenant(session, tenant.slug, status="suspended")
        session.rollback()
    assert not [r for r in caplog.records if getattr(r, "event", None) == "tenant.suspended"]


def test_the_console_format_is_one_readable_line_with_the_fields(make_app, logging_restored, capsys):
    client = make_app(LOG_LEVEL="INFO").test_client()
    client.get("/healthz", headers={"X-Request-ID": "obs-console"})
    [line] = [line for line in capsys.readouterr().err.splitlines() if "obs-console" in line]
    assert re.search(r"INFO app\.requests: GET /healthz 200 [\d.]+ms event=request request_id=obs-console", line)
    assert "route=/healthz status=200 duration_ms=" in line


def test_a_fanout_run_logs_its_start_and_end(json_app, engine):
    result = json_app.test_cli_runner().invoke(args=["tenants", "migrate", "--json"])
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    # The CLI's own progress lines are plain text on the same stderr; the log lines are JSON.
    logged = json_lines("\n".join(line for line in result.stderr.splitlines() if line.startswith("{")))
    events = {line["event"]: line for line in logged if line.get("event")}
    assert events["fanout.started"]["run_id"] == run_id
    assert (events["fanout.finished"]["run_id"], events["fanout.finished"]["run_status"]) == (run_id, "succeeded")


# --- metrics ---------------------------------------------------------------------------


def samples(body: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(body) for s in family.samples]


def value(body: str, name: str, *, absent: float | None = None, **labels: str) -> float:
    """The one sample of ``name`` with ``labels``; ``absent`` when there is none (if given)."""
    found = [v for n, ls, v in samples(body) if n == name and all(ls.get(k) == w for k, w in labels.items())]
    if not found and absent is not None:
        return absent
    [one] = found
    return one


def test_metrics_count_requests_by_route_with_no_tenant_anywhere(app, client, make_tenant):
    tenants = [make_tenant() for _ in range(3)]
    for t in tenants:
        for path in ("/v1/repositories", "/v1/repositories/424242", f"/v1/repositories?x={t.slug}", f"/{t.slug}"):
            client.get(path, headers=t.auth)
    client.open("/v1/repositories", method="BREW", headers=tenants[0].auth)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain; version=0.0.4")
    body = response.get_data(as_text=True)
    found = samples(body)
    for name, labels, _ in found:
        assert "tenant" not in labels, name
        for label_value in labels.values():
            assert not any(t.slug in label_value for t in tenants), (name, labels)
    assert value(body, "tenantry_http_requests_total", route="/v1/repositories", status="200", method="GET") >= 3
    assert value(body, "tenantry_http_requests_total", route="/v1/repositories/<int:repository_id>",
                 status="404", method="GET") >= 3
    assert value(body, "tenantry_http_requests_total", route="<unmatched>", status="404", method="GET") >= 3
    # A method no rule takes (405) matched no rule: like a 404, it cannot name a route.
    assert value(body, "tenantry_http_requests_total", route="<unmatched>", status="405", method="OTHER") >= 1
    assert value(body, "tenantry_http_request_duration_seconds_count", route="/v1/repositories",
                 status="200", method="GET") >= 3
    assert value(body, "tenantry_db_pool_size") == app.config["DB_POOL_SIZE"]
    assert value(body, "tenantry_db_pool_checked_out") == 0  # every request gave its connection back
    assert value(body, "tenantry_metrics_database_up") == 1


def test_metrics_report_provisioning_and_the_last_fanout_run(app, client, engine):
    before = value(client.get("/metrics").get_data(as_text=True), "tenantry_provisionings_total",
                   outcome="succeeded", absent=0)
    provision(client, "obs_metrics")
    with engine.begin() as conn:  # one tenant behind head, as a fan-out would find it
        conn.execute(text("UPDATE public.tenants SET schema_revision = 't0001' WHERE slug = 'obs_metrics'"))
    body = client.get("/metrics").get_data(as_text=True)
    assert value(body, "tenantry_provisionings_total", outcome="succeeded") == before + 1
    assert value(body, "tenantry_provisioning_duration_seconds_count", outcome="succeeded") >= 1
    assert value(body, "tenantry_tenant_schemas_behind_head") >= 1

    result = app.test_cli_runner().invoke(args=["tenants", "migrate", "--json"])
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    body = client.get("/metrics").get_data(as_text=True)
    assert value(body, "tenantry_fanout_last_run_id") == run_id
    assert value(body, "tenantry_fanout_last_run_status", status="succeeded") == 1
    assert value(body, "tenantry_fanout_last_run_status", status="failed") == 0
    assert value(body, "tenantry_fanout_schemas", state="done") >= 1
    assert value(body, "tenantry_fanout_schemas", state="remaining") == 0
    assert value(body, "tenantry_fanout_last_run_finished_timestamp_seconds") > 0
    assert value(body, "tenantry_tenant_schemas_behind_head") == 0

    admin = app.test_client()  # a suspension writes a billing event: the backlog gauges show it
    assert admin.patch("/v1/admin/tenants/obs_metrics", json={"status": "suspended"},
                       headers={"Authorization": f"Bearer {app.config['ADMIN_TOKEN']}"}).status_code == 200
    body = client.get("/metrics").get_data(as_text=True)
    with engine.connect() as conn:
        waiting, oldest = conn.execute(text("SELECT count(*), min(occurred_at) FROM public.billing_events"
                                            " WHERE acked_at IS NULL")).one()
    assert waiting >= 1
    assert value(body, "tenantry_billing_events_unacknowledged") == waiting
    assert value(body, "tenantry_billing_oldest_unacknowledged_timestamp_seconds") == oldest.timestamp()


def test_metrics_can_want_a_token_or_be_switched_off(make_app):
    guarded = make_app(METRICS_TOKEN="scrape-secret-0123").test_client()
    assert_problem(guarded.get("/metrics"), 401, "unauthorized")
    assert_problem(guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
    assert guarded.get("/metrics", headers={"Authorization": "Bearer scrape-secret-0123"}).status_code == 200

    off = make_app(METRICS_ENABLED=False).test_client()
    assert_problem(off.get("/metrics"), 404)
    assert "/metrics" not in off.get("/v1/openapi.json").json["paths"]
    # flask-smorest's Api is one object: the OpenAPI document is the last app's. Leave one
    # with the route behind, as the session's app has it, for the tests that read the document.
    make_app()


def test_metrics_is_documented_like_the_probes(make_app):
    operation = make_app().test_client().get("/v1/openapi.json").json["paths"]["/metrics"]["get"]
    assert operation["security"] == []
    assert "text/plain" in operation["responses"]["200"]["content"]


MULTIPROCESS_WORKER = textwrap.dedent(
    """
    import sys
    from app.testing import make_test_app
    app = make_test_app(sys.argv[1], PROMETHEUS_MULTIPROC_DIR=sys.argv[2])
    client = app.test_client()
    for _ in range(int(sys.argv[3])):
        client.get("/healthz")
    if sys.argv[4] == "scrape":
        sys.stdout.write(client.get("/metrics").get_data(as_text=True))
    """
)


def test_multiprocess_mode_sums_the_workers(tenantry_database_url, tmp_path: Path):
    """Two processes sharing PROMETHEUS_MULTIPROC_DIR, as gunicorn workers do: one scrape sees both."""

    def worker(requests: int, scrape: bool) -> str:
        return subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_WORKER, tenantry_database_url, str(tmp_path), str(requests),
             "scrape" if scrape else "-"],
            capture_output=True, text=True, timeout=120, check=True,
            env={"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "HOME": str(tmp_path)},
        ).stdout

    worker(3, scrape=False)
    body = worker(2, scrape=True)
    assert value(body, "tenantry_http_requests_total", route="/healthz", status="200") == 5
    assert value(body, "tenantry_metrics_database_up") == 1


# --- readiness --------------------------------------------------------------------------


def test_readiness_reports_tenant_schemas_behind_head_without_failing(client, make_tenant, engine):
    behind = make_tenant()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    at_head = ready.json["tenant_schemas_behind"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE public.tenants SET schema_revision = 't0001' WHERE slug = :s"), {"s": behind.slug})
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["tenant_schemas_behind"] == at_head + 1
    assert ready.json["tenant_head"] != "t0001"


def test_readiness_is_503_when_the_database_does_not_answer(make_app):
    app = make_app("postgresql://nobody@127.0.0.1:1/none", DB_POOL_TIMEOUT=1)
    assert_problem(app.test_client().get("/readyz"), 503, "database-unavailable")
    body = app.test_client().get("/metrics")
    assert body.status_code == 200 and value(body.get_data(as_text=True), "tenantry_metrics_database_up") == 0
