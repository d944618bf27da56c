"""The whatsmeow engine's sending (whatsmeow_send, whatsmeow_groups): the protobufs and Go calls
whatsmeow receives for every kind, and what its errors become. neonize runs for real; FakeGo plays Go."""

import time

import neonize.client
import pytest
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ProtocolMessage

from slotworker.engines import handoff
from slotworker.engines.base import EngineUnavailable, Existence, Location, OutboundMedia
from tests.slotworker.engines.fakego import FakeGo
from tests.slotworker.engines.harness import Recorder
from tests.slotworker.engines.test_whatsmeow import LINE, linked_engine, make_engine


@pytest.fixture
def fake(monkeypatch):
    go = FakeGo()
    monkeypatch.setattr(neonize.client, "gocode", go)
    return go


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

    fake.groups[GROUP] = {LINE, CONTACT}  # a group that addresses its members by phone number
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
    assert not [c for c in fake.calls if c[0] == "GetLIDFromPN"]  # a phone-addressed group needs no LID


LEFT = "34611000029"  # was in the group once: whatsmeow's store never learnt its LID


def lid_group(fake):
    """A LID-addressed group of the line and CONTACT, as WhatsApp's newer groups are."""
    fake.groups[GROUP] = {LINE, CONTACT}
    fake.lid_groups.add(GROUP)
    return f"{GROUP}@g.us"


def test_in_a_lid_addressed_group_reactions_quotes_and_reads_name_the_author_by_lid(linked, fake):
    from slotworker.engines.base import Quote, Reaction
    from tests.slotworker.engines.fakego_send import lid_of

    gid = lid_group(fake)
    linked.react(gid, Reaction(message_id="3EB0MEMBER", emoji="❤", from_me=False, sender=CONTACT))
    linked.send(gid, text="Sí", reply=Quote(message_id="3EB0ASKED", sender=CONTACT))
    linked.send_location(gid, Location(1.0, 2.0), reply=Quote(message_id="3EB0MINE", sender=LINE))
    linked.mark_read(gid, ["3EB0MEMBER"], sender=CONTACT)
    reaction, reply, pin = (o.message for o in fake.outbox)
    assert reaction.reactionMessage.key.participant == f"{lid_of(CONTACT)}@lid"
    assert reply.extendedTextMessage.contextInfo.participant == f"{lid_of(CONTACT)}@lid"
    assert pin.locationMessage.contextInfo.participant == f"{lid_of(LINE)}@lid"  # the line as the group names it
    assert fake.reads[-1][:3] == (GROUP, f"{lid_of(CONTACT)}@lid", ["3EB0MEMBER"])
    assert ("GetLIDFromPN", CONTACT, "s.whatsapp.net") in fake.calls  # exactly as neonize asks Go


def test_a_member_the_store_does_not_know_is_named_by_phone_jid(linked, fake):
    from slotworker.engines.base import Reaction

    gid = lid_group(fake)
    linked.react(gid, Reaction(message_id="3EB0OLD", emoji="👍", from_me=False, sender=LEFT))
    assert last_sent(fake).message.reactionMessage.key.participant == f"{LEFT}@s.whatsapp.net"


def test_a_groups_addressing_is_asked_once_kept_from_joined_group_and_asked_again_after_a_change(linked, fake):
    from slotworker.engines.base import Reaction

    def group_info_calls(group):
        return [c for c in fake.calls if c == ("GetGroupInfo", group)]

    gid = lid_group(fake)
    member_lid = fake.learn_lid(CONTACT)
    for emoji in ("👍", "❤"):
        linked.react(gid, Reaction(message_id="3EB0M", emoji=emoji, from_me=False, sender=CONTACT))
    assert len(group_info_calls(GROUP)) == 1
    fake.group_renamed(GROUP, "Pisos (centro)", member_lid)
    linked.react(gid, Reaction(message_id="3EB0M", emoji="😮", from_me=False, sender=CONTACT))
    assert len(group_info_calls(GROUP)) == 2  # a GroupInfo event: how it addresses members may have changed
    joined = "120363000000000043"
    fake.joined_group(joined, "Visitas", member_lid, {CONTACT: member_lid, LINE: fake.learn_lid(LINE)})
    linked.react(f"{joined}@g.us", Reaction(message_id="3EB0N", emoji="👍", from_me=False, sender=CONTACT))
    assert group_info_calls(joined) == []  # the JoinedGroup event told it
    assert last_sent(fake).message.reactionMessage.key.participant == f"{member_lid}@lid"


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


def test_mark_read_names_the_author_only_in_a_group_and_refuses_a_group_read_without_one(linked, fake):
    from neonize.utils.enum import ReceiptType

    from slotworker.engines.base import SendRefused

    fake.groups[GROUP] = {LINE, CONTACT}
    linked.mark_read(CONTACT, ["3EB0A", "3EB0B"])
    linked.mark_read(f"{GROUP}@g.us", ["3EB0C"], sender=CONTACT)
    assert fake.reads == [(CONTACT, f"{CONTACT}@s.whatsapp.net", ["3EB0A", "3EB0B"], ReceiptType.READ.value),
                          (GROUP, f"{CONTACT}@s.whatsapp.net", ["3EB0C"], ReceiptType.READ.value)]
    before = len(fake.calls)
    with pytest.raises(SendRefused) as refused:  # whatsmeow would send it with no participant: ignored
        linked.mark_read(f"{GROUP}@g.us", ["3EB0D"])
    assert refused.value.code == "send_failed" and "author" in refused.value.detail
    assert fake.calls[before:] == [] and len(fake.reads) == 2  # nothing asked of Go


