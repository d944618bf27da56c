"""What a linked device sends and does in a chat, on a real simnet server: every kind as the phone's
inbox shows it, and as a receiving line's device gets it (parsed back into neonize's MessageEv);
reactions, edits and revocations applied onto their message; groups; reads, typing and exists."""

import base64
import hashlib
import io

import pytest
import requests
from google.protobuf import json_format
from neonize.events import ChatPresenceEv, MessageEv, ReceiptEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ProtocolMessage
from PIL import Image

from simnet.common import lid_of
from simnet.network import Network
from tests.simnet.server import SimServer

LINE, OTHER_LINE, PHONE, THIRD = "34666123456", "34666999888", "34611222333", "34622333444"
VCARD = "BEGIN:VCARD\nVERSION:3.0\nFN:Ana Agente\nTEL;type=CELL;waid=34611000777:+34 611 000 777\nEND:VCARD"


@pytest.fixture
def other(sim):
    """A second enrolled line: what it receives are the Message events of a real device."""
    return sim.link(OTHER_LINE)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send(sim: SimServer, device: dict, **body) -> dict:
    response = sim.device(device, "POST", "send", json=body)
    assert response.status_code == 200, response.text
    sent = response.json()
    assert set(sent) == {"id", "timestamp"} and sent["timestamp"] > 1_700_000_000
    return sent


def refused(response: requests.Response, code: str, status: int = 422) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["detail"]


def entry(sim: SimServer, phone: str, message_id: str) -> dict:
    (found,) = [e for e in sim.network.inbox(phone) if e["id"] == message_id]
    return found


def messages(sim: SimServer, device: dict) -> list[tuple[MessageEv, dict]]:
    """Every Message event held for the device, parsed into neonize's class (losslessly), then acknowledged."""
    held = sim.events(device)
    if held:
        sim.events(device, after=held[-1]["seq"])
    got = []
    for event in held:
        if event["source"] == "Message":
            parsed = json_format.ParseDict(event["payload"], MessageEv())
            assert json_format.MessageToDict(parsed, preserving_proto_field_name=True) == event["payload"]
            got.append((parsed, event["payload"]))
    return got


def only_message(sim: SimServer, device: dict) -> MessageEv:
    (got,) = messages(sim, device)
    return got[0]


# --- every kind, as the phone's inbox shows it ---

def test_text_location_and_contact_in_the_inbox(sim, device):
    text = send(sim, device, to=PHONE, text="Hola")
    pin = send(sim, device, to=PHONE, location={"latitude": 40.4168, "longitude": -3.7038, "name": "Ático en Sol",
                                                 "address": "Puerta del Sol 1"})
    bare = send(sim, device, to=PHONE, location={"latitude": 40, "longitude": -3})
    card = send(sim, device, to=PHONE, contact={"name": "Ana Agente", "vcard": VCARD})
    assert entry(sim, PHONE, text["id"]) == {"id": text["id"], "from": LINE, "to": PHONE, "kind": "text",
                                             "timestamp": text["timestamp"], "status": "delivered", "text": "Hola"}
    shown = entry(sim, PHONE, pin["id"])
    assert (shown["kind"], shown["location"]) == ("location", {"latitude": 40.4168, "longitude": -3.7038,
                                                               "name": "Ático en Sol", "address": "Puerta del Sol 1"})
    assert entry(sim, PHONE, bare["id"])["location"] == {"latitude": 40.0, "longitude": -3.0}
    shown = entry(sim, PHONE, card["id"])
    assert (shown["kind"], shown["contact"]) == ("contact", {"name": "Ana Agente", "vcard": VCARD})
    assert [e["id"] for e in sim.network.inbox(PHONE)] == [text["id"], pin["id"], bare["id"], card["id"]]


