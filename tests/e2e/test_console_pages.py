"""The console's plans, migrations and audit pages, and the overview's self-refreshing last-run section.

Changes made through a console form are checked where the admin API sees them (its
plan and audit endpoints), so the console and the API are shown to share one rule:
the same validation (a refused form creates nothing), the same service, the same
audit event, with the actor ``console:alice``.
"""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.e2e import test_console as console_tests
from tests.e2e import test_console_browser as browser_tests
from tests.e2e.test_console import post
from tests.e2e.test_fanout import Stream, add_repository

#: Chromium and gunicorn, for what only a browser shows (console.js at work).
browser = browser_tests.browser
server = browser_tests.server

# --- helpers -----------------------------------------------------------------------------


def page_of(response) -> str:
    return response.get_data(as_text=True)


def rows(page: str, table: str) -> list[str]:
    """The body rows of the table with id ``table``, as HTML."""
    body = re.search(rf'<table id="{table}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert body, page
    return re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S)


def next_link(page: str) -> str | None:
    found = re.search(r'rel="next" href="([^"]+)"', page)
    return html.unescape(found.group(1)) if found else None


def migrate(app, *args: str) -> dict:
    """Run ``flask tenants migrate --json`` on ``app``; its report (run_id, status …)."""
    result = app.test_cli_runner().invoke(args=["tenants", "migrate", "--json", *args])
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def plan_events(admin_client, name: str, action: str) -> list[dict]:
    events = admin_client.get("/v1/admin/audit-events", query_string={"action": action}).json["items"]
    return [e for e in events if e["resource"] == "plan" and e["resource_id"] == name]


@pytest.fixture
def plan_name(engine):
    """A fresh plan name; the plan the test creates with it is deleted afterwards."""
    name = f"c_{uuid.uuid4().hex[:12]}"
    yield name
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM public.plans WHERE name = :n"), {"n": name})


PLAN_FORM = {"max_repositories": "5", "rate_limit_per_minute": "", "monthly_price_cents": "900"}
LIMITS = ("max_repositories", "rate_limit_per_minute", "monthly_price_cents")


# --- navigation ----------------------------------------------------------------------------


def test_every_page_family_is_in_the_navigation_with_the_current_one_marked(operator, make_plan):
    overview = page_of(operator.get("/console/"))
    nav = re.search(r'<nav aria-label="Console">(.*?)</nav>', overview, re.S).group(1)
    assert re.findall(r">(\w+)</a>", nav) == ["Overview", "Tenants", "Plans", "Migrations", "Audit"]
    assert re.search(r'href="/console/" aria-current="page">Overview<', nav), nav
    edit = page_of(operator.get(f"/console/plans/{make_plan()}/edit"))
    assert re.search(r'href="/console/plans" aria-current="true">Plans<', edit)
    assert page_of(operator.get("/console/audit")).count("aria-current") == 1


def test_the_new_pages_carry_the_security_headers_and_need_a_session(operator, console, make_plan):
    paths = ["/console/plans", "/console/plans/new", f"/console/plans/{make_plan()}/edit", "/console/migrations",
             "/console/migrations/1", "/console/audit", "/console/runs/latest/fragment"]
    for path in paths:
        console_tests._assert_console_headers(operator.get(path))
    anonymous = console.application.test_client()
    for path in paths:
        response = anonymous.get(path)
        assert response.status_code == 302 and response.location.startswith("/console/sign-in"), path


# --- plans ---------------------------------------------------------------------------------


