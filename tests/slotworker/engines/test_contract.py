"""One contract for every engine: the sim engine on a real simnet, the whatsmeow engine at neonize's
boundary (its Go library played by FakeGo). What the layers above rely on is the same for both."""

import stat
import threading

import pytest
from google.protobuf import json_format
from neonize.events import MessageEv

from slotworker.engines.base import EngineUnavailable, OutboundMedia, SendResult
from tests.slotworker.engines.harness import Recorder, SimHarness, WhatsmeowHarness

LINE = "34666123456"
SENDER = "34611122233"


@pytest.fixture(params=["sim", "whatsmeow"])
def harness(request, tmp_path, monkeypatch):
    h = SimHarness(tmp_path) if request.param == "sim" else WhatsmeowHarness(tmp_path, monkeypatch)
    yield h
    h.close()


@pytest.fixture
def linked(harness, tmp_path):
    """An engine that paired with LINE and is connected; returns (engine, recorder)."""
    recorder = Recorder()
    engine = harness.engine(tmp_path / "slots" / "SLOT0001", recorder)
    engine.start_pairing()
    harness.scan(LINE, recorder)
    recorder.wait("on_connected")
    yield engine, recorder
    engine.stop()


def test_pairing_shows_a_qr_code_with_its_lifetime(harness, tmp_path):
    recorder = Recorder()
    engine = harness.engine(tmp_path / "slots" / "SLOT0001", recorder)
    engine.start_pairing()
    (code, expires_in), *_ = recorder.wait("on_qr")
    engine.stop()
    assert isinstance(code, str) and len(code) > 10
    assert 0 < expires_in <= 60
    assert not engine.has_credentials()


def test_a_scan_pairs_the_line_and_connects_keeping_owner_only_credentials(harness, linked, tmp_path):
    engine, recorder = linked
    assert recorder.of("on_paired") == [(LINE,)]
    assert engine.has_credentials()
    folder = tmp_path / "slots" / "SLOT0001"
    files = [p for p in folder.iterdir() if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files if p.suffix == ".json")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_an_inbound_message_is_the_networks_event_as_lossless_json(harness, linked):
    engine, recorder = linked
    message_id = harness.deliver(SENDER, LINE, "¿Sigue disponible el ático?")
    ((payload, got_id, sender),) = recorder.wait("on_message")
    assert (got_id, sender) == (message_id, SENDER)
    event = json_format.ParseDict(payload, MessageEv())  # the same protobuf, back from its JSON
    assert event.Message.conversation == "¿Sigue disponible el ático?"
    assert message_id == event.Info.ID
    assert json_format.MessageToDict(event, preserving_proto_field_name=True) == payload


def test_sending_text_and_media_returns_whatsapps_id_and_time(harness, linked):
    engine, _ = linked
    sent = engine.send(SENDER, text="Hola")
    assert isinstance(sent, SendResult) and sent.id and sent.timestamp > 1_700_000_000
    image = OutboundMedia(data=_png(), mimetype="image/png", filename="salon.png", caption="El salón")
    assert engine.send(SENDER, media=image).id != sent.id
    assert {"text": "Hola"} in [{"text": m.get("text")} for m in harness.sent_to(SENDER)]
    assert len(harness.sent_to(SENDER)) == 2


def test_the_phones_unlink_is_reported(harness, linked):
    engine, recorder = linked
    harness.unlink(LINE)
    ((reason,),) = recorder.wait("on_logged_out")
    assert reason == "logged_out"


def test_a_linked_slot_reconnects_after_a_restart_without_a_qr(harness, linked, tmp_path):
    engine, _ = linked
    engine.stop()
    recorder = Recorder()
    again = harness.engine(tmp_path / "slots" / "SLOT0001", recorder)
    assert again.has_credentials()
    again.connect()
    recorder.wait("on_connected")
    assert recorder.of("on_qr") == []
    again.stop()


def test_sending_while_not_connected_is_a_clear_error_not_a_hang(harness, tmp_path):
    engine = harness.engine(tmp_path / "slots" / "SLOT0001", Recorder())
    with pytest.raises(EngineUnavailable):
        engine.send(SENDER, text="x")


def test_a_pairing_code_can_replace_the_qr(harness, tmp_path):
    recorder = Recorder()
    engine = harness.engine(tmp_path / "slots" / "SLOT0001", recorder)
    engine.start_pairing()
    recorder.wait("on_qr")
    code = engine.pair_code(LINE)
    engine.stop()
    assert len(code) == 9 and code[4] == "-"


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_our_own_logout_is_never_reported_as_the_phones_unlink(harness, linked):
    """The network's word that the device is gone, after we asked for it, is an echo (issue 9): the
    sim engine's session thread sees it on its long poll, whatsmeow may dispatch LoggedOut during
    Logout(). Neither may reach on_logged_out, however the threads interleave."""
    engine, recorder = linked
    thread = next((t for t in threading.enumerate() if t.name == f"{harness.name}-{engine.slot_id}"), None)
    engine.logout()  # no stop() yet: the slot runner stops the engine only after its logout returns
    if thread is not None:
        thread.join(timeout=15)  # the session ends by itself once the network forgot the device
        assert not thread.is_alive() or harness.name == "whatsmeow"
    assert recorder.of("on_logged_out") == []


def test_the_phones_unlink_while_we_stop_is_not_reported_twice(harness, linked):
    engine, recorder = linked
    harness.unlink(LINE)
    recorder.wait("on_logged_out")
    engine.logout()
    engine.stop()
    assert len(recorder.of("on_logged_out")) == 1


def test_every_engine_of_the_registry_is_known_to_core_and_only_those():
    from controlplane.core import engine_names
    from slotworker import engines

    assert set(engines._REGISTRY) == set(engine_names.REQUIRES)