@pytest.mark.parametrize(("mimetype", "extra", "kind"), [
    ("image/png", {"caption": "El salón"}, "image"),
    ("video/mp4", {"caption": "La visita", "seconds": 12, "thumbnail": b64(b"\xff\xd8jpeg")}, "video"),
    ("audio/mpeg", {"seconds": 7}, "audio"),
    ("audio/ogg; codecs=opus", {"ptt": True, "seconds": 3}, "voice"),
    ("application/pdf", {"filename": "contrato.pdf", "caption": "Firmado"}, "document"),
])
def test_each_media_kind_in_the_inbox(sim, device, other, mimetype, extra, kind):
    data = png() if kind == "image" else b"\x00file bytes" * 50
    sent = send(sim, device, to=PHONE, media={"data": b64(data), "mimetype": mimetype, **extra})
    shown = entry(sim, PHONE, sent["id"])
    expected = {"data": b64(data), "mimetype": mimetype, "ptt": kind == "voice",
                "sha256": hashlib.sha256(data).hexdigest(), **{k: v for k, v in extra.items() if k != "thumbnail"}}
    assert (shown["kind"], shown["media"]) == (kind, expected)

    # a line receiving it gets the media message, seconds and thumbnail included
    sent = send(sim, device, to=OTHER_LINE, media={"data": b64(data), "mimetype": mimetype, **extra})
    ev = only_message(sim, other)
    field = {"image": "imageMessage", "video": "videoMessage", "audio": "audioMessage", "voice": "audioMessage",
             "document": "documentMessage"}[kind]
    fields = getattr(ev.Message, field)
    assert sent["id"] == ev.Info.ID and fields.mimetype == mimetype and fields.fileLength == len(data)
    if kind in ("video", "audio", "voice"):
        assert fields.seconds == extra["seconds"]
    if kind == "video":
        assert fields.JPEGThumbnail == b"\xff\xd8jpeg"
    if field == "audioMessage":
        assert fields.PTT is (kind == "voice") and ev.Info.MediaType == ("ptt" if kind == "voice" else "audio")


def test_an_image_that_does_not_decode_is_invalid_media_from_a_device(sim, device):
    refused(sim.device(device, "POST", "send", json={"to": PHONE, "media": {"data": b64(b"not an image"),
                                                                            "mimetype": "image/jpeg"}}),
            "invalid_media")
    assert sim.network.inbox(PHONE) == []
    # a phone's client sends what it sends
    sim.ok("/messages", {"from": PHONE, "to": LINE, "media": {"data": b64(b"x"), "mimetype": "image/jpeg"}})


@pytest.mark.parametrize(("body", "code"), [
    ({"location": {"latitude": 91, "longitude": 0}}, "invalid_location"),
    ({"location": {"latitude": "40", "longitude": 0}}, "invalid_location"),
    ({"location": {"latitude": 40, "longitude": True}}, "invalid_location"),
    ({"location": {"latitude": 40, "longitude": 3, "name": 7}}, "invalid_location"),
    ({"contact": {"name": "Ana"}}, "invalid_contact"),
    ({"contact": {"name": "", "vcard": VCARD}}, "invalid_contact"),
    ({"contact": {"name": "Ana", "vcard": "hola"}}, "invalid_contact"),
    ({"text": "x", "location": {"latitude": 1, "longitude": 2}}, "invalid_text"),
    ({"text": "x", "reply_to": 5}, "invalid_reply"),
    ({"text": "x", "quoted": {"conversation": "y"}}, "invalid_reply"),
    ({"text": "x", "reply_to": "3EB0AA", "quoted": {"conversation": 5, "nope": {"x": 1}}}, "invalid_quoted"),
    ({"media": {"data": "aGk=", "mimetype": "audio/ogg", "ptt": "yes"}}, "invalid_media"),
    ({"media": {"data": "aGk=", "mimetype": "audio/ogg", "seconds": -1}}, "invalid_media"),
    ({"media": {"data": "aGk=", "mimetype": "video/mp4", "thumbnail": "not base64!"}}, "invalid_media"),
    ({"reaction": {"message_id": "3EB0NOPE", "emoji": "👍", "from_me": True}}, "unknown_message"),
    ({"edit": {"message_id": "3EB0NOPE", "text": "x"}}, "unknown_message"),
])
def test_bad_device_sends_are_422_and_reach_nobody(sim, device, other, body, code):
    refused(sim.device(device, "POST", "send", json={"to": OTHER_LINE, **body}), code)
    assert sim.network.inbox(OTHER_LINE) == [] and messages(sim, other) == []


