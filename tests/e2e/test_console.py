"""The operator console over HTTP (Flask's test client): sign-in, session, CSRF, headers, pages.

Each security property is asserted on the response an attacker or a browser would
see: the status, the Set-Cookie attributes, the headers, and the database afterwards
(a refused POST changed nothing). The same flows in a real browser:
tests/e2e/test_console_browser.py.
"""

from __future__ import annotations

import re
import uuid

import pytest

from app.config import ConfigError
from app.testing import ADMIN_TOKEN, assert_problem

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
HTTPS = {"base_url": "https://localhost", "headers": {"Referer": "https://localhost/console/sign-in"}}


def csrf_of(response) -> str:
    found = CSRF_FIELD.search(response.get_data(as_text=True))
    assert found, response.get_data(as_text=True)
    return found.group(1)


def sign_in(client, token: str = ADMIN_TOKEN, operator: str = "alice", **request):
    """Open the sign-in page, then post its form; the response to the POST."""
    page = client.get("/console/sign-in", **request)
    form = {"csrf_token": csrf_of(page), "operator": operator, "token": token}
    return client.post("/console/sign-in", data=form, **request)


def post(client, path: str, **form: str):
    """POST a console form with the CSRF token of the session (read from the overview page)."""
    token = csrf_of(client.get("/console/"))
    return client.post(path, data={"csrf_token": token, **form})


def set_cookie(response) -> str:
    [cookie] = [v for k, v in response.headers.items() if k == "Set-Cookie" and v.startswith("tenantry_console=")]
    return cookie


# --- on and off ------------------------------------------------------------------------


def test_console_enabled_off_removes_every_route(make_app):
    app = make_app(CONSOLE_ENABLED=False)
    assert not [r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/console")]
    for path in ("/console/", "/console/sign-in", "/console/static/console.css"):
        assert_problem(app.test_client().get(path), 404)


def test_a_server_without_secret_key_refuses_to_start_unless_the_console_is_off(make_app):
    with pytest.raises(ConfigError, match="SECRET_KEY must be set"):
        make_app(SECRET_KEY=None)
    make_app(SECRET_KEY=None, CONSOLE_ENABLED=False)  # no console, no cookie to sign
    with pytest.raises(ConfigError, match="SECRET_KEY=<hidden> is invalid: must be at least 32 bytes"):
        make_app(SECRET_KEY="short")


# --- sign-in, sign-out, expiry ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/console/", "/console/tenants", "/console/tenants/acme"])
def test_no_session_redirects_to_sign_in(console, path):
    response = console.get(path)
    assert response.status_code == 302
    assert response.location.startswith("/console/sign-in?next=")


def test_sign_in_with_the_admin_token_opens_the_overview_and_comes_back_to_the_page_asked_for(console):
    first = console.get("/console/tenants")
    page = console.get(first.location)
    assert 'name="next" value="/console/tenants"' in page.get_data(as_text=True)
    response = console.post("/console/sign-in", data={
        "csrf_token": csrf_of(page), "operator": "alice", "token": ADMIN_TOKEN, "next": "/console/tenants"})
    assert response.status_code == 303 and response.location == "/console/tenants"
    overview = console.get("/console/")
    assert overview.status_code == 200
    assert '<strong id="operator">alice</strong>' in overview.get_data(as_text=True)


@pytest.mark.parametrize("target", ["https://evil.example/console/", "//evil.example/console/", "/v1/admin/tenants"])
def test_sign_in_never_sends_the_operator_off_the_console(console, target):
    page = console.get("/console/sign-in")
    response = console.post("/console/sign-in", data={
        "csrf_token": csrf_of(page), "operator": "alice", "token": ADMIN_TOKEN, "next": target})
    assert response.status_code == 303 and response.location == "/console/"


def test_a_wrong_token_is_refused_and_the_address_throttled_after_five(console, app):
    for _ in range(5):
        refused = sign_in(console, token="not-the-token")
        assert refused.status_code == 403
        assert "Invalid admin token." in refused.get_data(as_text=True)
    throttled = sign_in(console)  # even the right token, from this address
    assert throttled.status_code == 429
    assert console.get("/console/").status_code == 302  # no session
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.254.254.1"
    assert sign_in(other).status_code == 303  # another address is not throttled


@pytest.mark.parametrize("kind", ["api key", "jwt"])
def test_a_tenant_credential_cannot_sign_in(console, tenant, kind):
    token = tenant.token if kind == "api key" else "eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnQiOiJ4In0.c2ln"
    refused = sign_in(console, token=token)
    assert refused.status_code == 403
    assert "Tenant API keys and JWTs cannot sign in" in refused.get_data(as_text=True)
    assert console.get("/console/").status_code == 302


@pytest.mark.parametrize("name", ["", "a b", "<script>", "x" * 65])
def test_an_operator_name_that_cannot_be_an_audit_actor_is_refused(console, name):
    assert sign_in(console, operator=name).status_code == 422
    assert console.get("/console/").status_code == 302


def test_the_session_cookie_is_httponly_samesite_strict_scoped_to_the_console_and_expires(console):
    cookie = set_cookie(sign_in(console))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "expires"} <= attributes, cookie
    assert "SameSite=Strict" in cookie and "Path=/console/" in cookie
    assert "secure" not in attributes  # plain HTTP (a development server): a Secure cookie would never come back


