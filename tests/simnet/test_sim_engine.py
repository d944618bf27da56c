"""The sim engine against a real simnet server: events by source, offline notices, media downloads,
the LID store, and everything it does in a conversation (sending every kind, reading, typing,
exists) with simnet's refusals as the engine's."""

import base64
import io
import threading

import pytest
from PIL import Image
from werkzeug.serving import make_server

from controlplane.core import slotfiles
from controlplane.core.config import Settings
from slotworker.engines import sim as sim_module
from slotworker.engines.base import (
    Contact,
    EngineUnavailable,
    Location,
    MediaRefused,
    OutboundMedia,
    Quote,
    Reaction,
    SendRefused,
)
from slotworker.engines.sim import CREDENTIALS_FILE, SimEngine
from tests.gateway import free_port, wait_for
from tests.simnet.server import SimServer
from tests.slotworker.engines.harness import Recorder

LINE, PHONE, OTHER_LINE = "34666123456", "34611222333", "34666999888"
VCARD = "BEGIN:VCARD\nVERSION:3.0\nFN:Ana\nTEL;type=CELL;waid=34611000777:+34 611 000 777\nEND:VCARD"
PLAIN = bytes(range(256)) * 2000 + b"end"  # ~512 KB: several download chunks


def engine_for(sim: SimServer, tmp_path, recorder, env: dict | None = None, link: bool = True) -> SimEngine:
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_SIMNET_PORT": str(sim.port), **(env or {})})
    slot_dir = tmp_path / "slots" / "SLOT0001"
    slot_dir.mkdir(parents=True, exist_ok=True)
    if link:
        slotfiles.write_private_json(slot_dir / CREDENTIALS_FILE, sim.link(LINE))
    return SimEngine("SLOT0001", slot_dir, settings, recorder)


@pytest.fixture
def connected(sim, tmp_path):
    recorder = Recorder()
    engine = engine_for(sim, tmp_path, recorder)
    engine.connect()
    recorder.wait("on_connected")
    yield engine, recorder
    engine.stop()


def media_message(sim: SimServer, engine: SimEngine, recorder: Recorder, plain: bytes = PLAIN,
                  mimetype: str = "application/pdf", **extra) -> dict:
    sim.ok("/messages", {"from": PHONE, "to": LINE, "media": {"data": base64.b64encode(plain).decode(),
                                                              "mimetype": mimetype, **extra}})
    return recorder.wait("on_event")[-1][1]["Message"]


# --- events ---

def test_events_reach_on_event_by_source_and_unselected_sources_do_not(connected, sim):
    engine, recorder = connected
    sim.ok(f"/phones/{PHONE}/typing", {"line": LINE, "state": "composing"})  # presence: off by default
    sent = sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "hola"})
    sim.ok(f"/phones/{PHONE}/call", {"line": LINE})
    recorder.wait("on_event", 2)
    assert [source for source, _ in recorder.of("on_event")] == ["Message", "CallOffer"]
    assert recorder.of("on_event")[0][1]["Info"]["ID"] == sent["id"]


def test_presence_is_forwarded_when_whin_events_names_it(sim, tmp_path):
    recorder = Recorder()
    engine = engine_for(sim, tmp_path, recorder, {"WHIN_EVENTS": "presence"})
    engine.connect()
    recorder.wait("on_connected")
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "hola"})
    sim.ok(f"/phones/{PHONE}/typing", {"line": LINE, "state": "recording"})
    (source, payload), = recorder.wait("on_event")
    engine.stop()
    assert (source, payload["Media"]) == ("ChatPresence", "AUDIO")


# --- offline ---

def test_a_ban_is_reported_and_the_engine_comes_back_once_it_expired(connected, sim):
    engine, recorder = connected
    sim.ok(f"/phones/{LINE}/ban", {"seconds": 1})
    ((reason, details),) = recorder.wait("on_offline")
    assert (reason, details) == ("temporary_ban", {"expires_in": 1, "ban_code": "sent_too_many_same_message"})
    recorder.wait("on_connected", 2, timeout=10)
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "de vuelta"})
    assert recorder.wait("on_event")[-1][1]["Message"]["conversation"] == "de vuelta"


def test_a_replaced_session_is_reported_once_and_not_fought(connected, sim, tmp_path):
    engine, recorder = connected
    sim.ok(f"/phones/{LINE}/replace")
    assert recorder.wait("on_offline") == [("stream_replaced", {})]
    wait_for(lambda: not engine.thread.is_alive(), what="the session to end")
    assert len(recorder.of("on_connected")) == 1 and engine.has_credentials()