# --- what a receiving line's device gets ---

def test_a_line_receives_locations_contacts_and_replies_as_whatsapp_builds_them(sim, device, other):
    pin = send(sim, device, to=OTHER_LINE, location={"latitude": 40.5, "longitude": -3.5, "name": "Piso"})
    ev = only_message(sim, other)
    source = ev.Info.MessageSource
    assert pin["id"] == ev.Info.ID and (source.Chat.User, source.Sender.User, source.IsFromMe) == (LINE, LINE, False)
    location = ev.Message.locationMessage
    assert (location.degreesLatitude, location.degreesLongitude, location.name) == (40.5, -3.5, "Piso")

    send(sim, device, to=OTHER_LINE, contact={"name": "Ana Agente", "vcard": VCARD})
    card = only_message(sim, other).Message.contactMessage
    assert (card.displayName, card.vcard) == ("Ana Agente", VCARD)

    question = sim.ok("/messages", {"from": OTHER_LINE, "to": LINE, "text": "¿Tiene garaje?"})["id"]
    (asked, asked_payload), = messages(sim, device)
    answer = send(sim, device, to=OTHER_LINE, text="Sí, dos plazas", reply_to=question,
                  quoted=asked_payload["Message"], quoted_sender=OTHER_LINE)
    messages(sim, other)  # (its own phone's question, seen as from-me)
    shown = entry(sim, OTHER_LINE, answer["id"])
    assert (shown["text"], shown["reply_to"], shown["quoted_text"]) == ("Sí, dos plazas", question, "¿Tiene garaje?")

    # without the quoted message: the id and the author still (simnet knows who wrote it)
    send(sim, device, to=OTHER_LINE, text="¿Le va bien el jueves?", reply_to=question)
    ev = only_message(sim, other)
    context = ev.Message.extendedTextMessage.contextInfo
    assert ev.Message.extendedTextMessage.text == "¿Le va bien el jueves?" and not ev.Message.conversation
    assert (context.stanzaID, context.participant) == (question, f"{OTHER_LINE}@s.whatsapp.net")
    assert not context.HasField("quotedMessage")

    send(sim, device, to=OTHER_LINE, text="Sí, dos plazas", reply_to=question, quoted=asked_payload["Message"])
    context = only_message(sim, other).Message.extendedTextMessage.contextInfo
    assert context.quotedMessage.conversation == "¿Tiene garaje?"

    photo = send(sim, device, to=OTHER_LINE, media={"data": b64(png()), "mimetype": "image/png"}, reply_to=question)
    ev = only_message(sim, other)
    assert photo["id"] == ev.Info.ID and ev.Message.imageMessage.contextInfo.stanzaID == question
    assert entry(sim, OTHER_LINE, photo["id"])["reply_to"] == question
    send(sim, device, to=OTHER_LINE, location={"latitude": 1, "longitude": 2}, reply_to=question)
    assert only_message(sim, other).Message.locationMessage.contextInfo.stanzaID == question


