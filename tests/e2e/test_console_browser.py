"""The operator console in a real browser: headless Chromium driven by Selenium, against gunicorn.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them
these tests skip, naming what is missing, except under CI (``CI`` set), where they
fail. The app runs as shipped (``tests/stack.py``: gunicorn with ``gunicorn.conf.py``,
on loopback), so the CSP, the SRI hashes and the cookie attributes are the ones a
browser enforces. The browser's own console must stay free of errors: a style or
script refused by the CSP, or an SRI mismatch, is logged there.

Each page visited is photographed; with ``CONSOLE_SCREENSHOTS=1`` the pictures go to
``docs/img/console-*.png`` (docs/console.md shows them), otherwise to the test's
temporary directory, so a test run leaves the tree as it found it.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.testing import ADMIN_TOKEN
from tests.attacks import control_request
from tests.stack import Server, gunicorn

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "img"
#: What works on these machines (no sandbox as root, nothing fetched in the background).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900")


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what}: CI must run the browser tests (.ci/run installs chromium and chromium-driver)")
    pytest.skip(f"{what} (apt-get install chromium chromium-driver)")


def _binary(*names: str) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def server(app, tenantry_database_url, tmp_path_factory) -> Iterator[Server]:
    # Threads: a browser opens connections ahead of need, each of which would hold a sync worker.
    with gunicorn(tenantry_database_url, tmp_path_factory.mktemp("console-server"), WEB_CONCURRENCY="1",
                  GUNICORN_THREADS="8") as served:
        yield served


def _start_browser(profile: Path):
    chromium = _binary("chromium", "chromium-browser")
    driver_path = _binary("chromedriver")
    if chromium is None:
        _missing("chromium is not installed")
    if driver_path is None:
        _missing("chromedriver is not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (requirements-dev.lock)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")  # a new, empty profile
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    return driver


@pytest.fixture
def browser(tmp_path):
    driver = _start_browser(tmp_path / "profile")
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The browser, pointed at one server's console."""

    def __init__(self, driver, server: Server, pictures: Path) -> None:
        self.driver = driver
        self.base = f"http://127.0.0.1:{server.port}"
        self.pictures = SCREENSHOTS if os.environ.get("CONSOLE_SCREENSHOTS") else pictures

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    @property
    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def click(self, css: str) -> None:
        """Click, and wait until the page it loads has replaced this one: a click returns
        before the navigation it starts has ended, so reading the next page at once would
        read this one."""
        page = self.find("html")
        self.find(css).click()
        self.wait_until_gone(page)

    def wait_until_gone(self, page) -> None:
        """Wait until ``page`` (an element of the page before) is no longer in the document.

        Selenium's ``staleness_of`` only knows the stale-element error; the Chromium here
        sometimes answers a node of a page already replaced with "does not belong to the
        document" instead, which says the same.
        """
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def gone(_driver) -> bool:
            try:
                page.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as exc:
                if "does not belong to the document" in str(exc):
                    return True
                raise
            return False

        WebDriverWait(self.driver, 15).until(gone)

    def tab_to(self, element_id: str, limit: int = 40) -> None:
        """Press Tab until ``element_id`` has the focus (so it is reachable from the keyboard)."""
        from selenium.webdriver.common.keys import Keys

        for _ in range(limit):
            self.driver.switch_to.active_element.send_keys(Keys.TAB)
            if self.driver.switch_to.active_element.get_attribute("id") == element_id:
                return
        raise AssertionError(f"#{element_id} is not reachable with Tab")

    def type_here(self, *keys: str) -> None:
        """Type into the focused element; when the keys end with Enter, wait for the page it loads."""
        from selenium.webdriver.common.keys import Keys

        page = self.find("html")
        self.driver.switch_to.active_element.send_keys(*keys)
        if keys[-1] == Keys.ENTER:
            self.wait_until_gone(page)

    def text(self, css: str = "main") -> str:
        return self.find(css).text

    def sign_in(self, token: str = ADMIN_TOKEN, operator: str = "alice") -> None:
        self.find("#operator").send_keys(operator)
        self.find("#token").send_keys(token)
        self.click("form.stacked button[type=submit]")

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def choose(self, css: str, option: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find(css)).select_by_visible_text(option)

    def wait_for_text(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, 10).until(expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, css), text))

    def screenshot(self, name: str) -> None:
        self.pictures.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(self.pictures / f"console-{name}.png"))

    def assert_no_console_errors(self) -> None:
        """Nothing refused by the CSP or SRI, no asset missing; a page's own 4xx status (a refused
        form, shown on purpose) is logged as a network error too, and is not one of these."""
        errors = [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"
                  and not (entry["source"] == "network" and "/console/static/" not in entry["message"])]
        assert not errors, errors


