"""One contract for every engine: the sim engine on a real simnet, the whatsmeow engine at neonize's
boundary (its Go library played by FakeGo). What the layers above rely on is the same for both."""

import hashlib
import stat
import threading
import time

import neonize.events
import pytest
from google.protobuf import json_format
from neonize.events import EVENT_TO_INT, ReceiptEv

from slotworker.engines import handoff
from slotworker.engines.base import (
    Contact,
    EngineUnavailable,
    Location,
    MediaRefused,
    OutboundMedia,
    Quote,
    Reaction,
    SendRefused,
    SendResult,
)
from tests.slotworker.engines.harness import Recorder
from tests.slotworker.engines.sim_harness import SimHarness
from tests.slotworker.engines.whatsmeow_harness import WhatsmeowHarness

LINE = "34666123456"
SENDER = "34611122233"


@pytest.fixture(params=["sim", "whatsmeow"])
def harness(request, tmp_path, monkeypatch):
    h = SimHarness(tmp_path) if request.param == "sim" else WhatsmeowHarness(tmp_path, monkeypatch)
    yield h
    h.close()


def link(harness, tmp_path, **env):
    """An engine that paired with LINE and is connected; returns (engine, recorder)."""
    recorder = Recorder()
    engine = harness.engine(tmp_path / "slots" / "SLOT0001", recorder, **env)
    engine.start_pairing()
    harness.scan(LINE, recorder)
    recorder.wait("on_connected")
    return engine, recorder


@pytest.fixture
def linked(harness, tmp_path):
    engine, recorder = link(harness, tmp_path)
    yield engine, recorder
    engine.stop()


@pytest.fixture
def linked_with_presence(harness, tmp_path):
    engine, recorder = link(harness, tmp_path, WHIN_EVENTS="message,presence")
    yield engine, recorder
    engine.stop()


def event(recorder: Recorder, source: str, where=lambda payload: True) -> dict:
    """The first event of that source matching ``where``; its payload must be the protobuf, losslessly."""
    payload = recorder.wait_event(source, where)
    parsed = json_format.ParseDict(payload, getattr(neonize.events, f"{source}Ev")())
    assert json_format.MessageToDict(parsed, preserving_proto_field_name=True) == payload
    return payload


def fetch(engine, message: dict, max_bytes: int = 16 * 1024 * 1024) -> bytes:
    """engine.download, its chunks joined, checked against the size it announced."""
    download = engine.download(message, max_bytes)
    data = b"".join(download.chunks)
    assert download.size in (None, len(data))
    return data


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
    payload = event(recorder, "Message", lambda p: p["Info"]["ID"] == message_id)
    assert payload["Message"]["conversation"] == "¿Sigue disponible el ático?"
    assert payload["Info"]["MessageSource"]["Sender"]["User"] == SENDER
    assert [src for src, _ in recorder.of("on_event")].count("Message") == 1


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
    # sim: its own session thread (an earlier test's, of the same slot id, may still sit in its poll).
    thread = getattr(engine, "thread", None) or next(
        (t for t in threading.enumerate() if t.name == f"{harness.name}-{engine.slot_id}"), None)
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


# --- inbound media: a reference in the event, the bytes through engine.download ---

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
VOICE = b"OggS\x00\x02" + bytes(reversed(range(256))) * 30