def test_reactions_edits_and_revocations_from_a_device_reach_a_line_and_change_its_inbox(sim, device, other):
    first = send(sim, device, to=OTHER_LINE, text="Le envío las fotos")
    second = send(sim, device, to=OTHER_LINE, text="El precio es 1.000 €")
    messages(sim, other)

    send(sim, device, to=OTHER_LINE, reaction={"message_id": first["id"], "emoji": "👍", "from_me": True})
    reaction = only_message(sim, other).Message.reactionMessage
    assert (reaction.text, reaction.key.ID, reaction.key.fromMe) == ("👍", first["id"], True)
    assert reaction.key.remoteJID == f"{OTHER_LINE}@s.whatsapp.net"
    assert entry(sim, OTHER_LINE, first["id"])["reactions"] == {LINE: "👍"}
    send(sim, device, to=OTHER_LINE, reaction={"message_id": first["id"], "emoji": "❤️", "from_me": True})
    assert entry(sim, OTHER_LINE, first["id"])["reactions"] == {LINE: "❤️"}
    send(sim, device, to=OTHER_LINE, reaction={"message_id": first["id"], "emoji": "", "from_me": True})
    assert "reactions" not in entry(sim, OTHER_LINE, first["id"])
    messages(sim, other)

    send(sim, device, to=OTHER_LINE, edit={"message_id": first["id"], "text": "Le envío las fotos mañana"})
    ev = only_message(sim, other)
    protocol = ev.Message.protocolMessage
    assert (protocol.type, protocol.key.ID, protocol.editedMessage.conversation) == (
        ProtocolMessage.MESSAGE_EDIT, first["id"], "Le envío las fotos mañana")
    assert ev.IsEdit and ev.Info.Edit == "1"
    edited = entry(sim, OTHER_LINE, first["id"])
    assert (edited["text"], edited["edited"]) == ("Le envío las fotos mañana", True)

    send(sim, device, to=OTHER_LINE, revoke={"message_id": second["id"]})
    ev = only_message(sim, other)
    assert (ev.Message.protocolMessage.type, ev.Message.protocolMessage.key.ID) == (ProtocolMessage.REVOKE,
                                                                                    second["id"])
    assert ev.Info.Edit == "7"
    revoked = entry(sim, OTHER_LINE, second["id"])
    assert revoked["revoked"] is True and "text" not in revoked and "1.000" not in str(revoked)
    assert len(sim.network.inbox(OTHER_LINE)) == 2  # applied onto their messages, not entries of their own


def test_a_reaction_on_the_phones_own_message_is_shown_as_a_reaction_entry(sim, device):
    question = sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "¿Sigue libre?"})["id"]
    reacted = send(sim, device, to=PHONE, reaction={"message_id": question, "emoji": "👍", "from_me": False})
    send(sim, device, to=PHONE, reaction={"message_id": question, "emoji": "🙏", "from_me": False,
                                                       "sender": PHONE})
    (shown,) = sim.network.inbox(PHONE)
    assert (shown["id"], shown["kind"], shown["reaction"]) == (reacted["id"], "reaction",
                                                               {"message_id": question, "emoji": "🙏"})
    # and the phone's own reaction on the line's message is on that message
    answer = send(sim, device, to=PHONE, text="Sí")
    sim.ok("/messages", {"from": PHONE, "to": LINE, "reaction": {"message_id": answer["id"], "emoji": "😀"}})
    assert entry(sim, PHONE, answer["id"])["reactions"] == {PHONE: "😀"}


def test_a_device_edits_and_revokes_only_its_own_messages(sim, device):
    theirs = sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "hola"})["id"]
    for body in ({"edit": {"message_id": theirs, "text": "x"}}, {"revoke": {"message_id": theirs}}):
        refused(sim.device(device, "POST", "send", json={"to": PHONE, **body}), "unknown_message")


def test_the_sender_gets_a_delivered_receipt_for_every_kind(sim, device):
    sent = send(sim, device, to=PHONE, location={"latitude": 1, "longitude": 2})
    (event,) = sim.events(device)
    receipt = json_format.ParseDict(event["payload"], ReceiptEv())
    assert (receipt.Type, list(receipt.MessageIDs), receipt.MessageSource.Chat.User) == (
        ReceiptEv.DELIVERED, [sent["id"]], PHONE)


# --- groups ---

