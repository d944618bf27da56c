"""The admin page in a real browser: headless Debian chromium driven by Selenium, against the real gateway.

A person signs in with the token, provisions a slot, enrolls a simulated phone from the QR code the page
shows (after watching it rotate) or by typing a pairing code, then sleeps, resumes and kills the line;
the same on a phone-sized screen. `make test` installs chromium and chromium-driver (`make browser`);
the test fails rather than skips when they are missing. The views are kept as screenshots in
test-artifacts/ (WHIN_TEST_ARTIFACTS to change it).
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


def _window(browser, width: int, height: int):
    """The browser's window at ``width`` x ``height`` for one test, then back to its size."""
    size = browser.get_window_size()
    browser.set_window_size(width, height)
    yield
    browser.set_window_size(size["width"], size["height"])


@pytest.fixture
def phone(browser):
    """A phone-sized window (an iPhone 12-15's 390 x 844 CSS pixels) for one test."""
    yield from _window(browser, 390, 844)


@pytest.fixture
def short_window(browser):
    """A window shorter than a long table, so a new row can be out of sight."""
    yield from _window(browser, 1100, 600)


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
        # An enabled button only: the row can show its new status while the action that led there is
        # still answering, its buttons disabled, and a click on a disabled button does nothing.
        def clicked():
            buttons = self.row(slot_id).find_elements(By.CSS_SELECTOR, f"button[data-action={action}]")
            if buttons and buttons[0].is_enabled():
                buttons[0].click()
                return True
            return False
        self.wait(lambda: self.row(slot_id) and clicked(), f"the {action} button of {slot_id}")

    def actions(self, slot_id: str) -> list[str]:
        row = self.row(slot_id)
        return [b.get_attribute("data-action") for b in row.find_elements(By.CSS_SELECTOR, "button[data-action]")]

    def note(self, slot_id: str) -> str:
        """The feedback shown by a slot's row ("" when there is none)."""
        notes = self.driver.find_elements(By.ID, f"note-{slot_id}")
        return notes[0].text if notes and notes[0].is_displayed() else ""

    def beside(self, slot_id: str, element) -> bool:
        """The element is in the table row right under the slot's row, and shown just below it."""
        return self.driver.execute_script("""
            const row = document.getElementById("slot-" + arguments[0]), el = arguments[1];
            const next = row && row.nextElementSibling;
            if (!next || !next.contains(el) || el.offsetParent === null) return false;
            return Math.abs(el.getBoundingClientRect().top - row.getBoundingClientRect().bottom) < 40;
        """, slot_id, element)

    def fits(self, element) -> bool:
        """Scrolled down to (never sideways), the element lies whole within the window's width, uncovered."""
        return self.driver.execute_script("""
            const el = arguments[0];
            el.scrollIntoView({block: "center"});
            window.scrollTo(0, window.scrollY);  // as the page opens: a column off to the right stays off
            const r = el.getBoundingClientRect(), width = document.documentElement.clientWidth;
            if (r.width === 0 || r.left < 0 || r.right > width) return false;
            const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
            return hit !== null && (hit === el || el.contains(hit));
        """, element)

    def in_view(self, element) -> bool:
        return self.driver.execute_script("""
            const r = arguments[0].getBoundingClientRect();
            return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight;
        """, element)

    def requests(self) -> list[str]:
        """The URLs the page has fetched since it loaded."""
        return self.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")

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
    assert page.beside(slot_id, page("enrollment"))
    page.driver.save_screenshot(str(ARTIFACTS / "ui-linked.png"))

    page.click(slot_id, "sleep")
    page.wait(lambda: page.status(slot_id) == "sleeping", "sleeping")
    assert not page("enrollment").is_displayed()  # the finished panel went with the next action
    page.wait(lambda: "asleep" in page.note(slot_id), "the outcome by the row")
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
    page.wait(lambda: "cancelled" in page.note(slot_id), "the cancellation")
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
    page.wait(lambda: "had just linked" in page.note(slot_id), "the page's answer")
    assert (gateway.status_of(slot_id), gateway.detail(slot_id)["line"]) == ("active", line)  # /killid would wipe


