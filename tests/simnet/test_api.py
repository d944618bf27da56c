"""simnet's HTTP API, phone side and device side, on a real server: every event parses back into
neonize's own class, media downloaded from the media server decrypts to the bytes sent."""

import base64
import hashlib

import pytest
import requests
from google.protobuf import json_format
from neonize.events import (
    CallOfferEv,
    CallTerminateEv,
    ChatPresenceEv,
    GroupInfoEv,
    JoinedGroupEv,
    MessageEv,
    PresenceEv,
    ReceiptEv,
    UndecryptableMessageEv,
)

from controlplane.core import whatsapp_media
from simnet.common import lid_of
from tests.simnet.server import SimServer

LINE, OTHER_LINE, PHONE, THIRD = "34666123456", "34666999888", "34611222333", "34622333444"
CLASSES = {"Message": MessageEv, "Receipt": ReceiptEv, "CallOffer": CallOfferEv, "CallTerminate": CallTerminateEv,
           "ChatPresence": ChatPresenceEv, "Presence": PresenceEv, "JoinedGroup": JoinedGroupEv,
           "GroupInfo": GroupInfoEv, "UndecryptableMessage": UndecryptableMessageEv}


def only(sim: SimServer, device: dict, source: str):
    """The one event held for ``device``, checked to be ``source`` and parsed into neonize's class."""
    (event,) = sim.events(device)
    assert (event["type"], event["source"]) == ("event", source)
    return json_format.ParseDict(event["payload"], CLASSES[source]()), event["payload"]


def drain(sim: SimServer, device: dict) -> None:
    held = sim.events(device)
    if held:
        sim.events(device, after=held[-1]["seq"])


def assert_refused(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["detail"]


# --- messages from a phone ---

def test_a_text_to_a_line_is_a_message_event(sim, device):
    sent = sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "hola"})
    ev, payload = only(sim, device, "Message")
    assert sent["id"] == ev.Info.ID and ev.Message.conversation == "hola"
    assert (ev.Info.MessageSource.Chat.User, ev.Info.MessageSource.Sender.User) == (PHONE, PHONE)
    assert not ev.Info.MessageSource.IsFromMe and ev.Info.Type == "text"
    assert ev.Info.Timestamp > 10**12  # milliseconds, as neonize's MessageInfo


@pytest.mark.parametrize(("mimetype", "field", "kind", "extra"), [
    ("image/jpeg", "imageMessage", "image", {"caption": "El salón"}),
    ("video/mp4", "videoMessage", "video", {"caption": "Vídeo"}),
    ("audio/ogg; codecs=opus", "audioMessage", "audio", {"ptt": True}),
    ("application/pdf", "documentMessage", "document", {"filename": "contrato.pdf", "caption": "Firmado"}),
])
def test_media_is_an_encrypted_reference_that_the_media_server_serves(sim, device, mimetype, field, kind, extra):
    plain = bytes(range(256)) * 300 + b"tail"
    sim.ok("/messages", {"from": PHONE, "to": LINE, "media": {"data": base64.b64encode(plain).decode(),
                                                              "mimetype": mimetype, **extra}})
    ev, payload = only(sim, device, "Message")
    fields = payload["Message"][field]
    assert set(fields) >= {"URL", "directPath", "mediaKey", "fileSHA256", "fileEncSHA256", "fileLength", "mimetype",
                           "mediaKeyTimestamp"}
    assert fields["directPath"].startswith(f"/mms/{kind}/") and fields["URL"] == sim.url + fields["directPath"]
    assert (int(fields["fileLength"]), fields["mimetype"]) == (len(plain), mimetype)
    assert ev.Info.Type == "media"
    if "caption" in extra:
        assert fields["caption"] == extra["caption"]
    if kind == "audio":
        assert fields["PTT"] is True and ev.Info.MediaType == "ptt"
    if kind == "document":
        assert fields["fileName"] == "contrato.pdf"
    encrypted = requests.get(fields["URL"], timeout=5)
    assert encrypted.status_code == 200 and plain not in encrypted.content
    ref = whatsapp_media.media_of(payload["Message"])
    assert whatsapp_media.decrypt(encrypted.content, base64.b64decode(fields["mediaKey"]), ref.kind,
                                  base64.b64decode(fields["fileSHA256"]),
                                  base64.b64decode(fields["fileEncSHA256"])) == plain


