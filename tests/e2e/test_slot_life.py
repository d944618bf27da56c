"""A slot's whole life through the API, with the real processes on the simulated network."""

import os
import re
import signal
import stat
import threading
import time

from controlplane.core import keys
from tests.gateway import wait_for


def test_provisioned_slots_have_unique_8_character_ids_and_a_program_each(gateway):
    created = gateway.provision(5)
    assert len(set(created)) == 5
    assert all(re.fullmatch(r"[A-Z0-9]{8}", slot_id) for slot_id in created)
    listing = gateway.api("GET", "/slots").json()
    ids = [next(iter(pair)) for pair in listing]
    assert ids == sorted(ids)
    assert {s: "available" for s in created}.items() <= {k: v for p in listing for k, v in p.items()}.items()
    status = gateway.supervisorctl("status")
    for slot_id in created:
        assert re.search(rf"^slot-{slot_id}\s+STOPPED", status, re.M), status


def test_enroll_answers_a_png_qr_that_decodes_to_the_engines_exact_text(gateway):
    (slot_id,) = gateway.provision(1)
    response = gateway.api("GET", f"/enroll/{slot_id}")
    assert response.status_code == 200
    body = response.json()
    assert 0 < body["expires_in"] <= 6
    text = gateway.enroll_qr_text(slot_id)  # asked again while pairing: the code showing now
    assert text == gateway.redis.hget(keys.slot_key(slot_id), "qr")
    assert text.startswith("https://wa.me/settings/linked_devices#")
    assert gateway.status_of(slot_id) == "available"
    assert gateway.detail(slot_id)["pairing"] is True