def test_the_session_cookie_is_secure_when_the_request_came_over_https(console):
    cookie = set_cookie(sign_in(console, **HTTPS))
    assert "Secure" in cookie.split("; "), cookie
    assert console.get("/console/", base_url="https://localhost").status_code == 200


def test_sign_out_clears_the_session(operator):
    response = post(operator, "/console/sign-out")
    assert response.status_code == 303 and response.location.startswith("/console/sign-in")
    assert "Expires=Thu, 01 Jan 1970" in set_cookie(response)
    assert operator.get("/console/").status_code == 302


def test_a_session_idle_for_longer_than_console_idle_minutes_ends(operator, app):
    assert operator.get("/console/").status_code == 200
    idle = app.config["CONSOLE_IDLE_MINUTES"] * 60
    with operator.session_transaction("/console/") as session:
        session["seen"] -= idle + 1
    response = operator.get("/console/")
    assert response.status_code == 302 and response.location.startswith("/console/sign-in")


def test_a_request_renews_the_idle_time(operator, app):
    idle = app.config["CONSOLE_IDLE_MINUTES"] * 60
    with operator.session_transaction("/console/") as session:
        session["seen"] -= idle - 5  # about to expire
    assert operator.get("/console/").status_code == 200
    with operator.session_transaction("/console/") as session:
        session["seen"] -= 10  # past the old deadline, within the renewed one
    assert operator.get("/console/").status_code == 200


def test_rotating_the_admin_token_ends_every_console_session(operator, app):
    app.config["ADMIN_TOKEN"] = "rotated-admin-token"
    try:
        assert operator.get("/console/").status_code == 302
    finally:
        app.config["ADMIN_TOKEN"] = ADMIN_TOKEN


# --- the admin API keeps its own authentication ----------------------------------------


def test_the_admin_api_ignores_the_console_session_cookie(console, app):
    value = set_cookie(sign_in(console)).split(";")[0].split("=", 1)[1]
    # No cookie jar: it would replace the Cookie header (and the cookie's path keeps it off /v1/ anyway).
    client = app.test_client(use_cookies=False)
    cookie = {"Cookie": f"tenantry_console={value}"}
    assert client.get("/console/", headers=cookie).status_code == 200  # the cookie is a live session
    assert_problem(client.get("/v1/admin/tenants", headers=cookie), 401, "unauthorized")
    response = client.get("/v1/admin/tenants", headers={**cookie, "Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200 and "Set-Cookie" not in response.headers


def test_csrf_does_not_apply_to_the_json_api(admin_client, tenant):
    response = admin_client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"name": "renamed"})
    assert response.status_code == 200, response.get_data(as_text=True)


