"""The envelope's routing fields, from whatsmeow's own events (neonize's protobuf classes as JSON)."""

import pytest
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
from neonize.proto.Neonize_pb2 import JID

from controlplane.core.event_types import SOURCES
from controlplane.messaging import envelope

LINE = "34666123456"
PHONE = "34611122233"
LID = "201234567890123"


def pn(user=PHONE):
    return JID(User=user, Server="s.whatsapp.net", RawAgent=0, Device=0, Integrator=0, IsEmpty=False)


def lid(user=LID):
    return JID(User=user, Server="lid", RawAgent=0, Device=0, Integrator=0, IsEmpty=False)


def group():
    return JID(User="120363012345678901", Server="g.us", RawAgent=0, Device=0, Integrator=0, IsEmpty=False)


def as_json(event) -> dict:
    return json_format.MessageToDict(event, preserving_proto_field_name=True)


def message(sender, chat=None, sender_alt=None, from_me=False, recipient_alt=None, message_id="3EB0AA"):
    ev = MessageEv()
    source = ev.Info.MessageSource
    source.Sender.CopyFrom(sender)
    source.Chat.CopyFrom(chat or sender)
    source.IsFromMe = from_me
    if sender_alt:
        source.SenderAlt.CopyFrom(sender_alt)
    if recipient_alt:
        source.RecipientAlt.CopyFrom(recipient_alt)
    ev.Info.ID = message_id
    ev.Message.conversation = "hola"
    return as_json(ev)


def fields(source, payload, resolve=None):
    event = envelope.inbound(source, payload, LINE, resolve)
    return event and event.fields


def test_a_message_from_a_phone_number():
    assert fields("Message", message(pn())) == {
        "event": "Message", "message_id": "3EB0AA", "chat": f"{PHONE}@s.whatsapp.net", "from": PHONE,
        "from_me": False}


def test_a_lid_sender_with_its_phone_alongside_is_routed_by_the_phone_and_keeps_the_lid():
    got = fields("Message", message(lid(), sender_alt=pn()))
    assert (got["from"], got["chat"], got["from_lid"]) == (PHONE, f"{PHONE}@s.whatsapp.net", f"{LID}@lid")


def test_a_lid_sender_alone_is_asked_of_the_lid_store_and_stays_a_lid_when_unknown():
    in_group = message(lid(), chat=group())
    assert fields("Message", in_group, {LID: PHONE}.get)["from"] == PHONE
    assert fields("Message", in_group, {LID: PHONE}.get)["chat"] == "120363012345678901@g.us"
    unknown = fields("Message", in_group, lambda _user: None)
    assert (unknown["from"], unknown["from_lid"]) == (None, f"{LID}@lid")


def test_what_the_lines_own_phone_sends_is_from_the_line_to_the_recipients_chat():
    got = fields("Message", message(pn(LINE), chat=lid(), from_me=True, recipient_alt=pn()))
    assert (got["from"], got["chat"], got["from_me"]) == (LINE, f"{PHONE}@s.whatsapp.net", True)


def test_receipts_name_their_status_and_messages_and_protocol_receipts_are_not_forwarded():
    ev = ReceiptEv(MessageIDs=["3EB0A", "3EB0B"], Timestamp=1764170000, Type=ReceiptEv.ReceiptType.READ)
    ev.MessageSource.Chat.CopyFrom(pn())
    ev.MessageSource.Sender.CopyFrom(pn())
    assert fields("Receipt", as_json(ev)) == {"event": "Receipt", "status": "read", "message_ids": ["3EB0A", "3EB0B"],
                                              "chat": f"{PHONE}@s.whatsapp.net", "from": PHONE}
    ev.Type = ReceiptEv.ReceiptType.DELIVERED  # the proto default: absent from the JSON
    assert fields("Receipt", as_json(ev))["status"] == "delivered"
    ev.Type = ReceiptEv.ReceiptType.PLAYED
    assert fields("Receipt", as_json(ev))["status"] == "played"
    ev.Type = ReceiptEv.ReceiptType.RETRY
    assert envelope.inbound("Receipt", as_json(ev), LINE) is None