def test_the_plans_page_shows_limits_price_and_how_many_tenants_are_on_each(operator, make_plan, make_tenant):
    name = make_plan(max_repositories=3, rate_limit_per_minute=None, monthly_price_cents=1900)
    make_tenant(plan=name)
    make_tenant(plan=name)
    page = page_of(operator.get("/console/plans"))
    row = re.search(rf'<tr id="plan-{name}">(.*?)</tr>', page, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
    assert cells[:5] == [name, "3", "unlimited", "1900", "2"]
    assert f'href="/console/tenants?plan={name}"' in row
    assert '<th scope="col">Tenants</th>' in page


def test_a_plan_created_through_the_form_is_the_apis_and_audited_as_the_operator(operator, admin_client,
                                                                                 plan_name):
    form = page_of(operator.get("/console/plans/new"))
    for field in ("name", *LIMITS):
        assert f'<label for="{field}">' in form and f'id="{field}"' in form
    response = post(operator, "/console/plans/new", name=plan_name, **PLAN_FORM)
    assert response.status_code == 303 and response.location == "/console/plans"
    assert f"Created plan {plan_name}." in page_of(operator.get(response.location))
    created = admin_client.get(f"/v1/admin/plans/{plan_name}").json
    assert {k: created[k] for k in LIMITS} == {
        "max_repositories": 5, "rate_limit_per_minute": None, "monthly_price_cents": 900}
    [event] = plan_events(admin_client, plan_name, "plan.created")
    assert event["actor"] == "console:alice"
    assert event["changes"]["after"]["rate_limit_per_minute"] is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_repositories", "-1", "greater than or equal to 0"),
    ("rate_limit_per_minute", "0", "greater than or equal to 1"),
    ("monthly_price_cents", "nine", "Not a valid integer."),
    ("monthly_price_cents", "1.5", "Not a valid integer."),
    ("monthly_price_cents", "", "Field may not be null."),
    ("max_repositories", str(2**31), "less than or equal to 2147483647"),
])
def test_an_invalid_plan_is_422_with_the_error_at_its_field_the_values_kept_and_nothing_created(
    operator, admin_client, plan_name, field, value, message
):
    response = post(operator, "/console/plans/new", name=plan_name, **{**PLAN_FORM, field: value})
    assert response.status_code == 422
    page = page_of(response)
    error = re.search(rf'<p class="field-error" id="{field}-note">([^<]*)</p>', page)
    assert error and message in error.group(1), page
    assert re.search(rf'id="{field}" name="{field}" type="text" value="{re.escape(value)}"', page)
    assert f'value="{plan_name}"' in page  # what was typed stays
    assert 'aria-invalid="true"' in page and 'role="alert"' in page
    assert admin_client.get(f"/v1/admin/plans/{plan_name}").status_code == 404
    assert plan_events(admin_client, plan_name, "plan.created") == []


@pytest.mark.parametrize(("name", "message"), [("Not A Name", "Lowercase letters"), ("free", "exists already")])
def test_a_bad_or_taken_plan_name_is_422_at_the_name_field(operator, name, message, admin_client):
    before = admin_client.get("/v1/admin/plans/free").json
    response = post(operator, "/console/plans/new", name=name, **PLAN_FORM)
    assert response.status_code == 422
    assert message in re.search(r'id="name-note">([^<]*)<', page_of(response)).group(1)
    assert admin_client.get("/v1/admin/plans/free").json == before


def test_editing_a_plan_changes_its_limits_and_price_audited_as_the_operator(operator, admin_client, make_plan):
    name = make_plan(max_repositories=3, rate_limit_per_minute=None, monthly_price_cents=100)
    form = page_of(operator.get(f"/console/plans/{name}/edit"))
    assert 'name="max_repositories" type="text" value="3"' in form
    assert 'name="rate_limit_per_minute" type="text" value=""' in form  # unlimited
    assert 'id="name"' not in form  # the name is the plan's identity
    response = post(operator, f"/console/plans/{name}/edit", max_repositories="10", rate_limit_per_minute="120",
                    monthly_price_cents="100")
    assert response.status_code == 303 and response.location == "/console/plans"
    plan = admin_client.get(f"/v1/admin/plans/{name}").json
    assert (plan["max_repositories"], plan["rate_limit_per_minute"], plan["monthly_price_cents"]) == (10, 120, 100)
    [event] = plan_events(admin_client, name, "plan.updated")
    assert event["actor"] == "console:alice"
    assert event["changes"] == {"before": {"max_repositories": 3, "rate_limit_per_minute": None},
                                "after": {"max_repositories": 10, "rate_limit_per_minute": 120}}