# --- CSRF ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(operator, admin_client, tenant, token):
    form = {} if token is None else {"csrf_token": token}
    response = operator.post(f"/console/tenants/{tenant.slug}/suspend", data=form)
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert admin_client.get(f"/v1/admin/tenants/{tenant.slug}").json["status"] == "active"


def test_sign_in_needs_the_csrf_token_too(console):
    response = console.post("/console/sign-in", data={"operator": "alice", "token": ADMIN_TOKEN})
    assert response.status_code == 400
    assert console.get("/console/").status_code == 302


def test_over_https_a_post_from_another_origin_is_refused(console):
    page = console.get("/console/sign-in", base_url="https://localhost")
    response = console.post("/console/sign-in", base_url="https://localhost",
                            headers={"Referer": "https://evil.example/"},
                            data={"csrf_token": csrf_of(page), "operator": "alice", "token": ADMIN_TOKEN})
    assert response.status_code == 400


# --- headers ---------------------------------------------------------------------------


def _assert_console_headers(response, cached: bool = False) -> None:
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"
    if cached:
        assert "max-age=31536000" in response.headers["Cache-Control"]
    else:
        assert response.headers["Cache-Control"] == "no-store"


def test_every_console_response_carries_the_security_headers(operator, tenant):
    for path in ("/console/", "/console/tenants", f"/console/tenants/{tenant.slug}",
                 f"/console/tenants/{tenant.slug}/suspend", "/console/tenants/no_such_tenant",
                 "/console/no/such/page"):
        _assert_console_headers(operator.get(path))
    _assert_console_headers(operator.post(f"/console/tenants/{tenant.slug}/suspend"))  # refused: no token


def test_signed_out_pages_and_redirects_carry_them_too(console):
    _assert_console_headers(console.get("/console/sign-in"))
    _assert_console_headers(console.get("/console/"))


def test_static_files_are_cached_long_and_referenced_with_their_integrity(operator):
    import base64
    import hashlib

    html = operator.get("/console/").get_data(as_text=True)
    assets = re.findall(r'(?:href|src)="(/console/static/[^"]+)" integrity="sha384-([^"]+)"', html)
    assert {url.split("?")[0] for url, _ in assets} == {"/console/static/console.css", "/console/static/console.js"}
    for url, integrity in assets:
        with operator.get(url) as response:  # a file: closed once read
            assert response.status_code == 200
            _assert_console_headers(response, cached=True)
            assert base64.b64encode(hashlib.sha384(response.data).digest()).decode() == integrity
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"


# --- pages -----------------------------------------------------------------------------


def slug(prefix: str = "con") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def test_the_overview_counts_tenants_by_status_and_plan_and_lists_recent_events(operator, make_tenant, admin_client):
    made = [make_tenant(slug("ov"), plan="free"), make_tenant(slug("ov"), plan="pro")]
    admin_client.patch(f"/v1/admin/tenants/{made[1].slug}", json={"status": "suspended"})
    html = operator.get("/console/").get_data(as_text=True)
    assert re.search(r'status=suspended">suspended</a></td><td class="num">1<', html), html
    assert re.search(r'plan=pro">pro</a></td><td class="num">1<', html)
    assert '<dd id="reachable">yes</dd>' in html
    assert "(at head)" in html
    assert made[1].slug in html and "tenant.suspended" in html  # the latest platform events


def test_the_overview_shows_the_last_fan_out_run(operator, make_tenant, app):
    make_tenant(slug("fan"))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tenants", "migrate", "--json"])
    assert result.exit_code == 0, result.output
    html = operator.get("/console/").get_data(as_text=True)
    assert '<dd id="run-status">' in html and "selected:" in html


