"""The simulated WhatsApp network in-process: QR rotation, scans, linked devices, their events, persistence."""

import time

import pytest

from simnet import pairing as pairing_module
from simnet.network import QR_PREFIX, Network, QrSchedule, SimError

FIRST, FOLLOWING, COUNT = 0.4, 0.2, 3
LINE, OTHER_LINE, SENDER = "34666123456", "34666999888", "34611222333"


@pytest.fixture
def net(tmp_path):
    return Network(tmp_path / "simnet", QrSchedule(first=FIRST, following=FOLLOWING, count=COUNT))


def first_qr(net: Network) -> tuple[str, dict]:
    """Begin a pairing session and return it with the first code it shows."""
    session = net.begin_pairing({"noise": "k"})
    (event,) = net.pairing_events(session, seen=-1, timeout=1)
    return session, event


def link(net: Network, line: str) -> dict:
    """Pair a new device with ``line``: the device as the network hands it over (device_id, secret, line)."""
    session, event = first_qr(net)
    net.scan(line, QR_PREFIX + event["ref"])
    (paired,) = net.pairing_events(session, seen=0, timeout=1)
    return paired["device"]


def events(net: Network, device: dict, after: int = 0) -> list[dict]:
    return net.device_events(device["device_id"], device["secret"], after=after, timeout=0)


# --- the QR schedule ---

@pytest.mark.parametrize(
    ("elapsed", "index", "remaining"),
    [
        (0.0, 0, 60.0),
        (59.5, 0, 0.5),
        (60.0, 1, 20.0),
        (70.0, 1, 10.0),
        (80.0, 2, 20.0),
        (159.0, 5, 1.0),
        (160.0, 6, 20.0),  # index == count: every code used up
        (200.0, 8, 20.0),
    ],
)
def test_qr_schedule_window_gives_the_code_showing_and_its_time_left(elapsed, index, remaining):
    assert QrSchedule(first=60, following=20, count=6).window(elapsed) == (index, pytest.approx(remaining))


def test_qr_schedule_is_used_up_once_index_reaches_count():
    schedule = QrSchedule(first=60, following=20, count=6)
    assert schedule.window(159.9)[0] < schedule.count
    assert schedule.window(160.0)[0] >= schedule.count


# --- pairing ---

def test_first_pairing_poll_shows_code_0_at_once(net):
    session = net.begin_pairing({})
    started = time.monotonic()
    (event,) = net.pairing_events(session, seen=-1, timeout=5)
    assert time.monotonic() - started < 1  # far below the poll's timeout
    assert event["type"] == "qr"
    assert event["index"] == 0
    assert 0 < event["expires_in"] <= FIRST
    assert event["ref"]


def test_next_pairing_poll_waits_for_the_rotation_and_shows_a_new_code(net):
    session, first = first_qr(net)
    started = time.monotonic()
    (event,) = net.pairing_events(session, seen=0, timeout=5)
    waited = time.monotonic() - started
    assert FIRST - 0.1 < waited < FIRST + 1  # until code 0 expires, far below the poll's timeout
    assert (event["type"], event["index"]) == ("qr", 1)
    assert event["ref"] != first["ref"]
    assert 0 < event["expires_in"] <= FOLLOWING


def test_pairing_poll_returns_nothing_when_its_timeout_ends_before_the_rotation(net):
    session, _ = first_qr(net)
    assert net.pairing_events(session, seen=0, timeout=0.05) == []


def test_pairing_times_out_after_the_last_code_and_the_session_is_gone(net):
    session, _ = first_qr(net)
    (event,) = net.pairing_events(session, seen=COUNT - 1, timeout=5)
    assert event == {"type": "timeout"}
    with pytest.raises(SimError) as caught:
        net.pairing_events(session, seen=-1, timeout=0)
    assert (caught.value.status, caught.value.code) == (404, "unknown_session")


def test_scanning_the_current_code_pairs_and_the_next_poll_hands_over_the_device(net):
    session, event = first_qr(net)
    device_id = net.scan(LINE, QR_PREFIX + event["ref"])
    (paired,) = net.pairing_events(session, seen=0, timeout=1)
    assert paired["type"] == "paired"
    assert paired["device"]["device_id"] == device_id
    assert paired["device"]["line"] == LINE
    assert paired["device"]["secret"]
    assert net.connect(device_id, paired["device"]["secret"])["acked"] == 0