def test_calls_name_the_caller_and_the_call():
    offer = CallOfferEv()
    offer.basicCallMeta.callID = "CALL1"
    getattr(offer.basicCallMeta, "from").CopyFrom(lid())
    offer.basicCallMeta.callCreatorAlt.CopyFrom(pn())
    assert fields("CallOffer", as_json(offer)) == {"event": "CallOffer", "from": PHONE, "call_id": "CALL1",
                                                   "from_lid": f"{LID}@lid"}
    end = CallTerminateEv(reason="timeout")
    end.basicCallMeta.callID = "CALL1"
    getattr(end.basicCallMeta, "from").CopyFrom(pn())
    assert fields("CallTerminate", as_json(end)) == {"event": "CallTerminate", "from": PHONE, "call_id": "CALL1"}


def test_presence_and_typing_name_who_and_where():
    typing = ChatPresenceEv(State=ChatPresenceEv.ChatPresence.COMPOSING)
    typing.MessageSource.Chat.CopyFrom(pn())
    typing.MessageSource.Sender.CopyFrom(pn())
    assert fields("ChatPresence", as_json(typing)) == {"event": "ChatPresence", "chat": f"{PHONE}@s.whatsapp.net",
                                                       "from": PHONE}
    online = PresenceEv(Unavailable=False, LastSeen=0)
    online.From.CopyFrom(pn())
    assert fields("Presence", as_json(online)) == {"event": "Presence", "from": PHONE,
                                                   "chat": f"{PHONE}@s.whatsapp.net"}


def test_group_events_name_the_group():
    joined = JoinedGroupEv(Reason="", Type="new")
    joined.GroupInfo.JID.CopyFrom(group())
    assert fields("JoinedGroup", as_json(joined)) == {"event": "JoinedGroup", "chat": "120363012345678901@g.us"}
    renamed = GroupInfoEv(Timestamp=1764170000)
    renamed.JID.CopyFrom(group())
    renamed.Name.Name = "Ático en venta"
    assert fields("GroupInfo", as_json(renamed)) == {"event": "GroupInfo", "chat": "120363012345678901@g.us"}


def test_an_undecryptable_message_names_its_id_chat_and_sender():
    ev = UndecryptableMessageEv(IsUnavailable=False)
    ev.Info.ID = "3EB0UNDEC"
    ev.Info.MessageSource.Chat.CopyFrom(pn())
    ev.Info.MessageSource.Sender.CopyFrom(pn())
    assert fields("UndecryptableMessage", as_json(ev)) == {
        "event": "UndecryptableMessage", "message_id": "3EB0UNDEC", "chat": f"{PHONE}@s.whatsapp.net", "from": PHONE}


def test_webhook_ids_are_stable_for_the_same_event_and_unique_for_momentary_ones():
    receipt = ReceiptEv(MessageIDs=["3EB0A"], Timestamp=1764170000, Type=ReceiptEv.ReceiptType.READ)
    receipt.MessageSource.Chat.CopyFrom(pn())
    twice = [envelope.inbound("Receipt", as_json(receipt), LINE).id for _ in range(2)]
    assert twice[0] == twice[1] and twice[0].startswith("evt_")
    receipt.Timestamp += 1
    assert envelope.inbound("Receipt", as_json(receipt), LINE).id != twice[0]
    assert envelope.inbound("Message", message(pn()), LINE).id == envelope.message_event_id(LINE, "3EB0AA")
    typing = as_json(ChatPresenceEv(State=ChatPresenceEv.ChatPresence.COMPOSING))
    assert envelope.inbound("ChatPresence", typing, LINE).id != envelope.inbound("ChatPresence", typing, LINE).id


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_forwarded_source_has_its_type_and_survives_an_empty_event(source):
    event = envelope.inbound(source, {}, LINE)
    assert event is not None and event.type == SOURCES[source] and event.fields["event"] == source


def test_an_unknown_source_is_not_forwarded():
    assert envelope.inbound("HistorySync", {"Data": {}}, LINE) is None