@pytest.mark.parametrize("kind", ["photo", "voice note", "pdf"])
def test_a_phones_media_arrives_as_a_reference_and_downloads_to_the_exact_bytes(harness, linked, kind):
    engine, recorder = linked
    data, mimetype, filename, field = {
        "photo": (_png(), "image/png", None, "imageMessage"),
        "voice note": (VOICE, "audio/ogg; codecs=opus", None, "audioMessage"),
        "pdf": (PDF, "application/pdf", "contrato.pdf", "documentMessage"),
    }[kind]
    message_id = harness.send_media(SENDER, LINE, data, mimetype, filename=filename, ptt=kind == "voice note",
                                    caption="El contrato" if kind == "pdf" else None)
    payload = event(recorder, "Message", lambda p: p["Info"]["ID"] == message_id)
    media = payload["Message"][field]
    assert media["mimetype"] == mimetype and int(media["fileLength"]) == len(data)
    assert media["directPath"] and media["mediaKey"] and media["fileEncSHA256"]  # a reference, not the file
    if kind == "voice note":
        assert media["PTT"] is True
    if kind == "pdf":
        assert (media["fileName"], media["caption"]) == ("contrato.pdf", "El contrato")
    got = fetch(engine, payload["Message"])
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def test_media_the_server_forgot_is_gone(harness, linked):
    engine, recorder = linked
    message_id = harness.send_media(SENDER, LINE, PDF, "application/pdf", filename="contrato.pdf")
    payload = event(recorder, "Message", lambda p: p["Info"]["ID"] == message_id)
    harness.forget_media()
    with pytest.raises(MediaRefused) as refused:
        fetch(engine, payload["Message"])
    assert refused.value.code == "media_gone"


def test_media_over_the_limit_is_refused(harness, linked):
    engine, recorder = linked
    message_id = harness.send_media(SENDER, LINE, PDF, "application/pdf", filename="contrato.pdf")
    payload = event(recorder, "Message", lambda p: p["Info"]["ID"] == message_id)
    with pytest.raises(MediaRefused) as refused:
        fetch(engine, payload["Message"], max_bytes=len(PDF) - 1)
    assert refused.value.code == "media_too_large"
    assert fetch(engine, payload["Message"], max_bytes=len(PDF)) == PDF  # exactly the limit is fine


def test_a_text_has_no_media(harness, linked):
    engine, recorder = linked
    message_id = harness.deliver(SENDER, LINE, "hola")
    payload = event(recorder, "Message", lambda p: p["Info"]["ID"] == message_id)
    with pytest.raises(MediaRefused) as refused:
        fetch(engine, payload["Message"])
    assert refused.value.code == "no_media"


# --- the network's other events, each as whatsmeow's own ---

def test_a_sent_message_is_delivered_then_read(harness, linked):
    engine, recorder = linked
    sent = engine.send(SENDER, text="Le envío el dossier")
    delivered = event(recorder, "Receipt", lambda p: sent.id in p["MessageIDs"] and p["Type"] == "DELIVERED")
    assert delivered["MessageSource"]["Chat"]["User"] == SENDER
    harness.read(SENDER, LINE, [sent.id])
    read = event(recorder, "Receipt", lambda p: p["Type"] == "READ")
    assert read["MessageIDs"] == [sent.id] and read["MessageSource"]["Sender"]["User"] == SENDER


def test_a_call_rings_and_ends(harness, linked):
    engine, recorder = linked
    call_id = harness.call(SENDER, LINE)
    offer = event(recorder, "CallOffer")
    assert offer["basicCallMeta"]["callID"] == call_id and offer["basicCallMeta"]["from"]["User"] == SENDER
    harness.hang_up(SENDER, LINE, call_id)
    ended = event(recorder, "CallTerminate")
    assert ended["basicCallMeta"]["callID"] == call_id


def test_typing_and_recording_in_the_chat(harness, linked_with_presence):
    engine, recorder = linked_with_presence
    harness.typing(SENDER, LINE, "composing")
    typing = event(recorder, "ChatPresence")
    assert typing["State"] == "COMPOSING" and typing["MessageSource"]["Sender"]["User"] == SENDER
    harness.typing(SENDER, LINE, "recording")
    assert event(recorder, "ChatPresence", lambda p: p.get("Media") == "AUDIO")["State"] == "COMPOSING"
    harness.typing(SENDER, LINE, "paused")
    event(recorder, "ChatPresence", lambda p: p["State"] == "PAUSED")