def test_scan_reads_only_the_ref_before_the_first_comma(net):
    session, event = first_qr(net)
    net.scan(LINE, QR_PREFIX + event["ref"] + ",publickey,identitykey")
    (paired,) = net.pairing_events(session, seen=0, timeout=1)
    assert paired["type"] == "paired"


def test_scanning_a_rotated_code_is_422_qr_expired(net):
    session, first = first_qr(net)
    net.pairing_events(session, seen=0, timeout=5)  # code 1 is showing now
    with pytest.raises(SimError) as caught:
        net.scan(LINE, QR_PREFIX + first["ref"])
    assert (caught.value.status, caught.value.code) == (422, "qr_expired")


@pytest.mark.parametrize("qr", ["garbage", QR_PREFIX + "not-a-ref", "", None])
def test_scanning_a_code_of_no_session_is_404_unknown_qr(net, qr):
    first_qr(net)  # a session is pairing, but not with this code
    with pytest.raises(SimError) as caught:
        net.scan(LINE, qr)
    assert (caught.value.status, caught.value.code) == (404, "unknown_qr")


@pytest.mark.parametrize("line", ["+34666123456", "034666123456", "123456", "34 666 123 456", "", None])
def test_scanning_with_a_bad_line_is_422_invalid_line(net, line):
    _, event = first_qr(net)
    with pytest.raises(SimError) as caught:
        net.scan(line, QR_PREFIX + event["ref"])
    assert (caught.value.status, caught.value.code) == (422, "invalid_line")


def test_a_session_that_stopped_polling_refuses_scans(tmp_path, monkeypatch):
    monkeypatch.setattr(pairing_module, "PAIRING_LIVENESS_SECONDS", 0.1)
    net = Network(tmp_path, QrSchedule(first=30, following=30, count=2))  # code 0 shows all test long
    _, event = first_qr(net)
    time.sleep(0.3)
    with pytest.raises(SimError) as caught:
        net.scan(LINE, QR_PREFIX + event["ref"])
    assert (caught.value.status, caught.value.code) == (404, "unknown_qr")


def test_end_pairing_kills_the_sessions_codes(net):
    session, event = first_qr(net)
    net.end_pairing(session)
    with pytest.raises(SimError) as caught:
        net.scan(LINE, QR_PREFIX + event["ref"])
    assert (caught.value.status, caught.value.code) == (404, "unknown_qr")
    with pytest.raises(SimError) as caught:
        net.pairing_events(session, seen=-1, timeout=0)
    assert caught.value.code == "unknown_session"


def test_a_code_cannot_pair_twice(net):
    _, event = first_qr(net)
    net.scan(LINE, QR_PREFIX + event["ref"])
    with pytest.raises(SimError) as caught:
        net.scan(OTHER_LINE, QR_PREFIX + event["ref"])
    assert (caught.value.status, caught.value.code) == (404, "unknown_qr")


# --- linked devices ---

@pytest.mark.parametrize("secret", ["wrong", "", None])
def test_connecting_with_a_wrong_secret_is_401(net, secret):
    device = link(net, LINE)
    with pytest.raises(SimError) as caught:
        net.connect(device["device_id"], secret)
    assert (caught.value.status, caught.value.code) == (401, "logged_out")


def test_connecting_an_unknown_device_is_401(net):
    with pytest.raises(SimError) as caught:
        net.connect("no-such-device", "secret")
    assert caught.value.status == 401


def test_phone_sends_queues_a_message_for_every_device_linked_to_the_line(net):
    first, second, elsewhere = link(net, LINE), link(net, LINE), link(net, OTHER_LINE)

    sent = net.phone_sends(SENDER, LINE, "hola")

    assert sent["devices"] == 2
    for device in (first, second):
        (event,) = events(net, device)
        assert (event["type"], event["source"], event["seq"]) == ("event", "Message", 1)
        info = event["payload"]["Info"]
        assert info["ID"] == sent["id"]
        assert info["MessageSource"]["Sender"]["User"] == SENDER
        assert event["payload"]["Message"]["conversation"] == "hola"
    assert events(net, elsewhere) == []