def test_the_line_is_available_only_while_it_types_or_records(linked, fake):
    before = len(fake.calls)
    for state in ("composing", "recording", "paused"):
        linked.send_presence(CONTACT, state)
    assert fake.presences == [(CONTACT, "s.whatsapp.net", 0, 0), (CONTACT, "s.whatsapp.net", 0, 1),
                              (CONTACT, "s.whatsapp.net", 1, 0)]
    assert [c for c in fake.calls[before:] if c[0] in ("SendPresence", "SendChatPresence")] == [
        ("SendPresence", b"available"), ("SendChatPresence", CONTACT, 0, 0),
        ("SendPresence", b"available"), ("SendChatPresence", CONTACT, 0, 1),
        ("SendChatPresence", CONTACT, 1, 0), ("SendPresence", b"unavailable")]


def test_each_connection_announces_the_line_unavailable_before_it_is_reported(tmp_path, fake):
    from neonize.events import DisconnectedEv

    recorder = Recorder()
    engine = linked_engine(tmp_path, fake, recorder)  # waited for on_connected: the presence came first
    assert [c for c in fake.calls if c[0] == "SendPresence"] == [("SendPresence", b"unavailable")]
    fake.connected = False
    fake.emit(DisconnectedEv(status=True))
    fake.connect_now()  # whatsmeow reconnected by itself
    recorder.wait("on_connected", count=2)
    assert [c for c in fake.calls if c[0] == "SendPresence"] == [("SendPresence", b"unavailable")] * 2
    engine.stop()


def test_a_refused_announcement_is_logged_by_type_and_the_line_still_connects(tmp_path, fake, monkeypatch, caplog):
    import logging

    monkeypatch.setattr(fake, "SendPresence", lambda uuid, presence: b"can't send presence without PushName set")
    with caplog.at_level(logging.WARNING):
        engine = linked_engine(tmp_path, fake, Recorder())  # on_connected came all the same
    assert "SendPresenceError" in caplog.text and "PushName" not in caplog.text
    engine.stop()


def test_exists_asks_with_the_plus_and_falls_back_to_the_number_behind_a_lid(linked, fake):
    assert linked.exists("34611000030") == Existence(exists=False, jid=None)
    fake.registered.add("34611000030")
    assert linked.exists("34611000030") == Existence(exists=True, jid="34611000030@s.whatsapp.net")
    assert ("IsOnWhatsApp", "+34611000030") in fake.calls
    fake.lid_answers = True  # whatsmeow queries with addressing_mode=lid: the JID may be the @lid
    assert linked.exists("+34611000030") == Existence(exists=True, jid="34611000030@s.whatsapp.net")
    assert linked.exists("34611000030") == linked.exists("+34611000030")  # with or without its +
    assert ("IsOnWhatsApp", "++34611000030") not in fake.calls


def test_a_message_of_both_text_and_media_or_of_neither_is_refused_before_go(linked, fake):
    from slotworker.engines.base import SendRefused

    before = len(fake.calls)
    for attempt in (lambda: linked.send(CONTACT, text="Hola", media=OutboundMedia(data=b"%PDF",
                                                                                  mimetype="application/pdf")),
                    lambda: linked.send(CONTACT)):
        with pytest.raises(SendRefused) as refused:
            attempt()
        assert refused.value.code == "send_failed" and "exactly one of text or media" in refused.value.detail
    assert fake.calls[before:] == []


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
                                                                                   caplog, failure):
    import logging

    from neonize.proto.Neonize_pb2 import SendMessageReturnFunction, UploadReturnFunction

    from slotworker.engines.base import SendRefused

    if failure == "send":  # e.g. whatsmeow's answer to a send the server rejected (its text names JIDs)
        monkeypatch.setattr(fake, "SendMessage", lambda *a: SendMessageReturnFunction(
            Error=f"failed to send to {CONTACT}@s.whatsapp.net: server returned error 479").SerializeToString())
    elif failure == "upload":
        monkeypatch.setattr(fake, "Upload", lambda *a: UploadReturnFunction(
            Error="upload failed with status code 413").SerializeToString())
    else:  # anything neonize's Python side might raise
        monkeypatch.setattr(linked.client, "send_message", lambda *a, **k: (_ for _ in ()).throw(TypeError("x")))
    with caplog.at_level(logging.WARNING), pytest.raises(SendRefused) as refused:
        linked.send(CONTACT, media=OutboundMedia(data=b"%PDF", mimetype="application/pdf"))
    assert refused.value.code == "send_failed"
    assert "%PDF" not in refused.value.detail
    # whatsmeow's own text stays out of the answer and the log: its type only, a neutral verb
    assert CONTACT not in refused.value.detail and "479" not in refused.value.detail
    assert CONTACT not in caplog.text and "479" not in caplog.text
    assert "did not accept the message" not in refused.value.detail
    expected = {"send": "SendMessageError", "upload": "UploadError", "python": "TypeError"}[failure]
    assert expected in refused.value.detail and expected in caplog.text


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


def test_a_slow_upload_that_outlasts_the_callers_wait_sends_nothing(linked, fake, monkeypatch):
    """The API answered 504 while the file was still uploading: the message is not sent after all."""
    real_upload = type(fake).Upload

    def slow_upload(self, *args):
        time.sleep(0.6)
        return real_upload(self, *args)

    monkeypatch.setattr(type(fake), "Upload", slow_upload)
    with handoff.deadline(time.time() + 0.3), pytest.raises(handoff.HandoffExpired):
        linked.send("34611000003", media=OutboundMedia(data=b"%PDF-1.4 fake", mimetype="application/pdf",
                                                       filename="tarde.pdf"))
    assert any(call[0] == "Upload" for call in fake.calls)  # the slow part happened
    assert fake.sent == []  # the hand-off did not