def test_a_contact_comes_online_and_goes_away(harness, linked_with_presence):
    engine, recorder = linked_with_presence
    harness.presence(SENDER, LINE, True)
    online = event(recorder, "Presence")
    assert online["From"]["User"] == SENDER and not online.get("Unavailable", False)
    harness.presence(SENDER, LINE, False)
    event(recorder, "Presence", lambda p: p.get("Unavailable") is True)


def test_a_group_joined_renamed_and_a_members_message_by_lid(harness, linked):
    engine, recorder = linked
    group_id = harness.create_group("Pisos Centro", [SENDER, LINE])
    bare = group_id.split("@")[0]
    joined = event(recorder, "JoinedGroup")
    assert (joined["GroupInfo"]["JID"]["User"], joined["GroupInfo"]["JID"]["Server"]) == (bare, "g.us")
    assert joined["GroupInfo"]["GroupName"]["Name"] == "Pisos Centro"
    harness.rename_group(group_id, "Pisos Centro y Ensanche")
    renamed = event(recorder, "GroupInfo")
    assert renamed["JID"]["User"] == bare and renamed["Name"]["Name"] == "Pisos Centro y Ensanche"
    message_id = harness.group_message(SENDER, group_id, "Hay uno nuevo en Gran Vía")
    source = event(recorder, "Message", lambda p: p["Info"]["ID"] == message_id)["Info"]["MessageSource"]
    assert source["IsGroup"] is True and source["Chat"]["User"] == bare and source["Chat"]["Server"] == "g.us"
    assert source["Sender"]["Server"] == "lid" and source["Sender"]["User"] != SENDER
    assert not source.get("SenderAlt", {}).get("User")  # the phone number is not in the event...
    assert engine.phone_for_lid(source["Sender"]["User"]) == SENDER  # ...the engine finds it


def test_the_lines_own_phone_writing_is_from_me(harness, linked):
    engine, recorder = linked
    message_id = harness.own_message(LINE, SENDER, "Le llamo en cinco minutos")
    payload = event(recorder, "Message", lambda p: p["Info"]["ID"] == message_id)
    source = payload["Info"]["MessageSource"]
    assert source["IsFromMe"] is True and source["Chat"]["User"] == SENDER
    assert payload["Message"]["conversation"] == "Le llamo en cinco minutos"


def test_a_reaction_an_edit_and_a_revoke_from_a_phone(harness, linked):
    engine, recorder = linked
    original = harness.deliver(SENDER, LINE, "Mañana a las 10")
    event(recorder, "Message", lambda p: p["Info"]["ID"] == original)
    reaction_id = harness.react(SENDER, LINE, original, "👍")
    reaction = event(recorder, "Message", lambda p: p["Info"]["ID"] == reaction_id)["Message"]["reactionMessage"]
    assert (reaction["key"]["ID"], reaction["text"]) == (original, "👍")
    edit_id = harness.edit(SENDER, LINE, original, "Mañana a las 11")
    edit = event(recorder, "Message", lambda p: p["Info"]["ID"] == edit_id)
    assert edit["IsEdit"] is True and edit["Info"]["Edit"] == "1"
    protocol = edit["Message"]["protocolMessage"]
    assert (protocol["type"], protocol["key"]["ID"]) == ("MESSAGE_EDIT", original)
    assert protocol["editedMessage"]["conversation"] == "Mañana a las 11"
    revoke_id = harness.revoke(SENDER, LINE, original)
    revoke = event(recorder, "Message", lambda p: p["Info"]["ID"] == revoke_id)
    assert revoke["Info"]["Edit"] == "7"
    assert (revoke["Message"]["protocolMessage"]["type"], revoke["Message"]["protocolMessage"]["key"]["ID"]) == (
        "REVOKE", original)


def test_an_undecryptable_message(harness, linked):
    engine, recorder = linked
    message_id = harness.undecryptable(SENDER, LINE)
    payload = event(recorder, "UndecryptableMessage")
    assert payload["Info"]["ID"] == message_id and payload["Info"]["MessageSource"]["Sender"]["User"] == SENDER


# --- the network refusing a still-linked device ---

