"""Slot sessions in PostgreSQL (WHIN_SESSION_DB), a real gateway on simnet and a real PostgreSQL: a slot
resumes with nothing of it on the host's disk, so it can resume on any host, and a kill leaves no row."""

import shutil

import psycopg

from tests.gateway import wait_for

SENDER = "34611122233"


def session_rows(url: str, slot_id: str) -> list:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT name FROM whin_slot_session WHERE slot_id = %s", (slot_id,)).fetchall()


def test_a_slot_resumes_from_the_database_with_its_folder_gone_and_a_kill_leaves_no_row(
        make_gateway, own_receiver, new_line, session_db):
    gw = make_gateway(WHIN_SESSION_DB=session_db, WHIN_WEBHOOK_URL=own_receiver.url)
    line = new_line()
    slot = gw.enrolled_slot(line)
    assert session_rows(session_db, slot) == [("sim-device",)]
    folder = gw.data_dir / "slots" / slot
    assert not list(folder.glob("*.json"))  # the device's keys are not on this host's disk

    assert gw.api("GET", f"/sleep/{line}").status_code == 200
    shutil.rmtree(folder, ignore_errors=True)  # as on a host that never ran this slot
    assert gw.api("POST", f"/resume/{line}").status_code == 200
    wait_for(lambda: gw.detail(slot).get("connected"), what=f"slot {slot} to reconnect from the database")
    gw.phone_sends(SENDER, line, "¿Sigue disponible?")
    wait_for(lambda: own_receiver.delivered(type="message", line=line), what="the message through the moved session")

    assert gw.api("GET", f"/kill/{line}").status_code == 200
    wait_for(lambda: session_rows(session_db, slot) == [], what="the session's rows to be deleted")
    assert gw.detail(slot)["status"] == "available"