def test_a_pairing_slot_shows_as_pairing_with_cancel(page, gateway):
    (slot_id,) = gateway.provision(1)
    page.sign_in(gateway.admin_token)
    page.wait(lambda: page.status(slot_id) == "available", "the new slot")
    assert page.actions(slot_id) == ["enroll"]
    gateway.enroll_qr_text(slot_id)  # pairing started elsewhere: another tab, whinctl, a script
    page.wait(lambda: page.status(slot_id) == "pairing", "the row to show pairing")
    assert page.row(slot_id).find_element(By.CLASS_NAME, "status").text == "pairing"
    assert "cancel" in page.actions(slot_id) and "enroll" not in page.actions(slot_id)
    # one listing call per refresh, never one call per slot
    fetched = page.requests()
    assert any(url.endswith("/slots/details") for url in fetched)
    assert not any("/slot/" in url for url in fetched)

    page.click(slot_id, "cancel")
    page.wait(lambda: "cancelled" in page.note(slot_id), "the cancellation by the row")
    page.wait(lambda: page.status(slot_id) == "available", "available again")
    assert page.actions(slot_id) == ["enroll"]
    assert gateway.detail(slot_id)["pairing"] is False


def test_feedback_stays_by_its_row_and_old_panels_and_messages_go(short_window, page, gateway):
    first, second = gateway.provision(2)
    if len(_listed(gateway)) < 30:  # a table taller than the window
        gateway.provision(30 - len(_listed(gateway)))
    page.sign_in(gateway.admin_token)
    page.click(first, "enroll")
    page.wait(lambda: page("qr").is_displayed(), "the QR")
    page.wait(lambda: page.beside(first, page("enrollment")), "the panel under its row")
    page("enroll-close").click()
    page.wait(lambda: "cancelled" in page.note(first), "the cancellation")
    assert page.beside(first, page(f"note-{first}"))
    assert not page("enrollment").is_displayed()

    page.click(second, "enroll")  # a later action: the panel opens under its own row, the old note goes
    page.wait(lambda: page.beside(second, page("enrollment")), "the panel under the second row")
    assert page.note(first) == ""
    page.wait(lambda: page("enroll-slot").text == second and page("qr").is_displayed(), "the second QR")
    page("enroll-close").click()
    page.wait(lambda: "cancelled" in page.note(second), "the second cancellation")
    assert page.beside(second, page(f"note-{second}"))
    assert not page("enrollment").is_displayed() and page("message").text == ""

    before = set(_listed(gateway))
    page.driver.execute_script("window.scrollTo(0, 0)")
    page("provision").click()
    page.wait(lambda: set(_listed(gateway)) - before, "the provisioned slot")
    (new,) = set(_listed(gateway)) - before
    page.wait(lambda: page.row(new) and "fresh" in page.row(new).get_attribute("class").split(), "the highlight")
    page.wait(lambda: page.in_view(page.row(new)), "the new row in view")
    assert new in page("message").text
    assert page.note(second) == ""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.driver.save_screenshot(str(ARTIFACTS / "ui-provisioned.png"))
    page.click(new, "enroll")  # the next action ends the highlight
    page.wait(lambda: "fresh" not in page.row(new).get_attribute("class").split(), "the highlight to go")
    assert page("message").text == ""  # "Provisioned …" went with it
    page("enroll-close").click()


