"""A linked device's connections: the sources it asks for, bans, another client taking the session,
an outdated client, and events held across a simnet restart."""

import json
import time

import pytest

from simnet.network import Network, SimError
from tests.simnet.server import SimServer

LINE, PHONE = "34666123456", "34611222333"


def connect(sim: SimServer, device: dict, **body):
    return sim.device(device, "POST", "connect", json=body)


def test_a_device_gets_only_the_sources_it_asked_for(sim):
    device = sim.link(LINE)
    assert connect(sim, device, sources=["Message"]).status_code == 200
    sim.ok(f"/phones/{PHONE}/typing", {"line": LINE, "state": "composing"})
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "hola"})
    assert [e["source"] for e in sim.events(device)] == ["Message"]


def test_a_ban_ends_the_live_connection_and_refuses_connects_until_it_expires(sim):
    device = sim.link(LINE)
    connection = connect(sim, device).json()["connection"]
    sim.ok(f"/phones/{LINE}/ban", {"seconds": 1, "code": "send_to_too_many_people"})
    (notice,) = sim.events(device, connection=connection)
    assert notice == {"type": "offline", "reason": "temporary_ban", "expires_in": 1,
                      "ban_code": "SEND_TO_TOO_MANY_PEOPLE"}
    refused = connect(sim, device)
    assert refused.status_code == 403 and refused.json()["error"] == "temporary_ban"
    assert refused.json()["ban_code"] == "SEND_TO_TOO_MANY_PEOPLE" and 0 < refused.json()["expires_in"] <= 2
    time.sleep(1.1)
    assert connect(sim, device).status_code == 200
    assert sim.post(f"/phones/{LINE}/ban", {"seconds": 5, "code": "nope"}).json()["error"] == "invalid_ban_code"
    assert sim.post(f"/phones/{LINE}/ban", {"seconds": 0}).json()["error"] == "invalid_seconds"


def test_the_default_ban_code(sim):
    device = sim.link(LINE)
    connect(sim, device)
    sim.ok(f"/phones/{LINE}/ban", {"seconds": 60})
    assert connect(sim, device).json()["ban_code"] == "SENT_TOO_MANY_SAME_MESSAGE"


def test_another_client_taking_the_session_ends_the_connection_but_keeps_the_device(sim):
    device = sim.link(LINE)
    first = connect(sim, device).json()["connection"]
    second = connect(sim, device).json()["connection"]  # a second connection replaces the first
    assert sim.events(device, connection=first) == [{"type": "offline", "reason": "stream_replaced"}]
    sim.ok(f"/phones/{LINE}/replace")
    assert sim.events(device, connection=second) == [{"type": "offline", "reason": "stream_replaced"}]
    assert connect(sim, device).status_code == 200  # still linked


def test_an_outdated_client_is_refused_until_the_flag_clears(sim):
    device = sim.link(LINE)
    live = connect(sim, device).json()["connection"]
    sim.ok(f"/phones/{LINE}/outdated", {"outdated": True})
    assert sim.events(device, connection=live) == [{"type": "offline", "reason": "client_outdated"}]
    refused = connect(sim, device)
    assert (refused.status_code, refused.json()["error"]) == (403, "client_outdated")
    sim.ok(f"/phones/{LINE}/outdated", {"outdated": False})
    assert connect(sim, device).status_code == 200


def test_a_poll_on_a_connection_the_network_does_not_know_is_409(sim):
    device = sim.link(LINE)
    response = sim.device(device, "GET", "events", params={"after": 0, "connection": "forgotten"})
    assert (response.status_code, response.json()["error"]) == (409, "not_connected")


def test_held_events_of_every_source_survive_a_restart(tmp_path):
    sim = SimServer(tmp_path)
    device = sim.link(LINE)
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "uno"})
    sim.ok(f"/phones/{PHONE}/call", {"line": LINE})
    sim.ok("/groups", {"name": "G", "members": [PHONE, LINE]})
    sim.ok(f"/phones/{LINE}/ban", {"seconds": 60})
    before = sim.events(device)
    sim.network.flush()
    sim.close()

    after = Network(tmp_path)
    held = after.device_events(device["device_id"], device["secret"], after=0, timeout=0)
    assert held == before and [e["source"] for e in held] == ["Message", "CallOffer", "JoinedGroup"]
    with pytest.raises(SimError) as caught:
        after.connect(device["device_id"], device["secret"])
    assert caught.value.code == "temporary_ban"  # bans are the network's state too
    assert after.phone(PHONE)["lid"]


def test_events_saved_before_sources_are_read_as_messages(tmp_path):
    payload = {"Info": {"ID": "3EB0OLD"}, "Message": {"conversation": "viejo"}}
    (tmp_path / "state.json").write_text(json.dumps({
        "devices": {"d1": {"secret": "s", "line": LINE, "events": [{"type": "message", "seq": 1, "payload": payload}],
                           "next_seq": 2, "acked": 0}},
        "unlinked": {}, "inboxes": {PHONE: [{"id": "3EB0X", "from": LINE, "to": PHONE, "text": "t", "timestamp": 1}]}}))
    net = Network(tmp_path)
    assert net.device_events("d1", "s", after=0, timeout=0) == [
        {"type": "event", "source": "Message", "seq": 1, "payload": payload}]
    assert net.inbox(PHONE)[0]["text"] == "t"
