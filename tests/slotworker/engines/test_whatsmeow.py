"""The whatsmeow engine at neonize's boundary: real neonize code, the Go library played by FakeGo."""

import logging
import time

import neonize.client
import pytest
from google.protobuf import json_format
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
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

from controlplane.core import sessions
from controlplane.core.config import Settings
from slotworker.engines import whatsmeow_media
from slotworker.engines.base import EngineUnavailable, MediaRefused
from slotworker.engines.whatsmeow import WhatsmeowEngine
from tests.slotworker.engines import fakego as fake_errors
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


def test_with_a_postgres_store_the_slot_resumes_its_own_device_on_another_host(tmp_path, fake, session_db):
    """WHIN_SESSION_DB: whatsmeow's store is that database, and which of its devices is this slot's is
    a row beside it, so another host (another data folder) resumes the slot with nothing on its disk."""
    engine = linked_engine(tmp_path / "host-a", fake, Recorder(), WHIN_SESSION_DB=session_db)
    engine.stop()
    assert not list((tmp_path / "host-a").rglob("*.json"))  # nothing of the session on the first host
    again = make_engine(tmp_path / "host-b", Recorder(), WHIN_SESSION_DB=session_db)
    assert again.has_credentials()
    again.connect()
    fake.running.wait(5)
    again.stop()
    _, name, new_device, jid = [c for c in fake.calls if c[0] == "Neonize"][-1]
    assert name == session_db.encode() and new_device is False
    assert (jid.User, jid.Device) == (LINE, 7)  # the JID the phone paired, from the session record
    assert again.session.read("device")[sessions.STORE_JID] == f"{LINE}:7@s.whatsapp.net"  # whatsmeow's row


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


# --- media: whatsmeow downloads, checks and decrypts; the engine maps what it says ---

PLAIN = b"%PDF-1.4 " + bytes(range(256)) * 1200  # ~300 KiB: more than one chunk


def downloaded(engine, message, max_bytes=16 * 1024 * 1024):
    download = engine.download(json_format.MessageToDict(message, preserving_proto_field_name=True), max_bytes)
    return download, b"".join(download.chunks)


def test_a_download_comes_in_256_kib_chunks_of_its_stated_size(tmp_path, fake):
    engine = linked_engine(tmp_path, fake, Recorder())
    message = fake.upload(PLAIN, "application/pdf", filename="nota.pdf")
    download = engine.download(json_format.MessageToDict(message, preserving_proto_field_name=True), 10**7)
    chunks = list(download.chunks)
    assert [len(c) for c in chunks] == [256 * 1024, len(PLAIN) - 256 * 1024]
    assert (b"".join(chunks), download.size) == (PLAIN, len(PLAIN))
    engine.stop()


def test_wrapped_media_is_handed_to_whatsmeow_unwrapped(tmp_path, fake):
    """whatsmeow's DownloadAny reads only the top level: a view-once photo or a round video note
    (ptvMessage, a VideoMessage) would be 'nothing downloadable' if passed as they are."""
    engine = linked_engine(tmp_path, fake, Recorder())
    photo = fake.upload(b"\x89PNG fake photo", "image/png")
    wrapped = Message()
    wrapped.viewOnceMessageV2.message.CopyFrom(photo)
    assert downloaded(engine, wrapped)[1] == b"\x89PNG fake photo"
    video = fake.upload(b"fake mp4 bytes", "video/mp4")
    round_note = Message()
    round_note.ptvMessage.CopyFrom(video.videoMessage)
    assert downloaded(engine, round_note)[1] == b"fake mp4 bytes"
    engine.stop()