def test_whole_life_enroll_sleep_resume_kill(gateway, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    assert gateway.status_of(slot_id) == "active"
    assert {slot_id: line} in gateway.api("GET", "/slots2lines").json()
    assert {line: slot_id} in gateway.api("GET", "/lines2slots").json()
    assert {slot_id: "active"} in gateway.api("GET", "/slots/active").json()
    pid = gateway.slot_pid(slot_id)

    response = gateway.api("GET", f"/sleep/{line}")
    assert (response.status_code, response.text) == (200, "OK")
    assert response.headers["Content-Type"].startswith("text/plain")
    assert gateway.status_of(slot_id) == "sleeping"
    assert not gateway.supervisor.is_running(slot_id)
    assert {slot_id: line} in gateway.api("GET", "/slots2lines").json()  # still enrolled

    response = gateway.api("POST", f"/resume/{line}")  # POST is accepted too
    assert (response.status_code, response.text) == (200, "OK")
    assert gateway.status_of(slot_id) == "active"
    assert gateway.detail(slot_id)["connected"] is True
    assert gateway.slot_pid(slot_id) != pid  # a new process, reconnected without a QR
    assert gateway.redis.hget(keys.slot_key(slot_id), "qr") is None

    response = gateway.api("GET", f"/sleepid/{slot_id}")
    assert response.status_code == 200
    response = gateway.api("GET", f"/resumeid/{slot_id}")
    assert response.status_code == 200

    response = gateway.api("GET", f"/kill/{line}")
    assert (response.status_code, response.text) == (200, "OK")
    assert gateway.status_of(slot_id) == "available"
    assert {slot_id: None} in gateway.api("GET", "/slots2lines").json()
    assert {line: slot_id} not in gateway.api("GET", "/lines2slots").json()
    assert not gateway.slot_dir(slot_id).exists()


def test_credentials_are_owner_only_and_gone_after_kill_even_while_sleeping(gateway, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    folder = gateway.slot_dir(slot_id)
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, "a paired slot keeps its credentials on disk"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)

    assert gateway.api("GET", f"/sleep/{line}").status_code == 200
    assert folder.exists()  # sleeping keeps them
    assert gateway.api("GET", f"/killid/{slot_id}").status_code == 200
    assert not folder.exists()
    # The network forgot the device too: the phone's line has no linked device left.
    sent = gateway.http.post(f"{gateway.simnet_url}/messages",
                             json={"from": "34600999999", "to": line, "text": "anyone there?"}).json()
    assert sent["devices"] == 0


def test_killed_slot_enrolls_again_with_a_new_qr(gateway, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    assert gateway.api("GET", f"/killid/{slot_id}").status_code == 200
    gateway.enroll(slot_id, line)
    assert gateway.status_of(slot_id) == "active"


def test_repairing_a_line_on_another_slot_evicts_the_first(gateway, new_line):
    first, second = gateway.provision(2)
    line = new_line()
    gateway.enroll(first, line)
    first_dir = gateway.slot_dir(first)
    gateway.enroll(second, line)
    assert gateway.api("GET", "/lines2slots").json().count({line: second}) == 1
    wait_for(lambda: gateway.detail(first) == {"id": first, "status": "available", "line": None, "pairing": False,
                                               "connected": False, "resetting": False, "pair_error": None,
                                               "host": gateway.detail(first)["host"]},
             what="the evicted slot to be wiped")
    assert not first_dir.exists()
    wait_for(lambda: not gateway.supervisor.is_running(first), what="the evicted worker to stop")


def test_evicting_a_sleeping_slot_wipes_it_too(gateway, new_line):
    first, second = gateway.provision(2)
    line = new_line()
    gateway.enroll(first, line)
    assert gateway.api("GET", f"/sleepid/{first}").status_code == 200
    gateway.enroll(second, line)
    wait_for(lambda: not gateway.detail(first)["resetting"], what="the sleeping evicted slot to be wiped")
    assert gateway.status_of(first) == "available"
    assert not gateway.slot_dir(first).exists()


def test_two_pairings_of_one_line_racing_never_show_two_slots(gateway, new_line):
    slots = gateway.provision(4)
    line = new_line()
    codes = {slot_id: gateway.enroll_qr_text(slot_id) for slot_id in slots}
    seen_duplicates = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            pairs = gateway.api("GET", "/slots2lines").json()
            holders = [k for p in pairs for k, v in p.items() if v == line]
            if len(holders) > 1:
                seen_duplicates.append(holders)

    watcher = threading.Thread(target=watch)
    watcher.start()
    barrier = threading.Barrier(len(slots))

    def scan(slot_id):
        barrier.wait()
        gateway.scan(line, codes[slot_id])

    scanners = [threading.Thread(target=scan, args=(s,)) for s in slots]
    for t in scanners:
        t.start()
    for t in scanners:
        t.join()
    wait_for(lambda: any(gateway.detail(s)["status"] == "active" for s in slots), what="a winner")
    wait_for(lambda: all(not gateway.detail(s)["resetting"] for s in slots), what="the losers to be wiped")
    time.sleep(0.3)
    stop.set()
    watcher.join()
    assert seen_duplicates == []
    # Read once things settled, from one snapshot: separate reads of each slot could straddle an eviction.
    statuses = {k: v for pair in gateway.api("GET", "/slots").json() for k, v in pair.items() if k in slots}
    winner = [s for s, status in statuses.items() if status == "active"]
    assert len(winner) == 1
    assert gateway.api("GET", "/lines2slots").json().count({line: winner[0]}) == 1
    holders = [k for p in gateway.api("GET", "/slots2lines").json() for k, v in p.items() if v == line]
    assert holders == winner


def test_phone_unlink_frees_the_slot_and_wipes_it(gateway, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    gateway.unlink(line)
    wait_for(lambda: gateway.detail(slot_id)["status"] == "available" and not gateway.detail(slot_id)["resetting"],
             what="the unlinked slot to become available")
    assert not gateway.slot_dir(slot_id).exists()
    assert {line: slot_id} not in gateway.api("GET", "/lines2slots").json()


def test_unlink_while_sleeping_is_found_on_resume(gateway, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    assert gateway.api("GET", f"/sleep/{line}").status_code == 200
    gateway.unlink(line)
    response = gateway.api("GET", f"/resume/{line}")
    assert response.status_code == 422
    assert response.json()["error"] == "logged_out"
    wait_for(lambda: not gateway.detail(slot_id)["resetting"], what="the slot to be wiped")
    assert gateway.status_of(slot_id) == "available"
    assert not gateway.slot_dir(slot_id).exists()


def test_qr_codes_rotate_then_run_out_and_the_slot_is_plain_available(gateway):
    (slot_id,) = gateway.provision(1)
    first = gateway.enroll_qr_text(slot_id)
    second = wait_for(lambda: (t := gateway.enroll_qr_text(slot_id)) != first and t, timeout=10,
                      what="the QR code to rotate")
    assert second.split("#")[1].split(",")[1:] == first.split("#")[1].split(",")[1:]  # same keys, new ref
    # An expired code no longer pairs.
    assert gateway.scan("34611122233", first).json()["error"] == "qr_expired"
    # 6 s + 3 s + 3 s in tests: then the worker ends and the slot is available, not pairing.
    wait_for(lambda: not gateway.detail(slot_id)["pairing"], timeout=20, what="pairing to end")
    wait_for(lambda: not gateway.supervisor.is_running(slot_id), what="the pairing worker to exit")
    assert gateway.status_of(slot_id) == "available"
    # Ended on purpose: supervisord does not restart it (EXITED, or STOPPED if the reconciler got there first).
    wait_for(lambda: gateway.supervisor.process_info(slot_id)["statename"] in ("EXITED", "STOPPED"),
             what="the worker to settle")
    time.sleep(1)
    assert gateway.supervisor.process_info(slot_id)["statename"] in ("EXITED", "STOPPED")
    # And it can enroll again.
    assert gateway.api("GET", f"/enroll/{slot_id}").status_code == 200


def test_kill_during_pairing_cancels_it(gateway):
    (slot_id,) = gateway.provision(1)
    code = gateway.enroll_qr_text(slot_id)
    assert gateway.api("GET", f"/killid/{slot_id}").status_code == 200
    detail = gateway.detail(slot_id)
    assert (detail["status"], detail["pairing"], detail["resetting"]) == ("available", False, False)
    wait_for(lambda: not gateway.supervisor.is_running(slot_id), what="the pairing worker to stop")
    assert gateway.scan("34611122244", code).status_code != 200


def test_kill_9_of_a_slot_process_comes_back_still_mapped(gateway, new_line):
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    pid = gateway.slot_pid(slot_id)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gateway.supervisor.is_running(slot_id) and gateway.slot_pid(slot_id) != pid,
             what="supervisord to restart the slot")
    wait_for(lambda: gateway.detail(slot_id)["connected"], what="the restarted slot to reconnect")
    assert gateway.status_of(slot_id) == "active"
    assert {line: slot_id} in gateway.api("GET", "/lines2slots").json()
    assert gateway.redis.hget(keys.slot_key(slot_id), "qr") is None  # no new QR was needed


def test_slots_come_back_after_supervisord_restarts(fresh_gateway, new_line):
    gw = fresh_gateway
    active, sleeping, idle = gw.provision(3)
    line_a, line_s = new_line(), new_line()
    gw.enroll(active, line_a)
    gw.enroll(sleeping, line_s)
    assert gw.api("GET", f"/sleep/{line_s}").status_code == 200

    gw.stop()  # supervisord stops every program, slot workers included
    gw.start()  # a new supervisord: slot programs are autostart=false, so only the reconciler can bring them

    wait_for(lambda: gw.detail(active)["connected"], timeout=20, what="the reconciler to restart the active slot")
    assert gw.status_of(active) == "active"
    assert gw.status_of(sleeping) == "sleeping"
    assert not gw.supervisor.is_running(sleeping)
    assert not gw.supervisor.is_running(idle)
    assert gw.api("GET", f"/resume/{line_s}").status_code == 200
    assert {line_a: active} in gw.api("GET", "/lines2slots").json()


def test_reconciler_repairs_a_worker_stopped_behind_its_back(gateway, new_line):
    (slot_id,) = gateway.provision(1)
    gateway.enroll(slot_id, new_line())
    gateway.supervisorctl("stop", f"slot-{slot_id}")
    wait_for(lambda: gateway.supervisor.is_running(slot_id), what="the reconciler to start it again")
    wait_for(lambda: gateway.detail(slot_id)["connected"], what="the slot to reconnect")


def test_a_slot_reconnects_by_itself_after_the_network_drops(gateway, new_line):
    (slot_id,) = gateway.provision(1)
    gateway.enroll(slot_id, new_line())
    pid = gateway.slot_pid(slot_id)
    gateway.supervisorctl("stop", "simnet")
    try:
        wait_for(lambda: not gateway.detail(slot_id)["connected"], timeout=20, what="the slot to see the drop")
        assert gateway.status_of(slot_id) == "active"  # a drop is not an unlink
    finally:
        gateway.supervisorctl("start", "simnet")
    wait_for(lambda: gateway.detail(slot_id)["connected"], timeout=40, what="the slot to reconnect")
    assert gateway.slot_pid(slot_id) == pid  # the same process retried; nothing crashed


def test_a_sleeping_line_killed_reports_sleeping_then_one_killed_in_seq_order(gateway, receiver, new_line):
    """Each status is queued in the step that makes it (issue 9): the kill's is last, and alone."""
    line = new_line()
    slot_id = gateway.enrolled_slot(line)
    assert gateway.api("GET", f"/sleep/{line}").status_code == 200
    assert gateway.api("GET", f"/kill/{line}").status_code == 200
    wait_for(lambda: not gateway.supervisor.is_running(slot_id), what="the killed worker to exit")
    assert gateway.redis.get(keys.seq_key(line)) == "3"  # nothing more was numbered for the line
    wait_for(lambda: {e["seq"] for e in receiver.delivered(line=line)} == {1, 2, 3}, what="the three events")
    events = sorted({e["seq"]: e for e in receiver.delivered(line=line)}.values(), key=lambda e: e["seq"])
    assert [(e["slot"], e["status"]) for e in events] == [(slot_id, "enrolled"), (slot_id, "sleeping"),
                                                           (slot_id, "killed")]