def test_linking_by_pairing_code_from_the_page(page, gateway, new_line):
    (slot_id,) = gateway.provision(1)
    page.sign_in(gateway.admin_token)
    page.click(slot_id, "enroll")
    page.wait(lambda: page("qr").is_displayed(), "the QR")
    assert page("paircode-line").is_displayed() and page("paircode-button").is_displayed()  # beside the QR

    page("paircode-line").send_keys("12345")
    page("paircode-button").click()
    page.wait(lambda: "country code" in page("paircode-state").text, "the refusal of a short number")
    assert not page("paircode").is_displayed()

    line = new_line()
    page("paircode-line").clear()
    page("paircode-line").send_keys(f"+{line[:2]} {line[2:]}")  # as people type it
    page("paircode-button").click()
    page.wait(lambda: re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", page("paircode").text), "the pairing code")
    code = page("paircode").text
    assert "Link with phone number" in page("paircode-state").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.driver.save_screenshot(str(ARTIFACTS / "ui-paircode.png"))
    # The phone with that number types the code (simnet's POST /paircode).
    typed = gateway.http.post(f"{gateway.simnet_url}/paircode", json={"line": line, "code": code}, timeout=10)
    assert typed.status_code == 200, typed.text

    page.wait(lambda: page("enrollment").get_attribute("data-outcome") == "linked", "the page to see the link")
    assert line in page("enroll-state").text
    assert not page("paircode").is_displayed() and not page("qr").is_displayed()
    page.wait(lambda: page.status(slot_id) == "active", "the row to show active")
    assert page.line(slot_id) == line


def test_on_a_phone_sized_screen_every_row_and_action_fits(phone, page, gateway, new_line):
    assert page.driver.execute_script("return window.innerWidth") <= 390
    available, pairing, active, asleep = gateway.provision(4)
    gateway.enroll(active, new_line())
    gateway.enroll(asleep, new_line())
    assert gateway.api("POST", f"/sleepid/{asleep}").status_code == 200
    page.sign_in(gateway.admin_token)
    page.wait(lambda: page.status(asleep) == "sleeping", "the table")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _every_row_fits(page)
    gateway.enroll_qr_text(pairing)
    page.wait(lambda: page.status(pairing) == "pairing", "the pairing row")
    _every_row_fits(page, [pairing])
    page.driver.execute_script("document.getElementById(arguments[0]).scrollIntoView()", f"slot-{active}")
    page.driver.save_screenshot(str(ARTIFACTS / "ui-phone.png"))

    page.click(available, "enroll")  # enrolling on the phone: the code and the number field fit too
    page.wait(lambda: page("qr").is_displayed(), "the QR")
    for element_id in ("qr", "paircode-line", "paircode-button", "enroll-close"):
        assert page.fits(page(element_id)), element_id
    assert page.driver.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.driver.save_screenshot(str(ARTIFACTS / "ui-phone-enrollment.png"))
    page("enroll-close").click()

    page.click(active, "sleep")  # and the buttons work there
    page.wait(lambda: page.status(active) == "sleeping", "sleeping")
    page.wait(lambda: "asleep" in page.note(active), "the outcome by the row")
    assert page.fits(page(f"note-{active}")) and page.beside(active, page(f"note-{active}"))
    page.driver.save_screenshot(str(ARTIFACTS / "ui-phone-feedback.png"))
    page.click(asleep, "resume")
    page.wait(lambda: page.status(asleep) == "active", "resumed")


def _every_row_fits(page, only=None) -> None:
    """Every row's buttons, line and status lie within the window's width, uncovered: none is cut off."""
    rows = page.driver.find_elements(By.CSS_SELECTOR, "#slots tbody tr[data-status]")
    assert len(rows) >= 3
    for row in rows:
        slot_id = row.get_attribute("id").removeprefix("slot-")
        if only and slot_id not in only:
            continue
        buttons = row.find_elements(By.CSS_SELECTOR, "button[data-action]")
        assert buttons, slot_id
        for element in [*buttons, row.find_element(By.CLASS_NAME, "line"), row.find_element(By.CLASS_NAME, "status")]:
            assert page.fits(element), (slot_id, element.text)
    assert page.driver.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")


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