def test_an_invalid_edit_is_422_and_changes_nothing(operator, admin_client, make_plan):
    name = make_plan(max_repositories=3)
    response = post(operator, f"/console/plans/{name}/edit", max_repositories="lots", rate_limit_per_minute="5",
                    monthly_price_cents="0")
    assert response.status_code == 422
    assert 'value="lots"' in page_of(response) and 'class="field-error" id="max_repositories-note"' in page_of(response)
    plan = admin_client.get(f"/v1/admin/plans/{name}").json
    assert (plan["max_repositories"], plan["rate_limit_per_minute"]) == (3, None)


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_a_plan_form_without_the_csrf_token_is_refused_and_changes_nothing(operator, admin_client, make_plan,
                                                                           plan_name, token):
    name = make_plan(max_repositories=3)
    csrf = {} if token is None else {"csrf_token": token}
    created = operator.post("/console/plans/new", data={**csrf, "name": plan_name, **PLAN_FORM})
    edited = operator.post(f"/console/plans/{name}/edit", data={**csrf, **PLAN_FORM})
    assert created.status_code == 400 and edited.status_code == 400
    assert "CSRF" in page_of(created)
    assert admin_client.get(f"/v1/admin/plans/{plan_name}").status_code == 404
    assert admin_client.get(f"/v1/admin/plans/{name}").json["max_repositories"] == 3


def test_an_unknown_plan_is_the_consoles_404_page(operator):
    for response in (operator.get("/console/plans/no_such_plan/edit"),
                     post(operator, "/console/plans/no_such_plan/edit", **PLAN_FORM)):
        assert response.status_code == 404 and response.mimetype == "text/html"
        assert "plan no_such_plan not found" in page_of(response)


# --- migrations ----------------------------------------------------------------------------


def test_the_migrations_page_lists_runs_newest_first_and_pages_through_them(operator, app, make_tenant,
                                                                            monkeypatch):
    from app.console.pages import migrations as views

    make_tenant()
    older, newer = migrate(app)["run_id"], migrate(app)["run_id"]
    page = page_of(operator.get("/console/migrations"))
    links = re.findall(r'href="/console/migrations/(\d+)">#', page)
    assert links.index(str(newer)) < links.index(str(older))
    assert '<th scope="col">Started by</th>' in page

    monkeypatch.setattr(views, "PAGE_SIZE", 1)
    first = page_of(operator.get("/console/migrations"))
    assert re.findall(r'href="/console/migrations/(\d+)">#', first) == [str(newer)]
    second = page_of(operator.get(next_link(first)))
    assert re.findall(r'href="/console/migrations/(\d+)">#', second) == [str(older)]


@pytest.fixture
def failed_run(make_tenant, engine, make_app, tmp_path):
    """A run in which one tenant of two fails (its data breaks the new revision's check): (report, good, bad)."""
    good, bad = sorted((make_tenant(), make_tenant()), key=lambda t: t.slug)
    add_repository(engine, good.slug, "quiet")
    add_repository(engine, bad.slug, "Shouting")
    stream = Stream(tmp_path)
    stream.add("c0002", 'op.create_check_constraint("name_lower", "repositories", "name = lower(name)")')
    report = migrate(make_app(TENANT_MIGRATIONS_LOCATION=str(stream.location)))
    assert (report["status"], report["failed"], report["migrated"]) == ("failed", 1, 1), report
    return report, good, bad


def test_a_run_page_shows_its_facts_and_each_failure_linked_to_its_tenant(operator, failed_run, engine):
    report, good, bad = failed_run
    page = page_of(operator.get(f"/console/migrations/{report['run_id']}"))
    assert '<dd id="run-status" class="run-failed">failed</dd>' in page
    assert "<code>c0002</code>" in page
    assert "2 selected: 1 migrated, 0 already current,\n1 failed" in page
    [failure] = [row for row in rows(page, "outcomes") if bad.slug in row]
    assert f'<a href="/console/tenants/{bad.slug}">{bad.slug}</a>' in failure
    assert 'violated by some row</code>' in failure and "ck_repositories_name_lower" in failure
    [success] = [row for row in rows(page, "outcomes") if good.slug in row]
    assert ">migrated</td>" in success and "outcome-error" not in success