def test_a_device_posts_in_a_group_it_is_in_and_is_refused_elsewhere(sim, device, other):
    gid = sim.ok("/groups", {"name": "Visitas", "members": [LINE, PHONE, OTHER_LINE]})["id"]
    group = gid.removesuffix("@g.us")
    messages(sim, other)
    sim.events(device, after=sim.events(device)[-1]["seq"])
    sent = send(sim, device, to=gid, text="Hola a todos")
    ev = only_message(sim, other)
    source = ev.Info.MessageSource
    assert (source.Chat.User, source.Chat.Server, source.Sender.User, source.Sender.Server, source.IsGroup) == (
        group, "g.us", lid_of(LINE), "lid", True)
    assert ev.Message.conversation == "Hola a todos"
    receipts = [json_format.ParseDict(e["payload"], ReceiptEv()) for e in sim.events(device)]
    assert sorted(r.MessageSource.Sender.User for r in receipts) == sorted([lid_of(PHONE), lid_of(OTHER_LINE)])
    assert all(r.MessageSource.Chat.User == group and r.MessageIDs == [sent["id"]] for r in receipts)

    # the bare id works too
    send(sim, device, to=group, reaction={"message_id": sent["id"], "emoji": "👋", "from_me": True})
    reaction = only_message(sim, other).Message.reactionMessage
    assert (reaction.key.remoteJID, reaction.key.fromMe) == (gid, True)
    (shown,) = requests.get(f"{sim.url}/groups/{gid}/inbox", timeout=5).json()
    assert shown == {"id": sent["id"], "from": LINE, "to": gid, "group": gid, "timestamp": sent["timestamp"],
                     "status": "delivered", "kind": "text", "text": "Hola a todos", "reactions": {LINE: "👋"}}
    assert sim.network.inbox(PHONE) == [] and sim.network.inbox(OTHER_LINE) == []

    elsewhere = sim.ok("/groups", {"name": "Otra", "members": [PHONE, THIRD]})["id"]
    refused(sim.device(device, "POST", "send", json={"to": elsewhere, "text": "¿Hola?"}), "not_in_group")
    refused(sim.device(device, "POST", "send", json={"to": "120363000000000000@g.us", "text": "x"}), "not_in_group")
    assert requests.get(f"{sim.url}/groups/{elsewhere}/inbox", timeout=5).json() == []
    refused(requests.get(f"{sim.url}/groups/120363000000000000/inbox", timeout=5), "unknown_group", 404)


# --- reading, typing, exists ---

def test_a_device_marks_read_and_the_phone_sees_it(sim, device, other):
    ids = [sim.ok("/messages", {"from": PHONE, "to": LINE, "text": t})["id"] for t in ("Hola", "¿Sigue libre?")]
    response = sim.device(device, "POST", "read", json={"chat": PHONE, "ids": ids})
    assert response.status_code == 200, response.text
    sim.device(device, "POST", "read", json={"chat": PHONE, "ids": ids[:1]})  # twice is once
    assert requests.get(f"{sim.url}/phones/{PHONE}/read-by-line", timeout=5).json() == ids
    assert requests.get(f"{sim.url}/phones/{THIRD}/read-by-line", timeout=5).json() == []

    # a line that wrote gets the blue ticks as a Receipt READ
    written = sim.ok("/messages", {"from": OTHER_LINE, "to": LINE, "text": "hola"})["id"]
    messages(sim, other)
    sim.device(device, "POST", "read", json={"chat": OTHER_LINE, "ids": [written]})
    (event,) = sim.events(other)
    receipt = json_format.ParseDict(event["payload"], ReceiptEv())
    assert (receipt.Type, list(receipt.MessageIDs), receipt.MessageSource.Chat.User) == (
        ReceiptEv.READ, [written], LINE)

    gid = sim.ok("/groups", {"name": "Visitas", "members": [LINE, PHONE]})["id"]
    posted = sim.ok("/messages", {"from": PHONE, "group": gid, "text": "hola"})["id"]
    refused(sim.device(device, "POST", "read", json={"chat": gid, "ids": [posted]}), "invalid_sender")
    assert sim.device(device, "POST", "read", json={"chat": gid, "ids": [posted], "sender": PHONE}).status_code == 200
    assert requests.get(f"{sim.url}/phones/{PHONE}/read-by-line", timeout=5).json() == [*ids, posted]
    refused(sim.device(device, "POST", "read", json={"chat": PHONE, "ids": []}), "invalid_ids")
    refused(sim.device(device, "POST", "read", json={"chat": "+34", "ids": ["x"]}), "invalid_number")