@pytest.mark.parametrize("media", [{"data": "not base64!", "mimetype": "image/jpeg"}, {"data": "aGk="},
                                   {"data": "", "mimetype": "image/jpeg"}, "aGk="])
def test_bad_media_is_422_and_reaches_no_device(sim, device, media):
    assert_refused(sim.post("/messages", {"from": PHONE, "to": LINE, "media": media}), 422, "invalid_media")
    assert sim.events(device) == []


def test_forgotten_media_is_gone_from_the_media_server(sim, device):
    sim.ok("/messages", {"from": PHONE, "to": LINE, "media": {"data": "aGk=", "mimetype": "image/png"}})
    _, payload = only(sim, device, "Message")
    url = payload["Message"]["imageMessage"]["URL"]
    assert requests.get(url, timeout=5).status_code == 200
    assert requests.delete(sim.url + "/media", timeout=5).json()["forgotten"] == 1
    assert_refused(requests.get(url, timeout=5), 404, "media_gone")
    assert requests.get(sim.url + "/mms/image/..%2F..%2Fstate.json", timeout=5).status_code == 404
    assert_refused(requests.get(sim.url + "/mms/state/" + "a" * 20, timeout=5), 404, "media_gone")


def test_the_lines_own_phone_writing_reaches_its_devices_as_from_me_and_the_contacts_inbox(sim, device):
    sent = sim.ok("/messages", {"from": LINE, "to": PHONE, "text": "desde el móvil"})
    ev, _ = only(sim, device, "Message")
    source = ev.Info.MessageSource
    assert source.IsFromMe and (source.Chat.User, source.Sender.User) == (PHONE, LINE)
    (entry,) = sim.network.inbox(PHONE)
    assert entry["id"] == sent["id"] and (entry["kind"], entry["status"], entry["text"]) == ("text", "delivered",
                                                                                             "desde el móvil")


def test_reactions_edits_and_revocations_have_whatsapps_shape(sim, device):
    original = sim.ok("/messages", {"from": PHONE, "to": LINE, "text": "hola"})["id"]
    drain(sim, device)

    sim.ok("/messages", {"from": PHONE, "to": LINE, "reaction": {"message_id": original, "emoji": "👍"}})
    ev, _ = only(sim, device, "Message")
    key = ev.Message.reactionMessage.key
    assert (ev.Message.reactionMessage.text, key.ID, key.fromMe, key.remoteJID) == (
        "👍", original, True, f"{LINE}@s.whatsapp.net")
    assert ev.Info.Type == "reaction"
    drain(sim, device)

    sim.ok("/messages", {"from": PHONE, "to": LINE, "edit": {"message_id": original, "text": "hola, ¿qué tal?"}})
    ev, _ = only(sim, device, "Message")
    protocol = ev.Message.protocolMessage
    assert protocol.type == protocol.MESSAGE_EDIT and original == protocol.key.ID
    assert protocol.editedMessage.conversation == "hola, ¿qué tal?"
    assert ev.IsEdit and ev.Info.Edit == "1"
    drain(sim, device)

    sim.ok("/messages", {"from": PHONE, "to": LINE, "revoke": {"message_id": original}})
    ev, payload = only(sim, device, "Message")
    assert payload["Message"]["protocolMessage"]["type"] == "REVOKE" and ev.Info.Edit == "7"