def test_phone_sends_to_a_line_without_devices_reaches_none(net):
    assert net.phone_sends(SENDER, LINE, "hola")["devices"] == 0


def test_device_events_after_n_acknowledges_and_drops_events_up_to_n(net):
    device = link(net, LINE)
    for text in ("one", "two", "three"):
        net.phone_sends(SENDER, LINE, text)
    assert [e["seq"] for e in events(net, device)] == [1, 2, 3]

    assert [e["seq"] for e in events(net, device, after=2)] == [3]

    assert [e["seq"] for e in events(net, device, after=0)] == [3]  # 1 and 2 are gone for good
    assert net.connect(device["device_id"], device["secret"])["acked"] == 2


def test_device_events_long_poll_waits_until_its_timeout_when_nothing_comes(net):
    device = link(net, LINE)
    started = time.monotonic()
    assert net.device_events(device["device_id"], device["secret"], after=0, timeout=0.2) == []
    assert time.monotonic() - started >= 0.2


def test_unlink_logs_out_every_device_of_the_line(net):
    device, other = link(net, LINE), link(net, OTHER_LINE)

    assert net.unlink(LINE) == 1

    for call in (lambda: net.connect(device["device_id"], device["secret"]), lambda: events(net, device)):
        with pytest.raises(SimError) as caught:
            call()
        assert (caught.value.status, caught.value.code, caught.value.detail) == (401, "logged_out", "logged_out")
    assert net.connect(other["device_id"], other["secret"])["acked"] == 0


@pytest.mark.parametrize(
    ("sender", "to", "text", "code"),
    [
        pytest.param("+34611222333", LINE, "hola", "invalid_number", id="sender-with-plus"),
        pytest.param(SENDER, "34 666 123 456", "hola", "invalid_number", id="to-with-spaces"),
        pytest.param(SENDER, "0666123456", "hola", "invalid_number", id="to-with-leading-zero"),
        pytest.param(None, LINE, "hola", "invalid_number", id="no-sender"),
        pytest.param(SENDER, LINE, "", "invalid_text", id="empty-text"),
        pytest.param(SENDER, LINE, None, "invalid_text", id="no-text"),
        pytest.param(SENDER, LINE, 42, "invalid_text", id="text-not-a-string"),
    ],
)
def test_phone_sends_refuses_bad_numbers_and_text_with_422(net, sender, to, text, code):
    device = link(net, LINE)
    with pytest.raises(SimError) as caught:
        net.phone_sends(sender, to, text)
    assert (caught.value.status, caught.value.code) == (422, code)
    assert events(net, device) == []


# --- persistence ---

def test_a_new_network_on_the_same_folder_keeps_linked_devices_and_unacknowledged_events(tmp_path):
    schedule = QrSchedule(first=FIRST, following=FOLLOWING, count=COUNT)
    before = Network(tmp_path, schedule)
    device = link(before, LINE)
    for text in ("one", "two"):
        before.phone_sends(SENDER, LINE, text)
    events(before, device, after=1)
    before.flush()  # as simnet does when it stops

    after = Network(tmp_path, schedule)

    assert after.connect(device["device_id"], device["secret"])["acked"] == 1
    (event,) = events(after, device, after=1)
    assert (event["seq"], event["payload"]["Message"]["conversation"]) == (2, "two")
    after.phone_sends(SENDER, LINE, "three")
    assert [e["seq"] for e in events(after, device, after=1)] == [2, 3]


def test_changes_reach_the_state_file_by_themselves_within_the_save_interval(tmp_path):
    net = Network(tmp_path, QrSchedule(first=FIRST, following=FOLLOWING, count=COUNT))
    device = link(net, LINE)
    time.sleep(Network.SAVE_INTERVAL * 3)
    assert device["device_id"] in (tmp_path / "state.json").read_text()


def test_a_new_network_on_the_same_folder_remembers_unlinked_devices(tmp_path):
    schedule = QrSchedule(first=FIRST, following=FOLLOWING, count=COUNT)
    before = Network(tmp_path, schedule)
    device = link(before, LINE)
    before.unlink(LINE)
    before.flush()

    after = Network(tmp_path, schedule)

    with pytest.raises(SimError) as caught:
        after.connect(device["device_id"], device["secret"])
    assert (caught.value.status, caught.value.detail) == (401, "logged_out")