def test_a_phone_reading_marks_the_inbox_read(sim, device):
    sent = send(sim, device, to=PHONE, contact={"name": "Ana", "vcard": VCARD})
    sim.ok(f"/phones/{PHONE}/read", {"line": LINE, "ids": [sent["id"]]})
    assert entry(sim, PHONE, sent["id"])["status"] == "read"


@pytest.mark.parametrize("state", ["composing", "recording", "paused"])
def test_a_device_shows_itself_typing_in_a_chat(sim, device, other, state):
    assert sim.device(device, "POST", "presence", json={"to": PHONE, "state": state}).status_code == 200
    assert requests.get(f"{sim.url}/phones/{PHONE}/chat-state", timeout=5).json() == {LINE: state}
    connect = sim.device(other, "POST", "connect", json={"sources": ["ChatPresence"]})
    assert connect.status_code == 200
    sim.device(device, "POST", "presence", json={"to": OTHER_LINE, "state": state})
    (event,) = sim.events(other)
    presence = json_format.ParseDict(event["payload"], ChatPresenceEv())
    assert presence.MessageSource.Chat.User == LINE
    assert (event["payload"]["State"], event["payload"].get("Media")) == (
        {"composing": ("COMPOSING", None), "recording": ("COMPOSING", "AUDIO"), "paused": ("PAUSED", None)}[state])


def test_the_latest_presence_wins_and_bad_ones_are_422(sim, device):
    sim.device(device, "POST", "presence", json={"to": PHONE, "state": "composing"})
    sim.device(device, "POST", "presence", json={"to": PHONE, "state": "paused"})
    assert sim.network.chat_state(PHONE) == {LINE: "paused"}
    refused(sim.device(device, "POST", "presence", json={"to": PHONE, "state": "dancing"}), "invalid_state")
    refused(sim.device(device, "POST", "presence", json={"to": "120363000000000000@g.us", "state": "paused"}),
            "not_in_group")
    gid = sim.ok("/groups", {"name": "Visitas", "members": [LINE, PHONE]})["id"]
    sim.device(device, "POST", "presence", json={"to": gid, "state": "recording"})
    assert requests.get(f"{sim.url}/groups/{gid}/chat-state", timeout=5).json() == {LINE: "recording"}


def test_exists_is_true_only_for_numbers_simnet_knows(sim, device):
    def exists(number):
        response = sim.device(device, "GET", f"exists/{number}")
        assert response.status_code == 200, response.text
        return response.json()

    assert exists(PHONE) == {"number": PHONE, "exists": False, "jid": None}
    sim.ok("/phones", {"number": PHONE})
    assert exists(PHONE) == {"number": PHONE, "exists": True, "jid": f"{PHONE}@s.whatsapp.net"}
    sim.ok("/messages", {"from": THIRD, "to": LINE, "text": "hola"})  # a phone that wrote is on WhatsApp
    assert exists(THIRD)["exists"] is True and exists(LINE)["exists"] is True
    assert requests.get(f"{sim.url}/exists/{THIRD}", timeout=5).json() == {"number": THIRD, "exists": True}
    refused(sim.device(device, "GET", "exists/+34611"), "invalid_number")


def test_the_new_device_calls_need_the_devices_secret(sim, device):
    stranger = {**device, "secret": "wrong"}
    for method, action, body in (("POST", "read", {"chat": PHONE, "ids": ["x"]}),
                                 ("POST", "presence", {"to": PHONE, "state": "paused"}),
                                 ("GET", f"exists/{PHONE}", None), ("POST", "send", {"to": PHONE, "text": "x"})):
        refused(sim.device(stranger, method, action, json=body), "logged_out", 401)
    assert sim.network.chat_state(PHONE) == {} and sim.network.read_by_line(PHONE) == []


def test_reads_typing_and_group_inboxes_survive_a_restart(sim, device, tmp_path):
    gid = sim.ok("/groups", {"name": "Visitas", "members": [LINE, PHONE]})["id"]
    sent = send(sim, device, to=gid, text="Hola a todos")
    sim.device(device, "POST", "read", json={"chat": PHONE, "ids": ["3EB0AA"]})
    sim.device(device, "POST", "presence", json={"to": PHONE, "state": "composing"})
    sim.network.flush()
    again = Network(tmp_path / "simnet")
    assert [e["id"] for e in again.group_inbox(gid)] == [sent["id"]]
    assert (again.read_by_line(PHONE), again.chat_state(PHONE)) == (["3EB0AA"], {LINE: "composing"})


