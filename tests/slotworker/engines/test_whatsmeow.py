"""The whatsmeow engine at neonize's boundary: real neonize code, the Go library played by FakeGo."""

import logging
import time

import neonize.client
import pytest
from neonize.events import (
    EVENT_TO_INT,
    CallOfferEv,
    CallTerminateEv,
    ChatPresenceEv,
    ClientOutdatedEv,
    ConnectedEv,
    DisconnectedEv,
    GroupInfoEv,
    HistorySyncEv,
    JoinedGroupEv,
    LoggedOutEv,
    MessageEv,
    PairStatusEv,
    PresenceEv,
    ReceiptEv,
    StreamReplacedEv,
    TemporaryBanEv,
    UndecryptableMessageEv,
)

from controlplane.core.config import Settings
from slotworker.engines.base import OutboundMedia
from slotworker.engines.whatsmeow import WhatsmeowEngine
from tests.slotworker.engines.fakego import FakeGo
from tests.slotworker.engines.harness import Recorder

LINE = "34666123456"


@pytest.fixture
def fake(monkeypatch):
    go = FakeGo()
    monkeypatch.setattr(neonize.client, "gocode", go)
    return go


def make_engine(tmp_path, recorder, **env):
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_ENGINE": "whatsmeow", **env})
    return WhatsmeowEngine("SLOT0001", tmp_path / "slots" / "SLOT0001", settings, recorder)


def linked_engine(tmp_path, fake, recorder, **env):
    engine = make_engine(tmp_path, recorder, **env)
    engine.start_pairing()
    recorder.wait("on_qr")
    fake.pair(LINE)
    recorder.wait("on_connected")
    return engine


LIFECYCLE = (PairStatusEv, ConnectedEv, DisconnectedEv, LoggedOutEv, TemporaryBanEv, StreamReplacedEv,
             ClientOutdatedEv)
DEFAULT_SOURCES = (MessageEv, ReceiptEv, CallOfferEv, CallTerminateEv, JoinedGroupEv, GroupInfoEv,
                   UndecryptableMessageEv)


def test_every_handler_is_subscribed_before_connect_and_only_the_selected_events(tmp_path, fake):
    engine = make_engine(tmp_path, Recorder())
    engine.start_pairing()
    fake.running.wait(5)
    engine.stop()
    # by default every type but presence; history sync never (the gateway forwards no past chats)
    assert fake.subscribed == {EVENT_TO_INT[e] for e in LIFECYCLE + DEFAULT_SOURCES}


def test_whin_events_narrows_what_go_is_asked_to_forward(tmp_path, fake):
    engine = make_engine(tmp_path, Recorder(), WHIN_EVENTS="call,presence")
    engine.start_pairing()
    fake.running.wait(5)
    engine.stop()
    selected = (CallOfferEv, CallTerminateEv, ChatPresenceEv, PresenceEv)
    assert fake.subscribed == {EVENT_TO_INT[e] for e in LIFECYCLE + selected}
    assert EVENT_TO_INT[HistorySyncEv] not in fake.subscribed


def test_whatsapp_unreachable_while_pairing_ends_the_pairing_within_seconds(tmp_path, fake):
    fake.reachable = False
    recorder = Recorder()
    started = time.monotonic()
    make_engine(tmp_path, recorder).start_pairing()
    assert recorder.wait("on_pairing_ended", timeout=5) == [("network_unreachable",)]
    assert time.monotonic() - started < 5
    assert recorder.of("on_qr") == []


def test_a_linked_slot_keeps_retrying_while_whatsapp_is_unreachable(tmp_path, fake):
    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)
    engine.stop()
    fake.reachable = False
    again_events = Recorder()
    again = make_engine(tmp_path, again_events)
    again.connect()
    again_events.wait("on_disconnected")
    fake.reachable = True
    again_events.wait("on_connected", timeout=15)  # 2 s x failures, as whatsmeow
    again.stop()


def test_a_sender_known_only_by_lid_reaches_the_runner_untouched_with_its_sender_alt(tmp_path, fake):
    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)
    fake.deliver("34611000002", "hola", "3EB0LID1", lid=True)
    ((source, payload),) = recorder.wait("on_event")
    assert (source, payload["Info"]["ID"]) == ("Message", "3EB0LID1")
    assert payload["Info"]["MessageSource"]["Sender"]["Server"] == "lid"  # the payload itself untouched
    assert payload["Info"]["MessageSource"]["SenderAlt"]["User"] == "34611000002"
    engine.stop()