def test_a_temporary_ban_is_reported_with_its_expiry_and_the_line_comes_back_after_it(harness, linked):
    engine, recorder = linked
    harness.ban(LINE, 2)
    ((reason, details),) = recorder.wait("on_offline")
    assert reason == "temporary_ban" and 1 <= details["expires_in"] <= 2
    assert isinstance(details["ban_code"], str) and details["ban_code"]
    with pytest.raises(EngineUnavailable):
        engine.send(SENDER, text="x")
    recorder.wait("on_connected", count=2, timeout=15)  # once the ban expired
    assert engine.send(SENDER, text="ya").id


@pytest.mark.parametrize("reason", ["stream_replaced", "client_outdated"])
def test_a_replaced_or_outdated_client_is_reported_and_does_not_fight_back(harness, linked, reason):
    engine, recorder = linked
    (harness.replace if reason == "stream_replaced" else harness.outdate)(LINE)
    assert recorder.wait("on_offline") == [(reason, {})]
    with pytest.raises(EngineUnavailable):
        engine.send(SENDER, text="x")
    time.sleep(2.5)  # longer than a reconnect's first back-off
    assert len(recorder.of("on_connected")) == 1


# --- WHIN_EVENTS ---

def test_an_engine_selecting_only_messages_never_gets_a_receipt(harness, tmp_path):
    engine, recorder = link(harness, tmp_path, WHIN_EVENTS="message")
    try:
        assert engine.sources == {"Message"}
        engine.send(SENDER, text="Hola")  # the network acknowledges it with a DELIVERED receipt...
        time.sleep(0.3)
        message_id = harness.deliver(SENDER, LINE, "hola")  # ...before this message
        event(recorder, "Message", lambda p: p["Info"]["ID"] == message_id)
        assert recorder.payloads("Receipt") == []
        assert {src for src, _ in recorder.of("on_event")} == {"Message"}
        if harness.name == "whatsmeow":  # Go was never asked to forward receipts
            assert EVENT_TO_INT[ReceiptEv] not in harness.fake.subscribed
            assert ("unsubscribed", "Receipt") in harness.fake.calls  # ...though the network sent one
    finally:
        engine.stop()


# --- outbound: every kind an agent sends from a phone (issue 13), as the phone shows it ---

def _entry(harness, number: str, message_id: str) -> dict:
    return next(e for e in harness.sent_to(number) if e["id"] == message_id)


def _ogg_opus() -> bytes:
    """A minimal OGG/Opus stream: what a voice note carries (the control plane converts to it)."""
    head = b"OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    return b"OggS\x00\x02" + bytes(20) + head + b"OggS\x00\x04" + bytes(20) + bytes(100)