def test_a_phone_sends_locations_contacts_and_replies_as_whatsapp_builds_them(sim, device):
    vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Luis\nEND:VCARD"
    question = sim.ok("/messages", {"from": PHONE, "to": LINE, "location": {"latitude": 41.39, "longitude": 2.17,
                                                                           "address": "Pl. Catalunya"}})["id"]
    ev, _ = only(sim, device, "Message")
    assert (ev.Info.ID, ev.Message.locationMessage.degreesLatitude, ev.Message.locationMessage.address) == (
        question, 41.39, "Pl. Catalunya")
    drain(sim, device)
    sim.ok("/messages", {"from": PHONE, "to": LINE, "contact": {"name": "Luis", "vcard": vcard},
                         "reply_to": question})
    ev, _ = only(sim, device, "Message")
    card = ev.Message.contactMessage
    assert (card.displayName, card.vcard, card.contextInfo.stanzaID) == ("Luis", vcard, question)
    assert card.contextInfo.participant == f"{PHONE}@s.whatsapp.net"  # simnet knows who wrote it
    assert sim.network.inbox(LINE) == []  # a phone's messages are no line's: no inbox


def test_the_lines_own_phone_reacting_edits_and_revoking_change_the_contacts_inbox(sim, device):
    first = sim.ok("/messages", {"from": LINE, "to": PHONE, "text": "uno"})["id"]
    second = sim.ok("/messages", {"from": LINE, "to": PHONE, "text": "dos"})["id"]
    sim.ok("/messages", {"from": LINE, "to": PHONE, "reaction": {"message_id": first, "emoji": "👍"}})
    sim.ok("/messages", {"from": LINE, "to": PHONE, "edit": {"message_id": first, "text": "uno bis"}})
    sim.ok("/messages", {"from": LINE, "to": PHONE, "revoke": {"message_id": second}})
    one, two = sim.network.inbox(PHONE)
    assert (one["id"], one["text"], one["edited"], one["reactions"]) == (first, "uno bis", True, {LINE: "👍"})
    assert (two["id"], two["revoked"], "text" in two) == (second, True, False)


def test_a_phone_edits_only_its_own_messages_of_that_chat(sim, device):
    theirs = sim.ok("/messages", {"from": THIRD, "to": LINE, "text": "otro chat"})["id"]
    for body in ({"edit": {"message_id": theirs, "text": "x"}}, {"revoke": {"message_id": "3EB0NOPE"}},
                 {"reaction": {"message_id": theirs, "emoji": "👍"}}):
        assert_refused(sim.post("/messages", {"from": PHONE, "to": LINE, **body}), 422, "unknown_message")


# --- groups ---

def test_groups_joined_posted_in_renamed_and_changed(sim, device):
    other = sim.link(OTHER_LINE)
    created = sim.ok("/groups", {"name": "Pisos Centro", "members": [PHONE, LINE]})
    group = created["id"].removesuffix("@g.us")
    assert created["id"].startswith("120363") and created["id"].endswith("@g.us")
    joined, _ = only(sim, device, "JoinedGroup")
    info = joined.GroupInfo
    assert (info.JID.User, info.JID.Server, info.GroupName.Name) == (group, "g.us", "Pisos Centro")
    assert (info.OwnerJID.User, info.OwnerJID.Server) == (lid_of(PHONE), "lid")
    assert {(p.JID.User, p.JID.Server, p.PhoneNumber.User, p.LID.User) for p in info.Participants} == {
        (lid_of(n), "lid", n, lid_of(n)) for n in (PHONE, LINE)}
    drain(sim, device)

    posted = sim.ok("/messages", {"from": PHONE, "group": created["id"], "text": "¿Quién enseña el ático?"})
    ev, payload = only(sim, device, "Message")
    source = ev.Info.MessageSource
    assert posted["id"] == ev.Info.ID and source.IsGroup and payload["Info"]["MessageSource"]["AddressingMode"] == "LID"
    assert (source.Chat.User, source.Chat.Server, source.Sender.User, source.Sender.Server) == (
        group, "g.us", lid_of(PHONE), "lid")
    assert "SenderAlt" not in payload["Info"]["MessageSource"]
    lid = sim.device(device, "GET", f"lid/{lid_of(PHONE)}")
    assert lid.json() == {"phone": PHONE}
    assert_refused(sim.device(device, "GET", "lid/123456789012345"), 404, "unknown_lid")
    assert sim.events(other) == []
    assert_refused(sim.post("/messages", {"from": THIRD, "group": group, "text": "x"}), 422, "not_a_member")
    drain(sim, device)

    sim.ok(f"/groups/{created['id']}", {"name": "Pisos Centro y Norte"})
    change, _ = only(sim, device, "GroupInfo")
    assert (change.JID.User, change.Name.Name) == (group, "Pisos Centro y Norte")
    drain(sim, device)

    sim.ok(f"/groups/{group}/members", {"add": [OTHER_LINE], "remove": [PHONE]})
    change, _ = only(sim, device, "GroupInfo")
    assert [j.User for j in change.Join] == [lid_of(OTHER_LINE)] and [j.User for j in change.Leave] == [lid_of(PHONE)]
    joined, _ = only(sim, other, "JoinedGroup")
    assert joined.GroupInfo.GroupName.Name == "Pisos Centro y Norte"
    assert_refused(sim.post("/groups/120363000000000000/members", {"add": [THIRD]}), 404, "unknown_group")
    assert_refused(sim.post(f"/groups/{group}/members", {"add": [LINE]}), 422, "already_member")


