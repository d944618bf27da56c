"""The admin page in a real browser: headless Debian chromium driven by Selenium, against the real gateway.

A person signs in with the token, provisions a slot, enrolls a simulated phone from the QR code the page
shows (after watching it rotate), then sleeps, resumes and kills the line. `make test` installs chromium
and chromium-driver (`make browser`); the test fails rather than skips when they are missing. The
enrollment view is kept as a screenshot in test-artifacts/ (WHIN_TEST_ARTIFACTS to change it).
"""

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from controlplane.cli import decode_qr_png
from tests.gateway import REPO, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("WHIN_TEST_ARTIFACTS", REPO / "test-artifacts"))
# As the machine notes say: without the background-networking flags chromium keeps dialing Google's
# hosts, which this closed network refuses. --no-sandbox because CI runs as root.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1100,1000"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed; `make browser` (run by `make test`) installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, gateway):
    """The page signed out: a fresh tab state for each test."""
    browser.get(f"{gateway.url}/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{gateway.url}/ui")
    return Page(browser)


class Page:
    def __init__(self, driver):
        self.driver = driver

    def __call__(self, element_id: str):
        return self.driver.find_element(By.ID, element_id)

    def wait(self, predicate, what: str, timeout: float = 20):
        # The table is rebuilt when the listing changes: an element read as it goes is just read again.
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda _: predicate(), message=f"waiting for {what}")

    def sign_in(self, token: str) -> None:
        self.wait(lambda: self("token").is_displayed(), "the sign-in form")
        self("token").send_keys(token)
        self("signin-button").click()

    def row(self, slot_id: str):
        rows = self.driver.find_elements(By.ID, f"slot-{slot_id}")
        return rows[0] if rows else None

    def status(self, slot_id: str) -> str | None:
        row = self.row(slot_id)
        return row.get_attribute("data-status") if row else None

    def click(self, slot_id: str, action: str) -> None:
        def clicked():
            buttons = self.row(slot_id).find_elements(By.CSS_SELECTOR, f"button[data-action={action}]")
            if buttons:
                buttons[0].click()
            return bool(buttons)
        self.wait(lambda: self.row(slot_id) and clicked(), f"the {action} button of {slot_id}")

    def line(self, slot_id: str) -> str:
        return self.wait(lambda: self.row(slot_id).find_element(By.CLASS_NAME, "line").text, f"the line of {slot_id}")

    def qr_src(self) -> str:
        return self("qr").get_attribute("src") or ""

    def qr_text(self) -> str:
        return decode_qr_png(base64.b64decode(self.qr_src().split(",", 1)[1]))

    def accept_confirm(self) -> None:
        def alert():
            try:
                return self.driver.switch_to.alert
            except NoAlertPresentException:
                return None
        self.wait(alert, "the confirmation").accept()


def test_enrolling_a_phone_from_the_page_end_to_end(page, gateway, new_line):
    page.sign_in(gateway.admin_token)
    page.wait(lambda: page("console").is_displayed(), "the console")
    assert gateway.admin_token not in page.driver.current_url

    before = {next(iter(pair)) for pair in gateway.api("GET", "/slots").json()}
    page("count").clear()
    page("count").send_keys("1")
    page("provision").click()
    page.wait(lambda: set(_listed(gateway)) - before, "the provisioned slot")
    (slot_id,) = set(_listed(gateway)) - before
    page.wait(lambda: page.status(slot_id) == "available", "the new slot in the table")

    page.click(slot_id, "enroll")
    page.wait(lambda: page("qr").is_displayed() and page.qr_src().startswith("data:image/png;base64,"), "the QR")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.driver.save_screenshot(str(ARTIFACTS / "ui-enrollment.png"))
    first_code = page.qr_text()
    assert "This code changes in" in page("qr-expiry").text

    # WhatsApp rotates the code (after 6 s in tests); the page shows the new one by itself.
    page.wait(lambda: page.qr_src() and page.qr_text() != first_code, "the next QR code", timeout=15)
    line = new_line()
    assert gateway.scan(line, page.qr_text()).status_code == 200

    page.wait(lambda: page("enrollment").get_attribute("data-outcome") == "linked", "the page to see the link")
    assert line in page("enroll-state").text
    page.wait(lambda: page.status(slot_id) == "active", "the row to show active")
    assert page.line(slot_id) == line
    page.driver.save_screenshot(str(ARTIFACTS / "ui-linked.png"))

    page.click(slot_id, "sleep")
    page.wait(lambda: page.status(slot_id) == "sleeping", "sleeping")
    assert gateway.status_of(slot_id) == "sleeping"
    page.click(slot_id, "resume")
    page.wait(lambda: page.status(slot_id) == "active", "active again")
    page.click(slot_id, "kill")
    page.accept_confirm()
    page.wait(lambda: page.status(slot_id) == "available", "available after the kill")
    assert page.line(slot_id) == "—"
    assert gateway.detail(slot_id)["line"] is None