def test_an_error_of_several_lines_shows_its_first_line_only(operator, failed_run, engine):
    report, _, bad = failed_run
    with engine.begin() as conn:  # the fan-out keeps a first line; any other writer of the ledger may not
        conn.execute(text("UPDATE public.migration_outcomes SET error = :e WHERE run_id = :r AND status = 'failed'"),
                     {"e": "\n  the first line <b>\nthe second line\nthe third", "r": report["run_id"]})
    page = page_of(operator.get(f"/console/migrations/{report['run_id']}", query_string={"status": "failed"}))
    [failure] = rows(page, "outcomes")
    assert '<code class="outcome-error">the first line &lt;b&gt;</code>' in failure
    assert "second line" not in page and "third" not in page


@pytest.mark.parametrize("status", ["failed", "migrated", "current"])
def test_a_run_page_filters_outcomes_by_status(operator, failed_run, status):
    report, good, bad = failed_run
    page = page_of(operator.get(f"/console/migrations/{report['run_id']}", query_string={"status": status}))
    shown = {slug for slug in (good.slug, bad.slug) if slug in page}
    assert shown == {"failed": {bad.slug}, "migrated": {good.slug}, "current": set()}[status]
    assert f'<option value="{status}" selected>' in page


def test_a_run_page_pages_through_outcomes_keeping_the_filter(operator, make_tenant, make_app, tmp_path,
                                                             monkeypatch):
    from app.console.pages import migrations as views

    slugs = sorted(make_tenant().slug for _ in range(3))
    stream = Stream(tmp_path)
    stream.add("c0002", 'op.add_column("repositories", sa.Column("note", sa.Text()))')
    run = migrate(make_app(TENANT_MIGRATIONS_LOCATION=str(stream.location)))["run_id"]
    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    first = page_of(operator.get(f"/console/migrations/{run}", query_string={"status": "migrated"}))
    assert [s for s in slugs if s in first] == slugs[:2]
    link = next_link(first)
    assert "status=migrated" in link
    second = page_of(operator.get(link))
    assert [s for s in slugs if s in second] == slugs[2:]
    assert next_link(second) is None


@pytest.mark.parametrize(("path", "status"), [
    ("/console/migrations/999999999", 404), ("/console/migrations/99999999999999999999", 404),
    ("/console/migrations/abc", 404), ("/console/migrations/1?status=exploded", 400),
    ("/console/migrations?cursor=not-a-cursor", 400), ("/console/migrations/1?cursor=%%%", 400),
])
def test_an_unknown_run_or_a_bad_filter_is_a_readable_error_page(operator, path, status):
    response = operator.get(path)
    assert response.status_code == status and response.mimetype == "text/html"
    assert "Traceback" not in page_of(response) and 'id="error-message"' in page_of(response)


# --- audit ---------------------------------------------------------------------------------


def test_the_audit_page_filters_by_tenant_and_action(operator, make_tenant, admin_client):
    one, other = make_tenant(), make_tenant()
    admin_client.patch(f"/v1/admin/tenants/{one.slug}", json={"status": "suspended"})
    theirs = rows(page_of(operator.get("/console/audit", query_string={"tenant": one.slug})), "events")
    assert [re.search(r"<td>(tenant\.\w+)</td>", row).group(1) for row in theirs] == [
        "tenant.suspended", "tenant.provisioned"]  # newest first
    assert all(other.slug not in row for row in theirs)
    page = page_of(operator.get("/console/audit", query_string={"tenant": one.slug, "action": "tenant.suspended"}))
    [suspended] = rows(page, "events")
    assert "admin-api" in suspended and '"active" → "suspended"' in suspended
    assert f'id="tenant" name="tenant" value="{one.slug}"' in page  # the filter stays filled in