def test_search_filters_and_detail(operator, make_tenant, admin_client):
    stem = slug("srch")
    acme = make_tenant(f"{stem}_acme", name="Acme Rockets")
    globex = make_tenant(f"{stem}_globex", name="Globex Corporation", plan="pro")
    listing = operator.get("/console/tenants", query_string={"q": f"{stem}_ac"}).get_data(as_text=True)
    assert acme.slug in listing and globex.slug not in listing
    by_name = operator.get("/console/tenants", query_string={"q": "globex corp"}).get_data(as_text=True)
    assert globex.slug in by_name and acme.slug not in by_name
    by_plan = operator.get("/console/tenants", query_string={"q": stem, "plan": "pro"}).get_data(as_text=True)
    assert globex.slug in by_plan and acme.slug not in by_plan
    admin_client.patch(f"/v1/admin/tenants/{acme.slug}", json={"status": "suspended"})
    by_status = operator.get("/console/tenants", query_string={"q": stem, "status": "suspended"})
    assert acme.slug in by_status.get_data(as_text=True) and globex.slug not in by_status.get_data(as_text=True)
    wildcard = operator.get("/console/tenants", query_string={"q": "%"}).get_data(as_text=True)
    assert acme.slug not in wildcard  # a LIKE wildcard is matched literally

    detail = operator.get(f"/console/tenants/{acme.slug}").get_data(as_text=True)
    assert f"<code>t_{acme.slug}</code>" in detail
    assert f"<code>{acme.token.split('_')[1]}</code>" in detail  # the key's prefix, never its secret
    assert acme.token.split("_", 2)[2] not in detail
    assert "tenant.provisioned" in detail


def test_keyset_pagination_follows_the_next_link(operator, make_tenant, monkeypatch):
    from app.console.pages import tenants as views

    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    stem = slug("page")
    slugs = [make_tenant(f"{stem}_{i}").slug for i in range(3)]
    first = operator.get("/console/tenants", query_string={"q": stem}).get_data(as_text=True)
    assert slugs[0] in first and slugs[1] in first and slugs[2] not in first
    link = re.search(r'rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = operator.get(link).get_data(as_text=True)
    assert slugs[2] in second and slugs[0] not in second
    assert "First page" not in first and 'rel="next"' not in second
    back = re.search(r'<a href="([^"]+)">First page</a>', second).group(1).replace("&amp;", "&")
    assert back == f"/console/tenants?q={stem}"  # the search kept, the cursor gone


def test_suspend_and_resume_go_through_the_core_audited_as_the_operator(operator, tenant, tenant_client,
                                                                      admin_client):
    confirm = operator.get(f"/console/tenants/{tenant.slug}/suspend")
    assert confirm.status_code == 200 and "Suspend" in confirm.get_data(as_text=True)
    done = post(operator, f"/console/tenants/{tenant.slug}/suspend")
    assert done.status_code == 303 and done.location == f"/console/tenants/{tenant.slug}"
    assert_problem(tenant_client.get("/v1/repositories"), 403, "tenant-suspended")
    events = admin_client.get("/v1/admin/audit-events", query_string={"tenant": tenant.slug}).json["items"]
    assert (events[0]["action"], events[0]["actor"]) == ("tenant.suspended", "console:alice")
    assert post(operator, f"/console/tenants/{tenant.slug}/resume").status_code == 303
    assert tenant_client.get("/v1/repositories").status_code == 200


@pytest.mark.parametrize("path", ["/console/tenants/no_such_tenant", "/console/tenants/no_such_tenant/suspend",
                                  "/console/nothing-here"])
def test_a_missing_page_is_a_readable_404(operator, path):
    response = operator.get(path)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Traceback" not in response.get_data(as_text=True)


def test_a_bad_filter_or_cursor_is_a_readable_400(operator):
    for query in ({"status": "deleted"}, {"cursor": "not-a-cursor"}, {"q": "x" * 201}):
        response = operator.get("/console/tenants", query_string=query)
        assert response.status_code == 400 and response.mimetype == "text/html", query


def test_a_database_outage_is_a_503_page_with_an_unavailable_banner(make_app):
    app = make_app("postgresql://nobody@127.0.0.1:1/nothing", TESTING=False)
    client = app.test_client()
    assert sign_in(client).status_code == 303  # signing in needs no database
    response = client.get("/console/")
    assert response.status_code == 503
    html = response.get_data(as_text=True)
    assert 'id="unavailable"' in html and "Traceback" not in html
    _assert_console_headers(response)