def test_text_goes_out_as_a_conversation_and_documents_are_uploaded_first(tmp_path, fake):
    engine = linked_engine(tmp_path, fake, Recorder())
    engine.send("34611000003", text="Hola")
    engine.send("34611000003", media=OutboundMedia(data=b"%PDF-1.4 fake", mimetype="application/pdf",
                                                   filename="contrato.pdf", caption="El contrato"))
    (_, text), (_, document) = fake.sent
    assert text.conversation == "Hola" and not text.HasField("extendedTextMessage")
    assert (document.documentMessage.fileName, document.documentMessage.mimetype) == ("contrato.pdf",
                                                                                     "application/pdf")
    assert ("Upload", len(b"%PDF-1.4 fake"), 3) in fake.calls  # 3: MediaDocument
    engine.stop()


def test_go_printing_on_stdout_is_never_taken_for_data(tmp_path, fake, capfd):
    engine = linked_engine(tmp_path, fake, Recorder())
    sent = engine.send("34611000004", text="x")
    assert sent.id.startswith("3EB0FAKE")
    assert "SendMessage: Go writes" in capfd.readouterr().out  # it did print; nothing read it
    engine.stop()


def test_a_failing_handler_is_logged_not_swallowed_by_ctypes(tmp_path, fake, caplog):
    class Failing(Recorder):
        def on_event(self, *args):
            raise RuntimeError("queue down")

    recorder = Failing()
    engine = linked_engine(tmp_path, fake, recorder)
    with caplog.at_level(logging.ERROR):
        fake.deliver("34611000005", "hola", "3EB0FAIL")
    assert "handler _on_Message failed" in caplog.text
    engine.stop()


def test_logout_of_a_sleeping_slot_connects_first_then_unlinks(tmp_path, fake):
    engine = linked_engine(tmp_path, fake, Recorder())
    engine.stop()
    sleeping = make_engine(tmp_path, Recorder())
    sleeping.logout()
    assert ("Logout",) in fake.calls
    neonize_calls = [c for c in fake.calls if c[0] == "Neonize"]
    assert neonize_calls[-1][2] is False  # reconnected as the stored device, not a new one


def test_with_a_postgres_store_each_slot_resumes_its_own_device(tmp_path, fake):
    url = "postgres://whin:secret@127.0.0.1/whin_sessions"
    engine = linked_engine(tmp_path, fake, Recorder(), WHIN_SESSION_DB=url)
    engine.stop()
    again = make_engine(tmp_path, Recorder(), WHIN_SESSION_DB=url)
    again.connect()
    fake.running.wait(5)
    again.stop()
    _, name, new_device, jid = [c for c in fake.calls if c[0] == "Neonize"][-1]
    assert name == url.encode() and new_device is False
    assert (jid.User, jid.Device) == (LINE, 7)  # the JID the phone paired, from the slot's device.json


def test_a_network_drop_is_reported_and_sending_meanwhile_is_a_clear_error(tmp_path, fake):
    from slotworker.engines.base import EngineUnavailable

    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)
    fake.connected = False
    fake.emit(DisconnectedEv(status=True))
    recorder.wait("on_disconnected")
    with pytest.raises(EngineUnavailable):
        engine.send("34611000006", text="x")
    fake.connect_now()  # whatsmeow reconnects by itself
    recorder.wait("on_connected", count=2)
    assert engine.send("34611000006", text="x").id
    engine.stop()


def test_pairing_ends_when_the_last_code_expires_without_a_new_one(tmp_path, fake, monkeypatch):
    from slotworker.engines import whatsmeow

    monkeypatch.setattr(whatsmeow, "FIRST_QR_SECONDS", 0.3)
    monkeypatch.setattr(whatsmeow, "CODES_GONE_GRACE", 0.2)
    recorder = Recorder()
    engine = make_engine(tmp_path, recorder)
    engine.start_pairing()
    recorder.wait("on_qr")
    assert recorder.wait("on_pairing_ended", timeout=5) == [("codes_exhausted",)]
    engine.stop()


def test_kill_of_a_linked_slot_logs_out_while_connected_then_stops(tmp_path, fake):
    engine = linked_engine(tmp_path, fake, Recorder())
    engine.logout()
    engine.stop()
    calls = [c[0] for c in fake.calls]
    assert calls.index("Logout") < calls.index("Stop")  # logged out with a live client
    assert [c for c in calls if c == "Neonize"] == ["Neonize"]  # no reconnect needed