@pytest.mark.parametrize("tamper, code", [
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "media_corrupt"),  # the encrypted file's hash fails
    (lambda data: None, "media_gone"),  # 404 from the media server
])
def test_whatsmeows_download_errors_become_the_apis_codes(tmp_path, fake, tamper, code):
    engine = linked_engine(tmp_path, fake, Recorder())
    message = fake.upload(PLAIN, "application/pdf")
    path = message.documentMessage.directPath
    fake.media[path] = tamper(fake.media[path])
    if fake.media[path] is None:
        del fake.media[path]
    with pytest.raises(MediaRefused) as refused:
        downloaded(engine, message)
    assert refused.value.code == code
    assert "%PDF" not in refused.value.detail and path not in refused.value.detail
    engine.stop()


def test_a_file_failing_its_mac_or_plain_hash_is_corrupt(tmp_path, fake):
    from controlplane.core import whatsapp_media

    engine = linked_engine(tmp_path, fake, Recorder())
    message = fake.upload(PLAIN, "application/pdf")
    other = whatsapp_media.encrypt(PLAIN, "document")  # the same file under another key: the MAC fails
    fake.media[message.documentMessage.directPath] = other.data
    message.documentMessage.fileEncSHA256 = other.file_enc_sha256
    with pytest.raises(MediaRefused) as refused:
        downloaded(engine, message)
    assert refused.value.code == "media_corrupt"
    assert whatsmeow_media.refusal_of(fake_errors.ERR_SHA256).code == "media_corrupt"
    assert whatsmeow_media.refusal_of(fake_errors.ERR_HMAC).code == "media_corrupt"
    assert whatsmeow_media.refusal_of("download failed with status code 410").code == "media_gone"
    engine.stop()


def test_a_media_server_out_of_reach_is_the_engine_unavailable_not_the_files_fault(tmp_path, fake):
    engine = linked_engine(tmp_path, fake, Recorder())
    message = fake.upload(PLAIN, "application/pdf")
    fake.media_reachable = False
    with pytest.raises(EngineUnavailable):
        downloaded(engine, message)
    engine.stop()


def test_size_checks_before_and_after_downloading(tmp_path, fake):
    engine = linked_engine(tmp_path, fake, Recorder())
    message = fake.upload(PLAIN, "application/pdf")
    with pytest.raises(MediaRefused) as refused:
        downloaded(engine, message, max_bytes=1000)
    assert refused.value.code == "media_too_large"
    assert ("DownloadAny",) not in fake.calls  # refused on the message's word, nothing fetched
    message.documentMessage.fileLength = 10  # a message that understates its file
    with pytest.raises(MediaRefused) as refused:
        downloaded(engine, message, max_bytes=1000)
    assert refused.value.code == "media_too_large" and ("DownloadAny",) in fake.calls
    engine.stop()


def test_a_message_that_is_not_a_whatsapp_message_is_invalid_and_never_reaches_go(tmp_path, fake):
    engine = linked_engine(tmp_path, fake, Recorder())
    bad = {"imageMessage": {"directPath": "/v/x", "mediaKey": "a2V5", "fileLength": "12"}, "notAField": 1}
    with pytest.raises(MediaRefused) as refused:
        engine.download(bad, 10**6)
    assert refused.value.code == "invalid_message"
    with pytest.raises(MediaRefused) as refused:
        engine.download({"conversation": "hola"}, 10**6)
    assert refused.value.code == "no_media"
    assert ("DownloadAny",) not in fake.calls
    engine.stop()


def test_downloading_without_a_connection_is_unavailable(tmp_path, fake):
    engine = make_engine(tmp_path, Recorder())
    message = fake.upload(PLAIN, "application/pdf")
    with pytest.raises(EngineUnavailable):
        downloaded(engine, message)


# --- LIDs ---

def test_phone_for_lid_asks_whatsmeows_store_only_while_connected(tmp_path, fake):
    engine = make_engine(tmp_path, Recorder())
    fake.lids["123456789012345"] = "34611000009"
    assert engine.phone_for_lid("123456789012345") is None  # before any connection: Go would panic
    assert ("GetPNFromLID",) not in fake.calls
    engine = linked_engine(tmp_path, fake, Recorder())
    assert engine.phone_for_lid("123456789012345") == "34611000009"
    assert engine.phone_for_lid("999999999999999") is None  # unknown: an empty JID from the store
    engine.stop()