def test_the_audit_page_filters_by_a_time_range_read_as_utc(operator, tenant):
    now = datetime.now(UTC)

    def shown(**query: str) -> bool:
        page = page_of(operator.get("/console/audit", query_string={"tenant": tenant.slug, **query}))
        return "tenant.provisioned" in page

    minute = "%Y-%m-%dT%H:%M"  # what a datetime-local input sends
    assert shown(since=(now - timedelta(hours=1)).strftime(minute), until=(now + timedelta(hours=1)).strftime(minute))
    assert not shown(since=(now + timedelta(hours=1)).strftime(minute))
    assert not shown(until=(now - timedelta(hours=1)).strftime(minute))
    assert shown(since=now.date().isoformat())  # a date: midnight UTC
    assert not shown(until=now.date().isoformat())
    assert shown(since=(now - timedelta(hours=1)).isoformat())  # an offset is taken as given


@pytest.mark.parametrize(("query", "message"), [
    ({"since": "yesterday"}, "since: Not a valid datetime."),
    ({"until": "2026-13-01T00:00"}, "until: Not a valid datetime."),
    ({"since": "2026-02-01T00:00", "until": "2026-01-01T00:00"}, "since must be before until."),
    ({"tenant": "x" * 41}, "tenant: Length must be between 1 and 40."),
    ({"cursor": "nope"}, "Invalid cursor."),
])
def test_a_bad_audit_filter_is_a_readable_400(operator, query, message):
    response = operator.get("/console/audit", query_string=query)
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert message in page_of(response) and "Traceback" not in page_of(response)


def test_the_audit_page_pages_through_events_keeping_the_filters(operator, tenant, admin_client, monkeypatch):
    from app.console.pages import audit as views

    for status in ("suspended", "active", "suspended"):
        admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"status": status})
    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    first = page_of(operator.get("/console/audit", query_string={"tenant": tenant.slug}))
    seen = rows(first, "events")
    link = next_link(first)
    assert len(seen) == 2 and f"tenant={tenant.slug}" in link
    while link:
        page = page_of(operator.get(link))
        seen += rows(page, "events")
        link = next_link(page)
    assert len(seen) == 4 and "tenant.provisioned" in seen[-1]


# --- the overview's last fan-out run, refreshed while it runs --------------------------------


@pytest.fixture
def running_run(engine):
    """A fan-out run that has not finished (the ledger's newest): its id; deleted afterwards."""
    with engine.begin() as conn:
        run_id = conn.execute(text(
            "INSERT INTO public.migration_runs (status, target_revision, started_by, hostname, pid, backend_pid,"
            " selected, migrated) VALUES ('running', 'r0001', 'ops@host', 'host', 1, 1, 10, 4) RETURNING id"
        )).scalar_one()
    yield run_id
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM public.migration_runs WHERE id = :id"), {"id": run_id})


def finish(engine, run_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE public.migration_runs SET status = 'succeeded', migrated = 10, finished_at = now()"
                          " WHERE id = :id"), {"id": run_id})


SECTION = re.compile(r'<section id="last-run-section"[^>]*>.*?</section>', re.S)


def test_the_fragment_is_the_overviews_section_live_only_while_the_run_goes_on(operator, engine, running_run):
    response = operator.get("/console/runs/latest/fragment")
    assert response.status_code == 200
    fragment = page_of(response).strip()
    assert SECTION.fullmatch(fragment), fragment  # the section alone, no page around it
    opening = fragment.split(">", 1)[0]
    assert " data-live" in opening and 'data-fragment="/console/runs/latest/fragment"' in opening
    assert '<dd id="run-status">running</dd>' in fragment and "4 migrated" in fragment
    overview = page_of(operator.get("/console/"))
    assert SECTION.search(overview).group(0).split(">", 1)[0] == opening  # the same section, live there too

    finish(engine, running_run)
    fragment = page_of(operator.get("/console/runs/latest/fragment"))
    assert "data-live" not in fragment and "data-fragment" not in fragment  # console.js stops polling
    assert '<dd id="run-status">succeeded</dd>' in fragment and "10 migrated" in fragment
    assert "data-live" not in page_of(operator.get("/console/"))