def test_an_outdated_client_is_reported_and_retries_slowly(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(sim_module, "OUTDATED_RETRY_SECONDS", 0.3)
    sim.ok(f"/phones/{LINE}/outdated", {"outdated": True})
    recorder = Recorder()
    engine = engine_for(sim, tmp_path, recorder)
    engine.connect()
    assert recorder.wait("on_offline") == [("client_outdated", {})]
    sim.ok(f"/phones/{LINE}/outdated", {"outdated": False})
    recorder.wait("on_connected", timeout=5)
    engine.stop()
    assert len(recorder.of("on_offline")) == 1  # said once, not at every retry


# --- download ---

def test_download_streams_the_decrypted_file(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder, filename="contrato.pdf")
    download = engine.download(message, max_bytes=10**7)
    assert download.size == len(PLAIN)
    chunks = list(download.chunks)
    assert b"".join(chunks) == PLAIN and len(chunks) > 1


def test_download_works_while_disconnected(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder, mimetype="image/jpeg")
    engine.stop()
    assert b"".join(engine.download(message, 10**7).chunks) == PLAIN


def test_a_file_over_the_limit_is_refused_before_it_is_fetched(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    sim.network.media.forget()  # a fetch would say media_gone
    with pytest.raises(MediaRefused) as caught:
        engine.download(message, max_bytes=len(PLAIN) - 1)
    assert caught.value.code == "media_too_large"


def test_a_file_longer_than_its_message_says_is_cut_off_at_the_limit(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    message["documentMessage"]["fileLength"] = "10"
    with pytest.raises(MediaRefused) as caught:
        b"".join(engine.download(message, max_bytes=1000).chunks)
    assert caught.value.code == "media_too_large"


def test_a_file_that_fails_its_checks_never_completes(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    message["documentMessage"]["fileSHA256"] = base64.b64encode(b"\0" * 32).decode()
    got = []
    with pytest.raises(MediaRefused) as caught:
        for chunk in engine.download(message, 10**7).chunks:
            got.append(chunk)
    assert caught.value.code == "media_corrupt"
    assert len(b"".join(got)) < len(PLAIN)  # the last bytes were held back


def test_forgotten_media_is_gone(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    sim.network.media.forget()
    with pytest.raises(MediaRefused) as caught:
        engine.download(message, 10**7)
    assert caught.value.code == "media_gone"


def test_download_fetches_only_from_simnet_whatever_the_url_says(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    message["documentMessage"]["URL"] = "http://127.0.0.1:9/elsewhere"
    assert b"".join(engine.download(message, 10**7).chunks) == PLAIN
    for direct_path in ("http://169.254.169.254/latest", "//evil.example/x", "mms/document/x", None):
        crafted = {"documentMessage": {**message["documentMessage"], "directPath": direct_path}}
        with pytest.raises(MediaRefused) as caught:
            engine.download(crafted, 10**7)
        assert caught.value.code == "no_media"


@pytest.mark.parametrize("message", [{"conversation": "hola"}, {"imageMessage": {"directPath": "/mms/image/x"}},
                                     {"imageMessage": {"mediaKey": "bm90IDMyIGJ5dGVz", "directPath": "/mms/image/x"}},
                                     None])
def test_messages_without_a_usable_reference_are_no_media(connected, message):
    engine, _ = connected
    with pytest.raises(MediaRefused) as caught:
        engine.download(message, 10**7)
    assert caught.value.code == "no_media"


def test_download_with_simnet_unreachable_is_engine_unavailable(connected, sim):
    engine, recorder = connected
    message = media_message(sim, engine, recorder)
    engine.base_url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnavailable):
        engine.download(message, 10**7)


# --- the LID store ---

def test_phone_for_lid_asks_the_networks_lid_store(connected, sim):
    engine, _ = connected
    lid = sim.ok("/phones", {"number": PHONE})["lid"]
    assert engine.phone_for_lid(lid) == PHONE
    assert engine.phone_for_lid("123456789012345") is None
    assert engine.phone_for_lid("../../health") is None
    engine.base_url = f"http://127.0.0.1:{free_port()}"
    assert engine.phone_for_lid(lid) == PHONE  # a number once known is kept: no second question
    other = sim.ok("/phones", {"number": "34611000999"})["lid"]
    assert engine.phone_for_lid(other) is None  # simnet unreachable: unknown, not an error


def test_phone_for_lid_answers_none_when_simnet_hangs(connected, sim):
    engine, _ = connected
    silent = make_server("127.0.0.1", 0, lambda environ, start: threading.Event().wait(5) or [], threaded=True)
    threading.Thread(target=silent.serve_forever, daemon=True).start()
    engine.base_url = f"http://127.0.0.1:{silent.server_port}"
    assert engine.phone_for_lid(sim.ok("/phones", {"number": PHONE})["lid"]) is None
    silent.shutdown()


class _FailingOnce(Recorder):
    """A slot whose event handler has a bug the first time."""

    failed = False

    def on_event(self, source, payload):
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in a callback")
        self.events.append(("on_event", source, payload))


def test_a_callback_that_raises_does_not_end_the_session(sim, tmp_path):
    recorder = _FailingOnce()
    engine = engine_for(sim, tmp_path, recorder)
    engine.connect()
    recorder.wait("on_connected")
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "uno"})
    wait_for(lambda: recorder.failed, what="the failing callback")
    sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "dos"})
    recorder.wait_event("Message", lambda p: p["Message"].get("conversation") == "dos", timeout=15)
    engine.stop()


# --- a conversation ---

def inbox_entry(sim: SimServer, phone: str, message_id: str) -> dict:
    (entry,) = [e for e in sim.network.inbox(phone) if e["id"] == message_id]
    return entry


def received(sim: SimServer, device: dict) -> list[dict]:
    """The Message payloads held for a device (another line), acknowledged."""
    held = sim.events(device)
    if held:
        sim.events(device, after=held[-1]["seq"])
    return [e["payload"] for e in held if e["source"] == "Message"]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, "PNG")
    return buffer.getvalue()