# --- what a linked device sends, and what the phone does with it ---

def test_a_device_send_lands_in_the_inbox_and_the_line_gets_delivered_then_read(sim, device):
    sent = sim.device(device, "POST", "send", json={"to": PHONE, "text": "Hola"}).json()
    receipt, _ = only(sim, device, "Receipt")
    assert (receipt.Type, list(receipt.MessageIDs)) == (receipt.DELIVERED, [sent["id"]])
    assert receipt.MessageSource.Chat.User == PHONE and receipt.Timestamp < 10**11  # seconds
    (entry,) = sim.network.inbox(PHONE)
    assert {k: entry[k] for k in ("id", "from", "to", "text", "kind", "status")} == {
        "id": sent["id"], "from": LINE, "to": PHONE, "text": "Hola", "kind": "text", "status": "delivered"}
    drain(sim, device)

    sim.ok(f"/phones/{PHONE}/read", {"line": LINE, "ids": [sent["id"]]})
    receipt, _ = only(sim, device, "Receipt")
    assert (receipt.Type, list(receipt.MessageIDs)) == (receipt.READ, [sent["id"]])
    assert sim.network.inbox(PHONE)[0]["status"] == "read"
    drain(sim, device)
    sim.ok(f"/phones/{PHONE}/read", {"line": LINE, "ids": [sent["id"]], "type": "played"})
    assert only(sim, device, "Receipt")[0].Type == ReceiptEv.PLAYED
    assert_refused(sim.post(f"/phones/{PHONE}/read", {"line": LINE, "ids": ["3EB0OTHER"]}), 422, "unknown_message")
    assert_refused(sim.post(f"/phones/{THIRD}/read", {"line": LINE, "ids": [sent["id"]]}), 422, "unknown_message")


def test_a_device_send_of_voice_media_shows_as_voice_in_the_inbox(sim, device):
    media = {"data": base64.b64encode(b"OggS...").decode(), "mimetype": "audio/ogg", "ptt": True}
    sim.device(device, "POST", "send", json={"to": PHONE, "media": media})
    (entry,) = sim.network.inbox(PHONE)
    assert (entry["kind"], entry["media"]) == ("voice", {**media, "sha256": hashlib.sha256(b"OggS...").hexdigest()})


def test_calls_ring_and_end(sim, device):
    call_id = sim.ok(f"/phones/{PHONE}/call", {"line": LINE})["call_id"]
    offer, _ = only(sim, device, "CallOffer")
    meta = offer.basicCallMeta
    assert (meta.callID, getattr(meta, "from").User, meta.callCreator.User) == (call_id, PHONE, PHONE)
    assert offer.callRemoteMeta.remotePlatform
    drain(sim, device)
    sim.ok(f"/phones/{PHONE}/hangup", {"line": LINE, "call_id": call_id})
    ended, _ = only(sim, device, "CallTerminate")
    assert (ended.basicCallMeta.callID, ended.reason) == (call_id, "timeout")
    assert_refused(sim.post(f"/phones/{PHONE}/hangup", {"line": LINE, "call_id": call_id}), 404, "unknown_call")