# --- keys and quotes checked against who wrote the message ---

def test_a_device_reaction_whose_key_names_no_message_of_the_chat_is_unknown_message(sim, device, other):
    mine = send(sim, device, to=OTHER_LINE, text="Le envío las fotos")["id"]
    theirs = sim.ok("/messages", {"from": OTHER_LINE, "to": LINE, "text": "Gracias"})["id"]
    messages(sim, other)
    for key in ({"message_id": mine, "from_me": False}, {"message_id": theirs, "from_me": True},
                {"message_id": theirs, "from_me": False, "sender": THIRD},
                {"message_id": mine, "from_me": True, "sender": OTHER_LINE}):
        refused(sim.device(device, "POST", "send", json={"to": OTHER_LINE, "reaction": {**key, "emoji": "👍"}}),
                "unknown_message")
    refused(sim.device(device, "POST", "send", json={"to": OTHER_LINE,
                                                     "reaction": {"message_id": mine, "emoji": "👍"}}),
            "invalid_reaction")
    assert messages(sim, other) == [] and all("reactions" not in e for e in sim.network.inbox(OTHER_LINE))
    send(sim, device, to=OTHER_LINE, reaction={"message_id": theirs, "emoji": "👍", "from_me": False,
                                               "sender": OTHER_LINE})
    reaction = only_message(sim, other).Message.reactionMessage
    assert (reaction.key.ID, reaction.key.fromMe) == (theirs, False)

    gid = sim.ok("/groups", {"name": "Visitas", "members": [LINE, PHONE, OTHER_LINE]})["id"]
    posted = sim.ok("/messages", {"from": PHONE, "group": gid, "text": "hola"})["id"]
    for key in ({"from_me": False}, {"from_me": False, "sender": OTHER_LINE}, {"from_me": True}):
        refused(sim.device(device, "POST", "send", json={"to": gid, "reaction": {"message_id": posted, "emoji": "👋",
                                                                                 **key}}), "unknown_message")
    messages(sim, other)
    send(sim, device, to=gid, reaction={"message_id": posted, "emoji": "👋", "from_me": False, "sender": PHONE})
    key = only_message(sim, other).Message.reactionMessage.key
    assert (key.ID, key.fromMe, key.participant) == (posted, False, f"{lid_of(PHONE)}@lid")


def test_a_device_reply_naming_the_wrong_author_is_unknown_message(sim, device, other):
    mine = send(sim, device, to=OTHER_LINE, text="Tiene garaje")["id"]
    theirs = sim.ok("/messages", {"from": OTHER_LINE, "to": LINE, "text": "¿Y trastero?"})["id"]
    messages(sim, other)
    for reply in ({"reply_to": mine}, {"reply_to": mine, "quoted_sender": OTHER_LINE},
                  {"reply_to": theirs, "quoted_sender": LINE}):
        refused(sim.device(device, "POST", "send", json={"to": OTHER_LINE, "text": "Sí", **reply}), "unknown_message")
    assert messages(sim, other) == [] and [e["id"] for e in sim.network.inbox(OTHER_LINE)] == [mine]
    send(sim, device, to=OTHER_LINE, text="Sí", reply_to=mine, quoted_sender=LINE)
    assert only_message(sim, other).Message.extendedTextMessage.contextInfo.participant == f"{LINE}@s.whatsapp.net"
    send(sim, device, to=OTHER_LINE, text="Sí", reply_to="3EB0ELSEWHERE")  # a message simnet never saw: as named
    context = only_message(sim, other).Message.extendedTextMessage.contextInfo
    assert (context.stanzaID, context.participant) == ("3EB0ELSEWHERE", f"{OTHER_LINE}@s.whatsapp.net")