def test_every_kind_reaches_another_line_as_whatsapps_message(connected, sim):
    engine, _ = connected
    other = sim.link(OTHER_LINE)
    text = engine.send(OTHER_LINE, text="Hola")
    video = engine.send(OTHER_LINE, media=OutboundMedia(b"\x00\x00\x00\x18ftypmp42", "video/mp4", caption="Visita",
                                                         seconds=12, thumbnail=b"\xff\xd8thumb"))
    voice = engine.send(OTHER_LINE, media=OutboundMedia(b"OggS opus", "audio/ogg; codecs=opus", ptt=True, seconds=3))
    pin = engine.send_location(OTHER_LINE, Location(40.4, -3.7, name="Ático"))
    card = engine.send_contact(OTHER_LINE, Contact("Ana", VCARD))
    got = {p["Info"]["ID"]: p["Message"] for p in received(sim, other)}
    assert got[text.id] == {"conversation": "Hola"}
    assert (got[video.id]["videoMessage"]["seconds"], got[video.id]["videoMessage"]["caption"]) == (12, "Visita")
    assert base64.b64decode(got[video.id]["videoMessage"]["JPEGThumbnail"]) == b"\xff\xd8thumb"
    assert (got[voice.id]["audioMessage"]["PTT"], got[voice.id]["audioMessage"]["seconds"]) == (True, 3)
    assert got[pin.id]["locationMessage"] == {"degreesLatitude": 40.4, "degreesLongitude": -3.7, "name": "Ático"}
    assert got[card.id]["contactMessage"] == {"displayName": "Ana", "vcard": VCARD}
    assert len({text.id, video.id, voice.id, pin.id, card.id}) == 5 and text.timestamp > 1_700_000_000


def test_a_reply_carries_the_quoted_id_author_and_message(connected, sim):
    engine, recorder = connected
    other = sim.link(OTHER_LINE)
    question = sim.ok("/messages", {"from": OTHER_LINE, "to": LINE, "text": "¿Tiene garaje?"})["id"]
    quoted = recorder.wait_event("Message", lambda p: p["Info"]["ID"] == question)["Message"]
    received(sim, other)
    answer = engine.send(OTHER_LINE, text="Sí", reply=Quote(question, sender=OTHER_LINE, message=quoted))
    (payload,) = received(sim, other)
    context = payload["Message"]["extendedTextMessage"]["contextInfo"]
    assert (payload["Info"]["ID"], context["stanzaID"], context["participant"]) == (
        answer.id, question, f"{OTHER_LINE}@s.whatsapp.net")
    assert context["quotedMessage"] == {"conversation": "¿Tiene garaje?"}
    entry = inbox_entry(sim, OTHER_LINE, answer.id)
    assert (entry["reply_to"], entry["quoted_text"]) == (question, "¿Tiene garaje?")


