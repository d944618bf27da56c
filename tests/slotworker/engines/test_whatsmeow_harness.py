"""WhatsmeowHarness: what a phone shows of the line's messages, read back from what FakeGo's
SendMessage received, in simnet's inbox shape. The contract suite relies on it."""

import hashlib

import pytest

from slotworker.engines import whatsmeow_send
from slotworker.engines.base import Contact, Location, OutboundMedia, Quote, Reaction
from tests.slotworker.engines.harness import Recorder
from tests.slotworker.engines.test_whatsmeow_send import _png
from tests.slotworker.engines.whatsmeow_harness import WhatsmeowHarness

LINE = "34666123456"
CONTACT = "34611000020"
OTHER = "34611000021"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """(harness, engine): the engine paired with LINE and connected, FakeGo behind it."""
    harness = WhatsmeowHarness(tmp_path, monkeypatch)
    recorder = Recorder()
    engine = harness.engine(tmp_path / "slots" / "SLOT0001", recorder)
    engine.start_pairing()
    harness.scan(LINE, recorder)
    recorder.wait("on_connected")
    yield harness, engine
    engine.stop()


def test_the_harness_shows_what_the_phone_got_in_the_inbox_shape(world):
    """sent_to as simnet's inbox: built from what SendMessage received, changes applied onto their target."""
    harness, engine = world
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
    assert (second["kind"], second["revoked"], second["reply_to"]) == ("voice", True, "3EB0Q")
    assert "media" not in second and "quoted_text" not in second  # a revoke takes the quote's text too
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


def test_a_reaction_on_the_phones_own_message_is_an_entry_of_its_own_until_removed(world):
    harness, engine = world
    question = harness.deliver(CONTACT, LINE, "¿Admiten mascotas?")
    first = engine.react(CONTACT, Reaction(question, "❤️", from_me=False, sender=CONTACT))
    (shown,) = harness.sent_to(CONTACT)
    assert {k: shown[k] for k in ("id", "from", "to", "kind", "reaction")} == {
        "id": first.id, "from": LINE, "to": CONTACT, "kind": "reaction",
        "reaction": {"message_id": question, "emoji": "❤️"}}
    engine.react(CONTACT, Reaction(question, "👍", from_me=False, sender=CONTACT))  # changed: still one
    assert [e["reaction"] for e in harness.sent_to(CONTACT)] == [{"message_id": question, "emoji": "👍"}]
    engine.react(CONTACT, Reaction(question, "", from_me=False, sender=CONTACT))
    assert harness.sent_to(CONTACT) == []


def test_a_key_aimed_at_another_chat_does_not_land(world):
    harness, engine = world
    sent = engine.send(CONTACT, text="Hola")
    elsewhere = whatsmeow_send.jid(OTHER)  # the right id, another chat's key, sent into this chat
    for message in (whatsmeow_send.reaction_message(elsewhere, Reaction(sent.id, "👍", from_me=True)),
                    whatsmeow_send.edit_message(elsewhere, sent.id, "Adiós"),
                    whatsmeow_send.revoke_message(elsewhere, sent.id, whatsmeow_send.jid(LINE)),
                    whatsmeow_send.reaction_message(elsewhere, Reaction("3EB0THEIRS", "👍", from_me=False))):
        engine.client.send_message(whatsmeow_send.jid(CONTACT), message)
    (entry,) = harness.sent_to(CONTACT)
    assert (entry["text"], entry.get("reactions"), entry.get("edited"), entry.get("revoked")) == (
        "Hola", None, None, None)


def test_in_a_lid_group_only_a_key_naming_the_member_by_lid_lands_and_group_reads_are_the_members(world):
    harness, engine = world
    gid = harness.create_group("Pisos", [CONTACT, LINE])
    posted = harness.group_message(CONTACT, gid, "¿Quedamos?")
    engine.react(gid, Reaction(posted, "👍", from_me=False, sender=CONTACT))
    ((shown,),) = [harness.sent_to_group(gid)]
    assert (shown["kind"], shown["group"], shown["reaction"]) == ("reaction", gid, {"message_id": posted,
                                                                                    "emoji": "👍"})
    by_phone = whatsmeow_send.reaction_message(whatsmeow_send.jid(gid), Reaction(posted, "❤", from_me=False),
                                               author=whatsmeow_send.address(CONTACT))
    engine.client.send_message(whatsmeow_send.jid(gid), by_phone)  # accepted by the server, never shown
    assert [e["reaction"]["emoji"] for e in harness.sent_to_group(gid)] == ["👍"]
    engine.mark_read(gid, [posted], sender=CONTACT)
    assert harness.read_by_line(CONTACT) == [posted]