def test_the_token_stays_in_the_tab_and_out_of_urls(page, gateway):
    page.sign_in(gateway.user_token)
    page.wait(lambda: page("console").is_displayed(), "the console")
    assert page.driver.execute_script("return sessionStorage.getItem('whinmovilla.token')") == gateway.user_token
    assert page.driver.execute_script("return localStorage.length") == 0
    page.driver.refresh()  # asked once: a reload keeps the session
    page.wait(lambda: page("console").is_displayed(), "the console after a reload")
    assert not page("signin").is_displayed()
    urls = page.driver.execute_script("return performance.getEntries().map(e => e.name)")
    assert urls and not any(gateway.user_token in url for url in urls)

    page("provision").click()  # a non-admin token cannot provision: the page says so
    page.wait(lambda: "admin token" in page("message").text, "the refusal")

    page("signout").click()
    page.wait(lambda: page("signin").is_displayed(), "the sign-in form")
    assert page.driver.execute_script("return sessionStorage.getItem('whinmovilla.token')") is None


def test_a_wrong_token_is_refused_on_the_page(page):
    page.sign_in("not-a-token")
    page.wait(lambda: "not valid" in page("message").text, "the refusal")
    assert page("signin").is_displayed() and not page("console").is_displayed()


def test_when_the_codes_run_out_the_page_says_so_and_starts_no_new_pairing(page, gateway):
    (slot_id,) = gateway.provision(1)
    started = _pairings_started(gateway)
    page.sign_in(gateway.admin_token)
    page.click(slot_id, "enroll")
    page.wait(lambda: page("qr").is_displayed(), "the QR")
    page.wait(lambda: page("enrollment").get_attribute("data-outcome") == "ended", "the end of pairing", timeout=40)
    assert "ran out" in page("enroll-state").text
    assert not page("qr").is_displayed()
    time.sleep(3)  # the page's refresh timers would have fired by now
    detail = gateway.detail(slot_id)
    assert (detail["status"], detail["pairing"]) == ("available", False)
    assert _pairings_started(gateway) == started + 1  # the page refreshed the code, never restarted pairing
    calls = _access_log(gateway)
    assert calls.count(f"POST /enroll/{slot_id}") == 1 and calls.count(f"GET /qr/{slot_id}") >= 1


def test_cancel_ends_the_pairing(page, gateway):
    (slot_id,) = gateway.provision(1)
    page.sign_in(gateway.admin_token)
    page.click(slot_id, "enroll")
    page.wait(lambda: page("qr").is_displayed(), "the QR")
    assert page("enroll-close").text == "Cancel"
    page("enroll-close").click()
    page.wait(lambda: "cancelled" in page("message").text, "the cancellation")
    assert not page("enrollment").is_displayed()
    assert gateway.detail(slot_id)["pairing"] is False


def test_cancel_as_the_phone_links_keeps_the_line(page, gateway, new_line):
    (slot_id,) = gateway.provision(1)
    page.sign_in(gateway.admin_token)
    page.click(slot_id, "enroll")
    page.wait(lambda: page("qr").is_displayed(), "the QR")
    # The page has not looked yet: its timers are held while the phone links, then Cancel is clicked.
    page.driver.execute_script("clearInterval(enrolling.poll); clearTimeout(enrolling.refresh)")
    line = new_line()
    assert gateway.scan(line, page.qr_text()).status_code == 200
    wait_for(lambda: gateway.status_of(slot_id) == "active", what="the link")
    assert page("enroll-close").text == "Cancel"
    page("enroll-close").click()
    page.wait(lambda: "had just linked" in page("message").text, "the page's answer")
    assert (gateway.status_of(slot_id), gateway.detail(slot_id)["line"]) == ("active", line)  # /killid would wipe


def test_a_token_revoked_mid_session_asks_for_a_token_again(page, gateway):
    page.sign_in(gateway.user_token)
    page.wait(lambda: page("console").is_displayed(), "the console")
    page.driver.execute_script("sessionStorage.setItem('whinmovilla.token', 'revoked-token')")
    page.wait(lambda: page("signin").is_displayed(), "the sign-in form", timeout=10)  # at the next refresh
    assert "not valid" in page("message").text and not page("console").is_displayed()
    assert page.driver.execute_script("return sessionStorage.getItem('whinmovilla.token')") is None


def test_the_page_forbids_foreign_scripts_and_referrers(gateway):
    response = gateway.api("GET", "/ui", token=None)
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"


def _pairings_started(gateway) -> int:
    metrics = gateway.api("GET", "/metrics").text
    match = re.search(r'^whin_pairing_total\{outcome="started"\} (\S+)$', metrics, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


def _access_log(gateway) -> list[str]:
    """'METHOD /path' of every request the API logged."""
    lines = (gateway.data_dir / "logs" / "api.log").read_text().splitlines()
    events = [json.loads(x)["event"] for x in lines if '"gunicorn.access"' in x]
    return [" ".join(e.split(" ")[:2]) for e in events]


def _listed(gateway) -> list[str]:
    return [next(iter(pair)) for pair in gateway.api("GET", "/slots").json()]


def test_docs_explorer_renders_every_operation_offline(browser, gateway):
    browser.get(f"{gateway.url}/docs")
    page = Page(browser)
    page.wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) >= 20, "Swagger UI's operations")
    assert browser.find_elements(By.CSS_SELECTOR, "button.authorize")  # the bearer token can be entered