def test_react_revoke_and_edit_change_the_phones_inbox(connected, sim):
    engine, _ = connected
    first, second = engine.send(PHONE, text="uno"), engine.send(PHONE, text="dos")
    reacted = engine.react(PHONE, Reaction(first.id, "👍", from_me=True))
    assert reacted.id not in (first.id, second.id)
    engine.edit(PHONE, second.id, "dos, corregido")
    engine.revoke(PHONE, first.id)
    one, two = inbox_entry(sim, PHONE, first.id), inbox_entry(sim, PHONE, second.id)
    assert (one["revoked"], one["reactions"], "text" in one) == (True, {LINE: "👍"}, False)
    assert (two["text"], two["edited"]) == ("dos, corregido", True)
    question = sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "¿Hay ascensor?"})["id"]
    engine.react(PHONE, Reaction(question, "❤️", from_me=False, sender=PHONE))
    assert sim.network.inbox(PHONE)[-1]["reaction"] == {"message_id": question, "emoji": "❤️"}


def test_read_typing_and_exists(connected, sim):
    engine, _ = connected
    ids = [sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "hola"})["id"]]
    assert engine.mark_read(PHONE, ids) is None
    assert sim.network.read_by_line(PHONE) == ids
    engine.send_presence(PHONE, "recording")
    assert sim.network.chat_state(PHONE) == {LINE: "recording"}
    known = engine.exists(PHONE)
    assert (known.exists, known.jid) == (True, f"{PHONE}@s.whatsapp.net")
    unknown = engine.exists("34699000111")
    assert (unknown.exists, unknown.jid) == (False, None)


def test_a_group_the_line_is_in_and_one_it_is_not(connected, sim):
    engine, _ = connected
    gid = sim.ok("/groups", {"name": "Visitas", "members": [LINE, PHONE]})["id"]
    sent = engine.send(gid, text="Hola a todos")
    engine.send_presence(gid, "composing")
    posted = sim.ok("/messages", {"from": PHONE, "group": gid, "text": "hola"})["id"]
    engine.mark_read(gid, [posted], sender=PHONE)
    assert [e["id"] for e in sim.network.group_inbox(gid)] == [sent.id]
    assert sim.network.read_by_line(PHONE) == [posted]
    elsewhere = sim.ok("/groups", {"name": "Otra", "members": [PHONE]})["id"]
    for call in (lambda: engine.send(elsewhere, text="x"), lambda: engine.send_presence(elsewhere, "paused"),
                 lambda: engine.send_location("120363000000000000@g.us", Location(1.0, 2.0)),
                 lambda: engine.mark_read(elsewhere, [posted], sender=PHONE)):
        with pytest.raises(SendRefused) as refused:
            call()
        assert refused.value.code == "not_in_group" and refused.value.detail


@pytest.mark.parametrize(("call", "code"), [
    (lambda e: e.send(PHONE, media=OutboundMedia(b"not a picture", "image/jpeg")), "invalid_media"),
    (lambda e: e.send(PHONE, media=OutboundMedia(b"", "application/pdf")), "invalid_media"),
    (lambda e: e.send_location(PHONE, Location(123.0, 0.0)), "send_failed"),
    (lambda e: e.edit(PHONE, "3EB0NOTMINE", "x"), "send_failed"),
    (lambda e: e.react(PHONE, Reaction("3EB0UNKNOWN", "👍", from_me=False)), "send_failed"),
    (lambda e: e.send_presence(PHONE, "dancing"), "send_failed"),
])
def test_simnets_refusals_are_the_engines_codes(connected, sim, call, code):
    engine, _ = connected
    with pytest.raises(SendRefused) as refused:
        call(engine)
    assert refused.value.code == code and refused.value.detail
    assert sim.network.inbox(PHONE) == []


def test_an_image_that_decodes_is_sent(connected, sim):
    engine, _ = connected
    sent = engine.send(PHONE, media=OutboundMedia(_png(), "image/png", filename="salon.png", caption="El salón"))
    assert inbox_entry(sim, PHONE, sent.id)["kind"] == "image"