def test_a_finished_run_is_never_live(operator, app, make_tenant):
    make_tenant()
    migrate(app)
    fragment = page_of(operator.get("/console/runs/latest/fragment"))
    assert '<dd id="run-status">succeeded</dd>' in fragment and "data-live" not in fragment


def test_polling_the_fragment_does_not_keep_an_idle_session_alive(operator, app, running_run):
    idle = app.config["CONSOLE_IDLE_MINUTES"] * 60
    with operator.session_transaction("/console/") as session:
        session["seen"] = int(time.time()) - idle + 5  # about to expire
        seen = session["seen"]
    assert operator.get("/console/runs/latest/fragment", headers={"X-Console-Poll": "1"}).status_code == 200
    with operator.session_transaction("/console/") as session:
        assert session["seen"] == seen  # a poll is not the operator's activity
    assert operator.get("/console/runs/latest/fragment").status_code == 200
    with operator.session_transaction("/console/") as session:
        assert session["seen"] > seen  # a request of the operator's is


def test_console_js_polls_only_live_sections_and_keeps_no_inline_code(operator):
    with operator.get("/console/static/console.js") as response:
        script = response.get_data(as_text=True)
    assert 'querySelectorAll("[data-live][data-fragment]")' in script
    assert 'fresh.hasAttribute("data-live")' in script and '"X-Console-Poll": "1"' in script
    page = page_of(operator.get("/console/"))
    assert "<style" not in page and " style=" not in page and not re.search(r"<script(?![^>]*\bsrc=)", page)


@pytest.mark.browser
def test_in_a_browser_the_running_run_updates_itself_without_a_reload_and_stops_when_done(
    browser, server, engine, running_run, tmp_path
):
    chromium = browser_tests.Console(browser, server, tmp_path / "pictures")
    chromium.open("/console/")
    chromium.sign_in()
    assert chromium.text("#run-status") == "running"
    assert chromium.find("[data-js-shown]").is_displayed() and not chromium.find("[data-js-hidden]").is_displayed()
    page = chromium.find("html")

    finish(engine, running_run)
    chromium.wait_for_text("#run-status", "succeeded")
    assert page.is_displayed()  # the same page: no reload (a stale element would raise here)
    assert "10 migrated" in chromium.text("#run-counts")
    assert browser.find_elements("css selector", "[data-live]") == []  # polling has stopped
    chromium.assert_no_console_errors()


@pytest.mark.browser
def test_in_a_browser_an_operator_follows_a_failed_outcome_of_a_cli_run_to_its_tenant(
    browser, server, failed_run, tmp_path
):
    report, _, bad = failed_run
    chromium = browser_tests.Console(browser, server, tmp_path / "pictures")
    chromium.open("/console/")
    chromium.sign_in()
    chromium.click("nav a[href='/console/migrations']")
    chromium.screenshot("migrations")
    chromium.click(f"a[href='/console/migrations/{report['run_id']}']")
    assert chromium.text("#run-status") == "failed"
    chromium.choose("#status", "failed")
    chromium.click("form.filters button[type=submit]")
    assert "ck_repositories_name_lower" in chromium.text("#outcomes")
    chromium.screenshot("migration-run")
    chromium.click(f"#outcomes a[href='/console/tenants/{bad.slug}']")
    assert chromium.path == f"/console/tenants/{bad.slug}"
    assert chromium.text("#tenant-status") == "active"
    chromium.click("nav a[href='/console/audit']")
    chromium.screenshot("audit")
    chromium.click("nav a[href='/console/plans']")
    chromium.screenshot("plans")
    chromium.assert_no_console_errors()