# --- the network refusing the device ---

def test_a_temporary_ban_names_its_reason_and_a_new_client_connects_after_it(tmp_path, fake):
    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)
    fake.ban(1, TemporaryBanEv.TempBanReason.BLOCKED_BY_USERS)
    assert recorder.wait("on_offline") == [("temporary_ban", {"expires_in": 1, "ban_code": "blocked_by_users"})]
    recorder.wait("on_connected", count=2, timeout=10)
    neonize_calls = [c for c in fake.calls if c[0] == "Neonize"]
    assert len(neonize_calls) == 2 and neonize_calls[-1][2] is False  # the stored device, not a new pairing
    calls = [c[0] for c in fake.calls]
    assert calls.index("Stop") < len(calls) - 1 - calls[::-1].index("Neonize")  # the banned client ended first
    engine.stop()


def test_a_ban_still_running_at_reconnect_is_reported_again(tmp_path, fake):
    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)
    fake.banned_until = time.time() + 3
    fake.emit(TemporaryBanEv(Code=TemporaryBanEv.TempBanReason.BROADCAST_LIST, Expire=1))  # WhatsApp understated
    recorder.wait("on_offline", count=2, timeout=10)
    assert [r for r, _ in recorder.of("on_offline")] == ["temporary_ban", "temporary_ban"]
    recorder.wait("on_connected", count=2, timeout=10)
    engine.stop()


def test_stop_during_a_ban_cancels_the_reconnect(tmp_path, fake):
    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)
    fake.ban(1)
    recorder.wait("on_offline")
    engine.stop()
    time.sleep(1.5)
    assert [c for c in fake.calls if c[0] == "Neonize"] == [fake.calls[0]]


def test_stream_replaced_is_never_fought(tmp_path, fake):
    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)
    fake.replace()
    assert recorder.wait("on_offline") == [("stream_replaced", {})]
    time.sleep(0.5)
    assert len([c for c in fake.calls if c[0] == "Neonize"]) == 1 and recorder.of("on_disconnected") == []
    engine.stop()


def test_a_kill_after_a_replaced_stream_ends_that_client_before_connecting_to_unlink(tmp_path, fake):
    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)
    fake.replace()
    recorder.wait("on_offline")
    engine.logout()
    calls = [c[0] for c in fake.calls]
    assert calls.count("Neonize") == 2 and "Logout" in calls
    # Go keeps one client per slot id: the replaced one stopped before the second took the id.
    assert calls.index("Stop") < len(calls) - 1 - calls[::-1].index("Neonize")


def test_control_file_ops_drive_media_and_any_event(tmp_path, fake, monkeypatch):
    import base64
    import json

    from tests.slotworker.engines.fakego import CONTROL_ENV

    monkeypatch.setenv(CONTROL_ENV, str(tmp_path / "control"))
    folder = tmp_path / "control" / "SLOT0001"
    folder.mkdir(parents=True)
    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)
    (folder / "1.json").write_text(json.dumps({"op": "media", "sender": "34611000010", "id": "3EB0CTL1",
                                               "data": base64.b64encode(b"voice").decode(),
                                               "mimetype": "audio/ogg", "ptt": True}))
    (folder / "2.json").write_text(json.dumps({"op": "event", "source": "Receipt", "payload": {
        "MessageSource": {"Chat": {"User": "34611000010", "Server": "s.whatsapp.net"}},
        "MessageIDs": ["3EB0X"], "Type": "READ", "Timestamp": "1764170000"}}))
    receipt = recorder.wait_event("Receipt")
    ((_, message),) = [e for e in recorder.of("on_event") if e[0] == "Message"]
    assert message["Message"]["audioMessage"]["PTT"] is True and receipt["Type"] == "READ"
    assert b"".join(engine.download(message["Message"], 10**6).chunks) == b"voice"
    engine.stop()