@pytest.mark.parametrize("mimetype, data, kind, extra", [
    ("image/png", None, "image", {"caption": "El salón"}),
    ("video/mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(500), "video", {"caption": "La visita", "seconds": 12}),
    ("audio/mpeg", b"ID3" + bytes(700), "audio", {"seconds": 7}),
    ("audio/ogg; codecs=opus", None, "voice", {"ptt": True, "seconds": 3}),
    ("application/pdf", PDF, "document", {"filename": "contrato.pdf"}),
])
def test_each_media_kind_reaches_the_phone_as_that_kind(harness, linked, mimetype, data, kind, extra):
    engine, _ = linked
    data = data or (_png() if kind == "image" else _ogg_opus())
    sent = engine.send(SENDER, media=OutboundMedia(data=data, mimetype=mimetype, **extra))
    entry = _entry(harness, SENDER, sent.id)
    assert entry["kind"] == kind
    assert entry["media"]["sha256"] == hashlib.sha256(data).hexdigest()  # the file itself, not a copy of a copy
    assert entry["media"]["mimetype"].split(";")[0] == mimetype.split(";")[0]
    assert entry["media"].get("ptt", False) is (kind == "voice")
    for name in ("caption", "filename", "seconds"):
        if name in extra:
            assert entry["media"][name] == extra[name]


def test_a_location_and_a_contact_card(harness, linked):
    engine, _ = linked
    pin = engine.send_location(SENDER, Location(40.4168, -3.7038, name="Ático en Sol", address="Puerta del Sol 1"))
    card = engine.send_contact(SENDER, Contact("Ana Agente", VCARD))
    assert pin.id != card.id
    location = _entry(harness, SENDER, pin.id)
    assert location["kind"] == "location"
    assert location["location"] == {"latitude": 40.4168, "longitude": -3.7038, "name": "Ático en Sol",
                                    "address": "Puerta del Sol 1"}
    contact = _entry(harness, SENDER, card.id)
    assert (contact["kind"], contact["contact"]) == ("contact", {"name": "Ana Agente", "vcard": VCARD})


VCARD = "BEGIN:VCARD\nVERSION:3.0\nFN:Ana Agente\nTEL;type=CELL;waid=34611000777:+34 611 000 777\nEND:VCARD"


def test_a_reply_quotes_the_message_it_answers(harness, linked):
    engine, recorder = linked
    question = harness.deliver(SENDER, LINE, "¿Tiene garaje?")
    quoted = event(recorder, "Message", lambda p: p["Info"]["ID"] == question)["Message"]
    answer = engine.send(SENDER, text="Sí, dos plazas", reply=Quote(question, sender=SENDER, message=quoted))
    entry = _entry(harness, SENDER, answer.id)
    assert (entry["kind"], entry["text"], entry["reply_to"]) == ("text", "Sí, dos plazas", question)
    assert entry["quoted_text"] == "¿Tiene garaje?"
    pin = engine.send_location(SENDER, Location(40.0, -3.0), reply=Quote(question, sender=SENDER))
    assert _entry(harness, SENDER, pin.id)["reply_to"] == question


def test_a_reaction_lands_on_its_message_and_an_empty_one_removes_it(harness, linked):
    engine, _ = linked
    first = engine.send(SENDER, text="Le envío las fotos")
    second = engine.send(SENDER, text="¿Le va bien el jueves?")
    engine.react(SENDER, Reaction(second.id, "👍", from_me=True))
    assert _entry(harness, SENDER, second.id)["reactions"] == {LINE: "👍"}
    assert not _entry(harness, SENDER, first.id).get("reactions")
    engine.react(SENDER, Reaction(second.id, "", from_me=True))
    assert not _entry(harness, SENDER, second.id).get("reactions")


def test_a_revoke_deletes_and_an_edit_changes_what_the_phone_shows(harness, linked):
    engine, _ = linked
    wrong = engine.send(SENDER, text="El precio es 1.000 €")
    typo = engine.send(SENDER, text="Nos vemos a las 10")
    engine.revoke(SENDER, wrong.id)
    engine.edit(SENDER, typo.id, "Nos vemos a las 11")
    revoked, edited = _entry(harness, SENDER, wrong.id), _entry(harness, SENDER, typo.id)
    assert revoked.get("revoked") is True and "1.000" not in str(revoked)
    assert (edited.get("edited"), edited["text"]) == (True, "Nos vemos a las 11")


def test_a_read_mark_reaches_the_phone(harness, linked):
    engine, _ = linked
    ids = [harness.deliver(SENDER, LINE, "Hola"), harness.deliver(SENDER, LINE, "¿Sigue libre?")]
    engine.mark_read(SENDER, ids)
    assert sorted(harness.read_by_line(SENDER)) == sorted(ids)


@pytest.mark.parametrize("state", ["composing", "recording", "paused"])
def test_typing_reaches_the_phone(harness, linked, state):
    engine, _ = linked
    engine.send_presence(SENDER, state)
    assert harness.chat_state(SENDER) == {LINE: state}


def test_exists_is_true_for_a_number_on_whatsapp_and_false_otherwise(harness, linked):
    engine, _ = linked
    harness.join("34611000555")
    known = engine.exists("34611000555")
    assert (known.exists, known.jid) == (True, "34611000555@s.whatsapp.net")
    assert engine.exists("34699999999").exists is False


def test_a_group_the_line_is_in_gets_the_message_and_one_it_is_not_in_is_refused(harness, linked):
    engine, recorder = linked
    gid = harness.create_group("Visitas", [LINE, SENDER])
    event(recorder, "JoinedGroup")
    sent = engine.send(gid, text="Hola a todos")
    assert [(e["id"], e["text"]) for e in harness.sent_to_group(gid)] == [(sent.id, "Hola a todos")]
    other = harness.create_group("Otra agencia", ["34611000888", SENDER])
    with pytest.raises(SendRefused) as refused:
        engine.send(other, text="¿Hola?")
    assert refused.value.code == "not_in_group"


def test_every_conversation_call_while_not_connected_is_engine_unavailable(harness, tmp_path):
    engine = harness.engine(tmp_path / "slots" / "SLOT0001", Recorder())
    calls = [lambda: engine.send_location(SENDER, Location(1.0, 2.0)),
             lambda: engine.send_contact(SENDER, Contact("Ana", VCARD)),
             lambda: engine.react(SENDER, Reaction("3EB0AA", "👍", from_me=False, sender=SENDER)),
             lambda: engine.mark_read(SENDER, ["3EB0AA"]),
             lambda: engine.send_presence(SENDER, "composing"),
             lambda: engine.revoke(SENDER, "3EB0AA"),
             lambda: engine.edit(SENDER, "3EB0AA", "x"),
             lambda: engine.exists(SENDER)]
    for call in calls:
        with pytest.raises(EngineUnavailable):
            call()


def test_a_reaction_to_the_contacts_message_shows_on_their_phone(harness, linked):
    engine, _ = linked
    question = harness.deliver(SENDER, LINE, "¿Admiten mascotas?")
    engine.react(SENDER, Reaction(question, "❤️", from_me=False, sender=SENDER))
    (shown,) = [e for e in harness.sent_to(SENDER) if e["kind"] == "reaction"]
    assert shown["reaction"] == {"message_id": question, "emoji": "❤️"}
    engine.react(SENDER, Reaction(question, "", from_me=False, sender=SENDER))
    assert [e for e in harness.sent_to(SENDER) if e["kind"] == "reaction"] == []


def test_both_engines_refuse_alike_what_is_not_one_message(harness, linked):
    engine, recorder = linked
    with pytest.raises(SendRefused) as both:
        engine.send(SENDER, text="Hola", media=OutboundMedia(data=PDF, mimetype="application/pdf"))
    assert both.value.code == "send_failed"
    gid = harness.create_group("Visitas", [LINE, SENDER])
    event(recorder, "JoinedGroup")
    posted = harness.group_message(SENDER, gid, "Hola grupo")
    with pytest.raises(SendRefused) as nameless:  # in a group, a read receipt names the author
        engine.mark_read(gid, [posted])
    assert nameless.value.code == "send_failed"


def test_exists_takes_a_number_with_or_without_its_plus(harness, linked):
    engine, _ = linked
    harness.join("34611000556")
    assert engine.exists("+34611000556") == engine.exists("34611000556")
    assert engine.exists("+34611000556").exists is True


def test_a_send_past_its_callers_deadline_is_never_handed_over(harness, linked):
    """The API stopped waiting (and answered 504): whatever the engine had still to do, nothing goes out."""
    engine, _ = linked
    with handoff.deadline(time.time() - 0.01), pytest.raises(handoff.HandoffExpired):
        engine.send(SENDER, text="too late")
    with handoff.deadline(time.time() - 0.01), pytest.raises(handoff.HandoffExpired):
        engine.send(SENDER, media=OutboundMedia(data=PDF, mimetype="application/pdf", filename="tarde.pdf"))
    with handoff.deadline(time.time() + 30):  # in time: sent
        sent = engine.send(SENDER, text="in time")
    assert [e["id"] for e in harness.sent_to(SENDER)] == [sent.id]
