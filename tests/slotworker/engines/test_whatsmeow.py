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
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message, ProtocolMessage

from controlplane.core.config import Settings
from slotworker.engines import whatsmeow_media
from slotworker.engines.base import EngineUnavailable, Existence, MediaRefused, OutboundMedia
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


# --- sending every kind: the protobufs whatsmeow receives, and what its errors become ---

CONTACT = "34611000020"
GROUP = "120363000000000042"


def _png(size=(64, 48)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def last_sent(fake):
    return fake.outbox[-1]


@pytest.fixture
def linked(tmp_path, fake):
    engine = linked_engine(tmp_path, fake, Recorder())
    yield engine
    engine.stop()


def test_a_voice_note_is_ptt_opus_with_its_seconds_uploaded_as_audio_without_ffmpeg(linked, fake, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no ffmpeg/ffprobe to be found: none is needed
    voice = b"OggS\x00\x02" + bytes(range(200)) * 5
    sent = linked.send(CONTACT, media=OutboundMedia(data=voice, mimetype="audio/ogg", ptt=True, seconds=7))
    out = last_sent(fake)
    assert (out.user, out.server, out.id) == (CONTACT, "s.whatsapp.net", sent.id)
    audio = out.message.audioMessage
    assert (audio.PTT, audio.mimetype, audio.seconds) == (True, "audio/ogg; codecs=opus", 7)
    assert ("Upload", len(voice), 2) in fake.calls  # 2: MediaAudio
    assert fake.plain_of(out.message) == voice  # the phone decrypts it with the audio keys
    assert audio.mediaKeyTimestamp > 0 and audio.fileLength == len(voice)


@pytest.mark.parametrize("kind", ["image", "video", "audio", "document"])
def test_each_media_kind_is_its_own_message_uploaded_with_its_key_family(linked, fake, kind):
    data, mimetype, field, media_type = {
        "image": (_png(), "image/png", "imageMessage", 0),
        "video": (b"\x00\x00\x00\x18ftypmp42 fake video", "video/mp4", "videoMessage", 1),
        "audio": (b"ID3 fake mp3 bytes", "audio/mpeg", "audioMessage", 2),
        "document": (b"%PDF-1.4 fake", "application/pdf", "documentMessage", 3),
    }[kind]
    media = OutboundMedia(data=data, mimetype=mimetype, filename="f.pdf" if kind == "document" else None,
                          caption=None if kind == "audio" else "Mire", seconds=12 if kind in ("video", "audio")
                          else None, thumbnail=b"\xff\xd8 jpeg" if kind == "video" else None)
    linked.send(CONTACT, media=media)
    message = last_sent(fake).message
    assert [f.name for f, _ in message.ListFields()] == [field]
    part = getattr(message, field)
    assert part.mimetype == mimetype and ("Upload", len(data), media_type) in fake.calls
    assert fake.plain_of(message) == data  # uploaded with the keys of the kind it is sent as
    if kind == "image":
        assert (part.caption, part.width, part.height) == ("Mire", 64, 48)
        assert part.JPEGThumbnail.startswith(b"\xff\xd8")  # a JPEG preview made with Pillow
    if kind == "video":
        assert (part.caption, part.seconds, part.JPEGThumbnail) == ("Mire", 12, b"\xff\xd8 jpeg")
    if kind == "audio":
        assert (part.PTT, part.seconds) == (False, 12)
    if kind == "document":
        assert (part.fileName, part.caption) == ("f.pdf", "Mire")


@pytest.mark.parametrize("data", [b"not an image at all", _png()[:60]])
def test_an_image_that_does_not_decode_is_invalid_media_and_nothing_is_uploaded(linked, fake, data):
    from slotworker.engines.base import SendRefused

    with pytest.raises(SendRefused) as refused:
        linked.send(CONTACT, media=OutboundMedia(data=data, mimetype="image/jpeg"))
    assert refused.value.code == "invalid_media"
    assert not [c for c in fake.calls if c[0] in ("Upload", "SendMessage")]


def test_a_reply_carries_the_quoted_id_its_author_and_the_quoted_message(linked, fake):
    from slotworker.engines.base import Location, Quote

    quoted = {"extendedTextMessage": {"text": "¿Sigue disponible?", "contextInfo": {"stanzaID": "3EB0OLDER"}}}
    linked.send(CONTACT, text="Sí", reply=Quote(message_id="3EB0Q1", message=quoted))
    message = last_sent(fake).message
    assert not message.conversation  # a conversation cannot carry a quote
    text = message.extendedTextMessage
    assert text.text == "Sí"
    context = text.contextInfo
    assert (context.stanzaID, context.participant) == ("3EB0Q1", f"{CONTACT}@s.whatsapp.net")
    assert context.quotedMessage.extendedTextMessage.text == "¿Sigue disponible?"
    assert not context.quotedMessage.extendedTextMessage.HasField("contextInfo")  # no quote in a quote
    linked.send_location(CONTACT, Location(40.4168, -3.7038, name="Sol"), reply=Quote(message_id="3EB0Q2",
                                                                                      sender=LINE))
    location = last_sent(fake).message.locationMessage
    assert (location.degreesLatitude, location.degreesLongitude, location.name) == (40.4168, -3.7038, "Sol")
    assert (location.contextInfo.stanzaID, location.contextInfo.participant) == ("3EB0Q2", f"{LINE}@s.whatsapp.net")
    assert not location.contextInfo.HasField("quotedMessage")


def test_a_quoted_message_that_is_no_message_is_refused_before_anything_is_sent(linked, fake):
    from slotworker.engines.base import Quote, SendRefused

    bad = Quote(message_id="3EB0Q", message={"conversation": {"nested": 1}})
    for attempt in (lambda: linked.send(CONTACT, text="x", reply=bad),
                    lambda: linked.send(CONTACT, media=OutboundMedia(data=b"%PDF", mimetype="application/pdf"),
                                        reply=bad)):
        with pytest.raises(SendRefused) as refused:
            attempt()
        assert refused.value.code == "send_failed"
    assert not fake.outbox and not [c for c in fake.calls if c[0] == "Upload"]  # nothing uploaded for nothing


def test_a_contact_card_is_the_given_vcard(linked, fake):
    from slotworker.engines.base import Contact

    vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Ana\nTEL;type=CELL;waid=34611000021:+34 611 00 00 21\nEND:VCARD"
    linked.send_contact(CONTACT, Contact(name="Ana", vcard=vcard))
    card = last_sent(fake).message.contactMessage
    assert (card.displayName, card.vcard) == ("Ana", vcard)


def test_reaction_keys_as_whatsmeows_build_message_key(linked, fake):
    from slotworker.engines.base import Reaction

    fake.groups[GROUP] = {LINE, CONTACT}
    linked.react(CONTACT, Reaction(message_id="3EB0THEIRS", emoji="👍", from_me=False))
    linked.react(CONTACT, Reaction(message_id="3EB0MINE", emoji="", from_me=True))
    linked.react(f"{GROUP}@g.us", Reaction(message_id="3EB0MEMBER", emoji="❤", from_me=False, sender=CONTACT))
    linked.react(f"{GROUP}@g.us", Reaction(message_id="3EB0OWN", emoji="❤", from_me=True))
    keys = [(o.message.reactionMessage.key, o.message.reactionMessage.text) for o in fake.outbox]
    assert [(k.remoteJID, k.ID, k.fromMe, k.participant, text) for k, text in keys] == [
        (f"{CONTACT}@s.whatsapp.net", "3EB0THEIRS", False, "", "👍"),
        (f"{CONTACT}@s.whatsapp.net", "3EB0MINE", True, "", ""),  # "" removes the reaction
        (f"{GROUP}@g.us", "3EB0MEMBER", False, f"{CONTACT}@s.whatsapp.net", "❤"),
        (f"{GROUP}@g.us", "3EB0OWN", True, "", "❤"),
    ]
    assert all(o.message.reactionMessage.senderTimestampMS > 0 for o in fake.outbox)


def test_revoke_names_the_lines_own_message_without_asking_go_who_it_is(linked, fake):
    sent = linked.revoke(CONTACT, "3EB0MINE")
    out = last_sent(fake)
    protocol = out.message.protocolMessage
    assert protocol.type == ProtocolMessage.REVOKE and out.id == sent.id
    assert (protocol.key.remoteJID, protocol.key.ID, protocol.key.fromMe, protocol.key.participant) == (
        f"{CONTACT}@s.whatsapp.net", "3EB0MINE", True, "")
    assert ("GetMe",) not in fake.calls  # GetMe aborts the process before a connection


def test_an_edit_is_whatsmeows_message_edit_with_the_new_text(linked, fake):
    linked.edit(CONTACT, "3EB0MINE", "Mañana a las 11")
    protocol = last_sent(fake).message.editedMessage.message.protocolMessage
    assert protocol.type == ProtocolMessage.MESSAGE_EDIT
    assert (protocol.key.remoteJID, protocol.key.ID, protocol.key.fromMe) == (
        f"{CONTACT}@s.whatsapp.net", "3EB0MINE", True)
    assert protocol.editedMessage.conversation == "Mañana a las 11" and protocol.timestampMS > 0


def test_a_group_is_addressed_as_its_jid_and_one_the_line_is_not_in_is_refused(linked, fake):
    from slotworker.engines.base import Reaction, SendRefused

    fake.groups[GROUP] = {LINE, CONTACT}
    fake.groups["120363000000000099"] = {CONTACT}  # the line is not a member
    linked.send(f"{GROUP}@g.us", text="Hola a todos")
    assert (last_sent(fake).user, last_sent(fake).server) == (GROUP, "g.us")
    attempts = (lambda gid: linked.send(gid, text="x"),
                lambda gid: linked.send(gid, media=OutboundMedia(data=b"%PDF", mimetype="application/pdf")),
                lambda gid: linked.react(gid, Reaction(message_id="3EB0X", emoji="👍", from_me=True)),
                lambda gid: linked.edit(gid, "3EB0X", "y"),
                lambda gid: linked.mark_read(gid, ["3EB0X"], sender=CONTACT),
                lambda gid: linked.send_presence(gid, "composing"))
    for gid in ("120363000000000099@g.us", "120363000000000777@g.us"):  # not a member / no such group
        for attempt in attempts:
            with pytest.raises(SendRefused) as refused:
                attempt(gid)
            assert refused.value.code == "not_in_group"
    assert len(fake.outbox) == 1 and not fake.reads and not fake.presences


def test_mark_read_names_the_author_only_in_a_group(linked, fake):
    from neonize.utils.enum import ReceiptType

    fake.groups[GROUP] = {LINE, CONTACT}
    linked.mark_read(CONTACT, ["3EB0A", "3EB0B"])
    linked.mark_read(f"{GROUP}@g.us", ["3EB0C"], sender=CONTACT)
    assert fake.reads == [(CONTACT, CONTACT, ["3EB0A", "3EB0B"], ReceiptType.READ.value),
                          (GROUP, CONTACT, ["3EB0C"], ReceiptType.READ.value)]


def test_presence_states_are_neonizes_chat_presence_and_media(linked, fake):
    for state in ("composing", "recording", "paused"):
        linked.send_presence(CONTACT, state)
    assert fake.presences == [(CONTACT, "s.whatsapp.net", 0, 0), (CONTACT, "s.whatsapp.net", 0, 1),
                              (CONTACT, "s.whatsapp.net", 1, 0)]


def test_exists_asks_with_the_plus_and_falls_back_to_the_number_behind_a_lid(linked, fake):
    assert linked.exists("34611000030") == Existence(exists=False, jid=None)
    fake.registered.add("34611000030")
    assert linked.exists("34611000030") == Existence(exists=True, jid="34611000030@s.whatsapp.net")
    assert ("IsOnWhatsApp", "+34611000030") in fake.calls
    fake.lid_answers = True  # whatsmeow queries with addressing_mode=lid: the JID may be the @lid
    assert linked.exists("+34611000030") == Existence(exists=True, jid="34611000030@s.whatsapp.net")
    assert ("IsOnWhatsApp", "++34611000030") not in fake.calls


def test_every_new_call_without_a_connection_is_unavailable_and_reaches_no_go_function(tmp_path, fake):
    from slotworker.engines.base import Contact, Location, Reaction

    engine = make_engine(tmp_path, Recorder())
    for attempt in (lambda: engine.send(CONTACT, text="x"),
                    lambda: engine.send_location(CONTACT, Location(1.0, 2.0)),
                    lambda: engine.send_contact(CONTACT, Contact("Ana", "BEGIN:VCARD\nEND:VCARD")),
                    lambda: engine.react(CONTACT, Reaction("3EB0X", "👍", from_me=False)),
                    lambda: engine.mark_read(CONTACT, ["3EB0X"]),
                    lambda: engine.send_presence(CONTACT, "composing"),
                    lambda: engine.revoke(CONTACT, "3EB0X"),
                    lambda: engine.edit(CONTACT, "3EB0X", "y"),
                    lambda: engine.exists(CONTACT)):
        with pytest.raises(EngineUnavailable):
            attempt()
    assert fake.calls == []


def test_a_connection_gone_under_the_engine_is_unavailable_not_a_refusal(linked, fake):
    fake.connected = False  # whatsmeow noticed before the Disconnected event reached us
    for attempt in (lambda: linked.send(CONTACT, text="x"),
                    lambda: linked.send(CONTACT, media=OutboundMedia(data=b"%PDF", mimetype="application/pdf")),
                    lambda: linked.mark_read(CONTACT, ["3EB0X"]),
                    lambda: linked.send_presence(CONTACT, "paused"),
                    lambda: linked.exists(CONTACT)):
        with pytest.raises(EngineUnavailable):
            attempt()


@pytest.mark.parametrize("failure", ["send", "upload", "python"])
def test_whatsapp_refusing_or_neonize_failing_is_send_failed_never_an_escaping_error(linked, fake, monkeypatch,
                                                                                   failure):
    from neonize.proto.Neonize_pb2 import SendMessageReturnFunction, UploadReturnFunction

    from slotworker.engines.base import SendRefused

    if failure == "send":  # e.g. whatsmeow's answer to a send the server rejected
        monkeypatch.setattr(fake, "SendMessage", lambda *a: SendMessageReturnFunction(
            Error="server returned error 479").SerializeToString())
    elif failure == "upload":
        monkeypatch.setattr(fake, "Upload", lambda *a: UploadReturnFunction(
            Error="upload failed with status code 413").SerializeToString())
    else:  # anything neonize's Python side might raise
        monkeypatch.setattr(linked.client, "send_message", lambda *a, **k: (_ for _ in ()).throw(TypeError("x")))
    with pytest.raises(SendRefused) as refused:
        linked.send(CONTACT, media=OutboundMedia(data=b"%PDF", mimetype="application/pdf"))
    assert refused.value.code == "send_failed"
    assert "%PDF" not in refused.value.detail


def test_the_harness_shows_what_the_phone_got_in_the_inbox_shape(tmp_path, monkeypatch):
    """sent_to as simnet's inbox: built from what SendMessage received, changes applied onto their
    target. The contract suite relies on it."""
    import hashlib

    from slotworker.engines.base import Contact, Location, Quote, Reaction
    from tests.slotworker.engines.whatsmeow_harness import WhatsmeowHarness

    harness = WhatsmeowHarness(tmp_path, monkeypatch)
    recorder = Recorder()
    engine = harness.engine(tmp_path / "slots" / "SLOT0001", recorder)
    engine.start_pairing()
    harness.scan(LINE, recorder)
    recorder.wait("on_connected")
    try:
        text = engine.send(CONTACT, text="Hola")
        voice = engine.send(CONTACT, media=OutboundMedia(data=b"OggS opus", mimetype="audio/ogg", ptt=True,
                                                         seconds=3), reply=Quote("3EB0Q", message={
                                                             "conversation": "¿Me llama?"}))
        engine.send_location(CONTACT, Location(40.0, -3.5, address="Gran Vía 1"))
        engine.send_contact(CONTACT, Contact("Ana", "BEGIN:VCARD\nEND:VCARD"))
        engine.react(CONTACT, Reaction(text.id, "👍", from_me=True))
        engine.edit(CONTACT, text.id, "Hola, buenas")
        engine.revoke(CONTACT, voice.id)
        harness.read(CONTACT, LINE, [text.id])
        first, second, pin, card = harness.sent_to(CONTACT)
        assert {k: first[k] for k in ("id", "from", "to", "kind", "text", "status", "reactions", "edited")} == {
            "id": text.id, "from": LINE, "to": CONTACT, "kind": "text", "text": "Hola, buenas", "status": "read",
            "reactions": {LINE: "👍"}, "edited": True}
        assert isinstance(first["timestamp"], int) and "revoked" not in first
        assert (second["kind"], second["revoked"], second["reply_to"], second["quoted_text"]) == (
            "voice", True, "3EB0Q", "¿Me llama?")
        assert "media" not in second
        assert pin["location"] == {"latitude": 40.0, "longitude": -3.5, "address": "Gran Vía 1"}
        assert card["contact"] == {"name": "Ana", "vcard": "BEGIN:VCARD\nEND:VCARD"} and card["kind"] == "contact"
        photo = _png()
        engine.send(CONTACT, media=OutboundMedia(data=photo, mimetype="image/png", caption="El salón"))
        assert harness.sent_to(CONTACT)[-1]["media"] == {
            "mimetype": "image/png", "caption": "El salón", "ptt": False, "sha256": hashlib.sha256(photo).hexdigest()}
        engine.react(CONTACT, Reaction(text.id, "", from_me=True))
        assert harness.sent_to(CONTACT)[0]["reactions"] == {}
        engine.mark_read(CONTACT, ["3EB0IN1"])
        engine.send_presence(CONTACT, "recording")
        assert (harness.read_by_line(CONTACT), harness.chat_state(CONTACT)) == (["3EB0IN1"], {LINE: "recording"})
        assert harness.chat_state("34611000099") == {}
        assert engine.exists("34611000099").exists is False
        harness.join("34611000099")
        assert engine.exists("34611000099").exists is True
        group = harness.create_group("Pisos", [CONTACT, LINE])
        posted = engine.send(group, text="Hola a todos")
        (entry,) = harness.sent_to_group(group)
        assert (entry["id"], entry["group"], entry["kind"], entry["text"]) == (posted.id, group, "text", "Hola a todos")
        assert posted.id not in [e["id"] for e in harness.sent_to(CONTACT)]
    finally:
        engine.stop()


def test_control_file_ops_make_numbers_and_groups_known_to_whatsapp(tmp_path, fake, monkeypatch):
    import json

    from tests.gateway import wait_for
    from tests.slotworker.engines.fakego import CONTROL_ENV

    monkeypatch.setenv(CONTROL_ENV, str(tmp_path / "control"))
    folder = tmp_path / "control" / "SLOT0001"
    folder.mkdir(parents=True)
    engine = linked_engine(tmp_path, fake, Recorder())
    assert engine.exists("34611000040").exists is False
    (folder / "1.json").write_text(json.dumps({"op": "join", "number": "34611000040"}))
    (folder / "2.json").write_text(json.dumps({"op": "group", "id": f"{GROUP}@g.us", "members": [LINE, CONTACT]}))
    wait_for(lambda: GROUP in fake.groups and "34611000040" in fake.registered, timeout=5, what="both ops done")
    assert engine.exists("34611000040").exists is True
    assert engine.send(f"{GROUP}@g.us", text="Hola").id
    engine.stop()
