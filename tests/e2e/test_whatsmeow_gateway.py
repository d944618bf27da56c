"""The whole gateway on the whatsmeow engine; only neonize's Go library is played (by FakeGo)."""

import os
import stat
import time

import pytest

from tests.assertions import assert_json_error
from tests.gateway import REPO, wait_for

FAKE_SITE = REPO / "tests" / "slotworker" / "engines" / "fakego_site"


@pytest.fixture
def whatsmeow_gateway(make_gateway, request):
    mode = request.param
    env = {"WHIN_ENGINE": "whatsmeow", "WHIN_TEST_FAKE_GO": mode, "WHIN_PAIRING_TIMEOUT": "4",
           "PYTHONPATH": os.pathsep.join([str(FAKE_SITE), str(REPO)])}
    return make_gateway(**env)


@pytest.mark.parametrize("whatsmeow_gateway", ["reachable"], indirect=True)
def test_enroll_answers_the_qr_code_whatsmeow_produced(whatsmeow_gateway):
    gw = whatsmeow_gateway
    (slot_id,) = gw.provision(1)
    assert gw.enroll_qr_text(slot_id) == "2@fake-ref-1,fake-noise,fake-identity,fake-adv,1"
    session = gw.slot_dir(slot_id) / "session.sqlite3"  # created by "Go", not by our code
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert stat.S_IMODE(gw.slot_dir(slot_id).stat().st_mode) == 0o700
    assert gw.api("GET", f"/slot/{slot_id}").json()["pairing"] is True
    response = gw.api("GET", f"/paircode/{slot_id}/34666123456")
    assert response.status_code == 200, response.text
    assert response.json()["code"] == "ABCD-EFGH" and response.json()["expires_in"] > 0


@pytest.mark.parametrize("whatsmeow_gateway", ["unreachable"], indirect=True)
def test_whatsapp_unreachable_is_a_clear_error_within_seconds_and_no_crash_loop(whatsmeow_gateway):
    gw = whatsmeow_gateway
    (slot_id,) = gw.provision(1)
    started = time.monotonic()
    assert_json_error(gw.api("GET", f"/enroll/{slot_id}"), 503, "whatsapp_unreachable")
    assert time.monotonic() - started < 5
    wait_for(lambda: gw.supervisor.process_info(slot_id)["statename"] in ("EXITED", "STOPPED"),
             what="the worker to end")
    time.sleep(2)
    info = gw.supervisor.process_info(slot_id)
    assert info["statename"] in ("EXITED", "STOPPED")  # not restarted: no crash loop
    assert gw.status_of(slot_id) == "available" and gw.detail(slot_id)["pairing"] is False


@pytest.mark.parametrize("whatsmeow_gateway", ["hang"], indirect=True)
def test_a_pairing_whose_connect_never_returns_ends_by_its_deadline(whatsmeow_gateway):
    gw = whatsmeow_gateway
    (slot_id,) = gw.provision(1)
    assert gw.api("GET", f"/enroll/{slot_id}").status_code == 200
    # WHIN_PAIRING_TIMEOUT is 4 s; the worker ends itself (os._exit) even though connect() hangs.
    wait_for(lambda: not gw.detail(slot_id)["pairing"], timeout=20, what="the pairing to end")
    wait_for(lambda: not gw.supervisor.is_running(slot_id), timeout=15, what="the hung worker to be gone")
    assert gw.status_of(slot_id) == "available"
    assert gw.api("GET", f"/enroll/{slot_id}").status_code == 200  # and it can pair again