def test_a_group_reply_with_no_known_author_names_nobody(sim, device, other):
    gid = sim.ok("/groups", {"name": "Visitas", "members": [LINE, PHONE, OTHER_LINE]})["id"]
    posted = sim.ok("/messages", {"from": PHONE, "group": gid, "text": "¿A qué hora?"})["id"]
    messages(sim, other)
    for reply_to in (posted, "3EB0ELSEWHERE"):  # as whatsmeow: no quoted_sender in a group, no participant
        send(sim, device, to=gid, text="A las cinco", reply_to=reply_to)
        context = only_message(sim, other).Message.extendedTextMessage.contextInfo
        assert context.stanzaID == reply_to and not context.participant
    send(sim, device, to=gid, text="A las cinco", reply_to=posted, quoted_sender=PHONE)
    assert only_message(sim, other).Message.extendedTextMessage.contextInfo.participant == f"{lid_of(PHONE)}@lid"
    # a phone quoting a message simnet never saw names nobody either, never itself
    sim.ok("/messages", {"from": PHONE, "group": gid, "text": "Vale", "reply_to": "3EB0ELSEWHERE"})
    assert not only_message(sim, other).Message.extendedTextMessage.contextInfo.participant


# --- Info.Type and Info.MediaType as whatsmeow's stanza carries them ---

def test_each_kind_carries_whatsmeows_type_and_media_type(sim, device, other):
    sent = {}
    for kind, body in (("text", {"text": "Hola"}),
                       ("reply", {"text": "Sí", "reply_to": "3EB0ELSEWHERE"}),
                       ("image", {"media": {"data": b64(png()), "mimetype": "image/png"}}),
                       ("video", {"media": {"data": b64(b"\x00video"), "mimetype": "video/mp4"}}),
                       ("audio", {"media": {"data": b64(b"\x00audio"), "mimetype": "audio/mpeg"}}),
                       ("voice", {"media": {"data": b64(b"OggS"), "mimetype": "audio/ogg; codecs=opus", "ptt": True}}),
                       ("document", {"media": {"data": b64(b"%PDF"), "mimetype": "application/pdf"}}),
                       ("location", {"location": {"latitude": 40, "longitude": -3}}),
                       ("contact", {"contact": {"name": "Ana", "vcard": VCARD}})):
        sent[kind] = send(sim, device, to=OTHER_LINE, **body)["id"]
    sent["reaction"] = send(sim, device, to=OTHER_LINE, reaction={"message_id": sent["text"], "emoji": "👍",
                                                                   "from_me": True})["id"]
    sent["edit"] = send(sim, device, to=OTHER_LINE, edit={"message_id": sent["text"], "text": "Hola de nuevo"})["id"]
    sent["revoke"] = send(sim, device, to=OTHER_LINE, revoke={"message_id": sent["image"]})["id"]
    got = {ev.Info.ID: (ev.Info.Type, ev.Info.MediaType) for ev, _ in messages(sim, other)}
    # whatsmeow's send.go getTypeFromMessage / getMediaTypeFromMessage (it names no media type for a location)
    assert {kind: got[message_id] for kind, message_id in sent.items()} == {
        "text": ("text", ""), "reply": ("text", ""), "image": ("media", "image"), "video": ("media", "video"),
        "audio": ("media", "audio"), "voice": ("media", "ptt"), "document": ("media", "document"),
        "location": ("text", ""), "contact": ("media", "vcard"), "reaction": ("reaction", ""),
        "edit": ("text", ""), "revoke": ("text", "")}


def test_a_truncated_jpeg_is_invalid_media_from_a_device(sim, device):
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, "JPEG")
    whole = buffer.getvalue()
    refused(sim.device(device, "POST", "send", json={"to": PHONE, "media": {"data": b64(whole[:len(whole) // 2]),
                                                                            "mimetype": "image/jpeg"}}),
            "invalid_media")
    assert sim.network.inbox(PHONE) == []
    assert entry(sim, PHONE, send(sim, device, to=PHONE, media={"data": b64(whole), "mimetype": "image/jpeg"})["id"])
