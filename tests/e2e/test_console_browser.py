"""The operator console in a real browser: headless Chromium driven by Selenium, against gunicorn.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them
these tests skip, naming what is missing, except under CI (``CI`` set), where they
fail. The app runs as shipped (``tests/stack.py``: gunicorn with ``gunicorn.conf.py``,
on loopback), so the CSP, the SRI hashes and the cookie attributes are the ones a
browser enforces. Each page visited is saved as ``docs/img/console-*.png``
(docs/console.md shows them). The browser's own console must stay free of errors:
a style or script refused by the CSP, or an SRI mismatch, is logged there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.testing import ADMIN_TOKEN
from tests.attacks import control_request
from tests.stack import Server, gunicorn

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


@pytest.fixture
def browser(tmp_path):
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
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")  # a new, empty profile
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The browser, pointed at one server's console."""

    def __init__(self, driver, server: Server) -> None:
        self.driver = driver
        self.base = f"http://127.0.0.1:{server.port}"

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
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        page = self.find("html")
        self.find(css).click()
        WebDriverWait(self.driver, 15).until(expected_conditions.staleness_of(page))

    def text(self, css: str = "main") -> str:
        return self.find(css).text

    def sign_in(self, token: str = ADMIN_TOKEN, operator: str = "alice") -> None:
        self.find("#operator").send_keys(operator)
        self.find("#token").send_keys(token)
        self.click("form.stacked button[type=submit]")

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(SCREENSHOTS / f"console-{name}.png"))

    def assert_no_console_errors(self) -> None:
        errors = [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors


@pytest.fixture
def console(browser, server) -> Console:
    return Console(browser, server)


def api_status(server: Server, path: str, token: str) -> int:
    return control_request("127.0.0.1", server.port, token, path)()


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