@pytest.fixture
def console(browser, server, tmp_path) -> Console:
    return Console(browser, server, tmp_path / "pictures")


@pytest.fixture
def second_console(server, tmp_path) -> Iterator[Console]:
    """Another browser, with a profile (and so a session) of its own."""
    driver = _start_browser(tmp_path / "second-profile")
    try:
        yield Console(driver, server, tmp_path / "pictures")
    finally:
        driver.quit()


def api_status(server: Server, path: str, token: str) -> int:
    return control_request("127.0.0.1", server.port, token, path)()


def api_post(server: Server, path: str, token: str, body: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_an_operator_signs_in_finds_a_tenant_suspends_it_and_signs_out(console, server, make_tenant):
    acme = make_tenant("console_acme", name="Acme Rockets", plan="pro")
    make_tenant("console_globex", name="Globex Corporation")
    make_tenant("console_initech", name="Initech")

    console.open("/console/")
    assert console.path.startswith("/console/sign-in")
    console.screenshot("sign-in")
    console.sign_in()
    assert console.path == "/console/"
    assert console.text("#operator") == "alice"
    assert int(console.text("#tenant-count")) >= 3
    console.screenshot("overview")
    console.assert_no_console_errors()

    console.click("nav a[href='/console/tenants']")
    console.find("#q").send_keys("console_")
    console.click("form.filters button[type=submit]")
    listing = console.text("#tenants")
    assert "console_acme" in listing and "console_globex" in listing
    console.screenshot("tenants")
    console.find("#q").clear()
    console.find("#q").send_keys("acme")  # by name, any case
    console.click("form.filters button[type=submit]")
    assert "console_globex" not in console.text("#tenants")
    console.click("#tenants a[href='/console/tenants/console_acme']")
    assert console.text("#tenant-status") == "active"
    assert acme.token.split("_")[1] in console.text()  # the key's prefix
    console.screenshot("tenant")

    assert api_status(server, "/v1/repositories", acme.token) == 200
    console.click("#suspend")
    console.screenshot("confirm-suspend")
    console.click("#confirm")
    assert console.path == "/console/tenants/console_acme"
    assert console.text("#tenant-status") == "suspended"
    assert api_status(server, "/v1/repositories", acme.token) == 403
    assert "console:alice" in console.text("#tenant-events ~ table")
    console.assert_no_console_errors()

    console.click("form.sign-out button")
    assert console.path.startswith("/console/sign-in")
    assert "Signed out." in console.text()
    console.open("/console/tenants")
    assert console.path.startswith("/console/sign-in")


def test_without_a_session_every_page_sends_to_sign_in(console):
    for path in ("/console/", "/console/tenants", "/console/tenants/anything"):
        console.open(path)
        assert console.path.startswith("/console/sign-in"), path
    console.assert_no_console_errors()


def test_a_tenant_key_cannot_sign_in(console, tenant):
    console.open("/console/sign-in")
    console.sign_in(token=tenant.token)
    assert console.path.startswith("/console/sign-in")
    assert "cannot sign in" in console.text("#sign-in-error")
    console.open("/console/")
    assert console.path.startswith("/console/sign-in")


def test_an_operator_provisions_a_tenant_changes_its_plan_revokes_a_key_and_deletes_it(console, server, forget):
    slug = "console_new"
    forget(slug)
    console.open("/console/sign-in")
    console.sign_in()
    console.click("nav a[href='/console/tenants']")
    console.click("#new-tenant")
    console.type("#slug", "Console New")  # refused: inline, by its field, nothing created
    console.type("#name", "Console New Ltd")
    console.click("#provision")
    assert "slug" in console.text("#slug-note").lower()
    assert console.find("#name").get_attribute("value") == "Console New Ltd"
    console.screenshot("provision-error")
    console.type("#slug", slug)
    console.choose("#plan", "free")
    console.click("#provision")
    assert "Shown this once" in console.text()
    token = console.find("#new-key").get_attribute("value")
    console.find("#copy-key").click()
    console.wait_for_text("#copy-status", "Copied.")
    console.screenshot("provisioned")
    assert api_status(server, "/v1/repositories", token) == 200

    console.click("nav a[href='/console/tenants']")  # find it by search
    console.type("#q", "Console New")
    console.click("form.filters button[type=submit]")
    console.click(f"#tenants a[href='/console/tenants/{slug}']")
    console.click("#edit")
    console.choose("#plan", "pro")
    console.click("#save")
    assert "Saved" in console.text("body") and "pro" in console.text("#tenant-facts")

    status, spare = api_post(server, "/v1/api-keys", token, {"role": "member", "name": "spare"})
    assert status == 201, spare
    console.driver.refresh()
    console.click(f"#revoke-{spare['id']}")
    console.screenshot("confirm-revoke")
    console.click("#confirm")
    assert f"Revoked key {spare['prefix']}" in console.text("body")
    assert api_status(server, "/v1/repositories", spare["token"]) == 401
    assert api_status(server, "/v1/repositories", token) == 200

    console.click("#delete")
    console.type("#confirm_slug", "console_ne")
    console.click("#confirm")
    assert "nothing was deleted" in console.text("#delete-error")
    assert api_status(server, "/v1/repositories", token) == 200
    console.type("#confirm_slug", slug)
    console.screenshot("confirm-delete")
    console.click("#confirm")
    assert console.path == "/console/tenants"
    assert f"Deleted {slug}" in console.text("body")
    assert api_status(server, "/v1/repositories", token) == 401
    console.assert_no_console_errors()


def test_a_second_browser_sees_a_suspension_at_once(console, second_console, server, make_tenant):
    shared = make_tenant("console_shared", name="Shared Corp")
    for each in (console, second_console):
        each.open("/console/sign-in")
    console.sign_in(operator="alice")
    second_console.sign_in(operator="bob")
    second_console.open(f"/console/tenants/{shared.slug}")
    assert second_console.text("#tenant-status") == "active"

    console.open(f"/console/tenants/{shared.slug}")
    console.click("#suspend")
    console.click("#confirm")
    second_console.driver.refresh()
    assert second_console.text("#tenant-status") == "suspended"
    assert api_status(server, "/v1/repositories", shared.token) == 403

    second_console.click("#resume")
    second_console.click("#confirm")
    assert second_console.text("#tenant-status") == "active"
    assert api_status(server, "/v1/repositories", shared.token) == 200
    console.driver.refresh()
    assert console.text("#tenant-status") == "active"
    events = console.text("#tenant-events ~ table")
    assert "console:alice" in events and "console:bob" in events


def test_a_form_posted_without_its_csrf_token_is_refused_and_changes_nothing(console, server, tenant):
    console.open("/console/sign-in")
    console.sign_in()
    console.open(f"/console/tenants/{tenant.slug}/suspend")
    # What a forged cross-site form would send: everything but the token.
    removed = console.driver.execute_script(
        "const fields = document.querySelectorAll('main form input[name=csrf_token]');"
        "fields.forEach(function (field) { field.remove(); }); return fields.length;")
    assert removed == 1
    console.click("#confirm")
    assert "CSRF" in console.text()
    assert api_status(server, "/v1/repositories", tenant.token) == 200
    console.open(f"/console/tenants/{tenant.slug}")
    assert console.text("#tenant-status") == "active"


def test_sign_in_and_a_suspension_work_from_the_keyboard_alone(console, server, tenant):
    from selenium.webdriver.common.keys import Keys

    console.open("/console/sign-in")
    console.tab_to("operator")
    console.type_here("keyboard")
    console.tab_to("token")
    console.type_here(ADMIN_TOKEN, Keys.ENTER)
    assert console.text("#operator") == "keyboard"
    console.open(f"/console/tenants/{tenant.slug}")
    console.tab_to("suspend")
    console.type_here(Keys.ENTER)
    console.tab_to("confirm")
    console.type_here(Keys.ENTER)
    assert console.text("#tenant-status") == "suspended"
    assert api_status(server, "/v1/repositories", tenant.token) == 403