@pytest.mark.parametrize(("state", "expected", "media"), [("composing", "COMPOSING", None),
                                                          ("paused", "PAUSED", None),
                                                          ("recording", "COMPOSING", "AUDIO")])
def test_typing_is_a_chat_presence(sim, device, state, expected, media):
    sim.ok(f"/phones/{PHONE}/typing", {"line": LINE, "state": state})
    ev, payload = only(sim, device, "ChatPresence")
    assert (payload["State"], payload.get("Media")) == (expected, media)
    assert ev.MessageSource.Chat.User == PHONE


def test_presence_and_undecryptable_messages(sim, device):
    sim.ok(f"/phones/{PHONE}/presence", {"line": LINE, "available": False})
    ev, _ = only(sim, device, "Presence")
    assert (ev.From.User, ev.Unavailable) == (PHONE, True) and ev.LastSeen > 0
    drain(sim, device)
    sent = sim.ok(f"/phones/{PHONE}/undecryptable", {"line": LINE})
    ev, _ = only(sim, device, "UndecryptableMessage")
    assert (ev.Info.ID, ev.Info.MessageSource.Sender.User) == (sent["id"], PHONE)
    assert ev.DecryptFailMode == ev.DECRYPT_FAIL_SHOW


@pytest.mark.parametrize(("path", "body", "code"), [
    (f"/phones/{PHONE}/typing", {"line": LINE, "state": "dancing"}, "invalid_state"),
    (f"/phones/{PHONE}/presence", {"line": LINE, "available": "yes"}, "invalid_available"),
    (f"/phones/{PHONE}/call", {"line": "+34"}, "invalid_number"),
    (f"/phones/{PHONE}/read", {"line": LINE, "ids": "x", "type": "seen"}, "invalid_type"),
    ("/messages", {"from": PHONE, "to": LINE}, "invalid_text"),
    ("/groups", {"name": "", "members": [PHONE]}, "invalid_name"),
    ("/phones", {"number": "12"}, "invalid_number"),
])
def test_bad_phone_calls_are_422(sim, device, path, body, code):
    assert_refused(sim.post(path, body), 422, code)
    assert sim.events(device) == []


def test_phones_join_and_are_known_with_a_stable_lid(sim):
    assert_refused(requests.get(f"{sim.url}/phones/{PHONE}", timeout=5), 404, "unknown_phone")
    joined = sim.ok("/phones", {"number": PHONE})
    assert joined == {"number": PHONE, "lid": lid_of(PHONE)} and len(joined["lid"]) == 15
    assert requests.get(f"{sim.url}/phones/{PHONE}", timeout=5).json() == joined
    sim.ok("/messages", {"from": THIRD, "to": LINE, "text": "hola"})
    assert requests.get(f"{sim.url}/phones/{THIRD}", timeout=5).status_code == 200
    assert lid_of(PHONE) != lid_of(THIRD) and lid_of(PHONE) == str(int(lid_of(PHONE)))
    assert hashlib.sha256(PHONE.encode()).hexdigest()  # derived from the number, stable across restarts


def test_bad_requests_are_json_4xx_never_500(sim, device):
    response = requests.post(f"{sim.url}/messages", data="{", headers={"Content-Type": "application/json"},
                             timeout=5)
    assert_refused(response, 400, "invalid_json")
    assert_refused(sim.device(device, "GET", "events", params={"after": "x"}), 400, "invalid_after")
    assert_refused(sim.device(device, "GET", "events", params={"timeout": "nan"}), 400, "invalid_timeout")
    assert requests.get(f"{sim.url}/nowhere", timeout=5).json()["error"] == "not_found"