def test_every_conversation_call_needs_a_connection_and_simnet(connected, sim, tmp_path):
    engine, _ = connected
    calls = [lambda: engine.send(PHONE, text="x"), lambda: engine.send_location(PHONE, Location(1.0, 2.0)),
             lambda: engine.send_contact(PHONE, Contact("Ana", VCARD)), lambda: engine.revoke(PHONE, "3EB0AA"),
             lambda: engine.react(PHONE, Reaction("3EB0AA", "👍", from_me=True)),
             lambda: engine.edit(PHONE, "3EB0AA", "x"), lambda: engine.mark_read(PHONE, ["3EB0AA"]),
             lambda: engine.send_presence(PHONE, "paused"), lambda: engine.exists(PHONE)]
    engine.base_url = f"http://127.0.0.1:{free_port()}"  # simnet unreachable
    for call in calls:
        with pytest.raises(EngineUnavailable):
            call()
    engine.stop()
    never = engine_for(sim, tmp_path, Recorder())  # linked, never connected
    for call in [lambda: never.exists(PHONE), lambda: never.send_presence(PHONE, "paused")]:
        with pytest.raises(EngineUnavailable):
            call()
    assert sim.network.inbox(PHONE) == [] and sim.network.chat_state(PHONE) == {}


def test_a_logged_out_device_is_unavailable_not_refused(connected, sim):
    engine, recorder = connected
    sim.ok(f"/phones/{LINE}/unlink")
    recorder.wait("on_logged_out")
    engine._connected.set()  # the session has not noticed yet
    with pytest.raises(EngineUnavailable):
        engine.exists(PHONE)


def test_a_reaction_carries_its_key_and_one_naming_no_message_of_the_chat_is_refused(connected, sim):
    engine, _ = connected
    mine = engine.send(PHONE, text="¿Le va bien el jueves?")
    theirs = sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "Sí"})["id"]
    for wrong in (Reaction(mine.id, "👍", from_me=False), Reaction(theirs, "👍", from_me=True),
                  Reaction(theirs, "👍", from_me=False, sender=OTHER_LINE)):
        with pytest.raises(SendRefused) as refused:
            engine.react(PHONE, wrong)
        assert refused.value.code == "send_failed" and "names no message" in refused.value.detail
    assert "reactions" not in inbox_entry(sim, PHONE, mine.id) and len(sim.network.inbox(PHONE)) == 1
    engine.react(PHONE, Reaction(mine.id, "👍", from_me=True))
    assert inbox_entry(sim, PHONE, mine.id)["reactions"] == {LINE: "👍"}

    gid = sim.ok("/groups", {"name": "Visitas", "members": [LINE, PHONE, OTHER_LINE]})["id"]
    posted = sim.ok("/messages", {"from": PHONE, "group": gid, "text": "hola"})["id"]
    for wrong in (Reaction(posted, "👋", from_me=False), Reaction(posted, "👋", from_me=False, sender=OTHER_LINE)):
        with pytest.raises(SendRefused):
            engine.react(gid, wrong)
    engine.react(gid, Reaction(posted, "👋", from_me=False, sender=PHONE))


def test_a_reply_naming_the_wrong_author_of_the_quoted_message_is_refused(connected, sim):
    engine, _ = connected
    mine = engine.send(PHONE, text="El piso tiene garaje")
    for wrong in (Quote(mine.id), Quote(mine.id, sender=PHONE)):  # None names the chat's contact, as whatsmeow
        with pytest.raises(SendRefused) as refused:
            engine.send(PHONE, text="y trastero", reply=wrong)
        assert refused.value.code == "send_failed"
    answer = engine.send(PHONE, text="y trastero", reply=Quote(mine.id, sender=LINE))
    assert inbox_entry(sim, PHONE, answer.id)["reply_to"] == mine.id
    assert [e["id"] for e in sim.network.inbox(PHONE)] == [mine.id, answer.id]


@pytest.mark.parametrize("media", [None, OutboundMedia(b"%PDF-1.4", "application/pdf")])
def test_send_takes_exactly_one_of_text_or_media(connected, sim, media):
    engine, _ = connected
    with pytest.raises(SendRefused) as refused:
        engine.send(PHONE, text="hola" if media else None, media=media)
    assert (refused.value.code, refused.value.detail) == ("send_failed", "exactly one of text or media")
    assert sim.network.inbox(PHONE) == []


def test_exists_takes_a_number_with_or_without_plus(connected, sim):
    engine, _ = connected
    sim.ok("/phones", {"number": PHONE})
    assert engine.exists("+" + PHONE) == engine.exists(PHONE)
    assert engine.exists("+" + PHONE).exists is True


def test_a_send_answer_without_an_id_is_engine_unavailable(connected, sim):
    engine, _ = connected

    def odd(environ, start):
        start("200 OK", [("Content-Type", "application/json")])
        return [b'{"timestamp": 1700000000}']

    server = make_server("127.0.0.1", 0, odd, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    engine.base_url = f"http://127.0.0.1:{server.server_port}"
    with pytest.raises(EngineUnavailable, match="not understood"):
        engine.send(PHONE, text="hola")
    server.shutdown()
