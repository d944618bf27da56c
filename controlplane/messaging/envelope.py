"""What the webhook envelope adds to an inbound event, so a receiver can route it without parsing
protobuf JSON: ``message_id``, ``chat``, ``from``, ``from_me``, ``status``, ``call_id`` (the contract's
table), and its webhook-id.

Pure functions of the event as the engine delivered it (whatsmeow's event as protobuf JSON, the
same shape on both engines), so both engines get the same envelope from one piece of code. ``from``
is a phone number wherever one is knowable: the JID itself, its ``…Alt`` twin, or the engine's LID
store (``resolve_lid``); a ``@lid`` id is kept in ``from_lid`` as well, never instead of a number
that could be had. ``chat`` is a JID (``34611122233@s.whatsapp.net``, ``120363…@g.us``), turned
from a ``@lid`` into the phone's JID when the number is known.
"""

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from controlplane.core.event_types import SOURCES, WebhookType

PN_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"

# Receipt.Type -> the envelope's status. The others (retries, the line's own devices reading what it
# received, server errors, history sync) are protocol chatter, not news about a message the line sent.
RECEIPT_STATUS = {"DELIVERED": "delivered", "READ": "read", "PLAYED": "played"}
# Events without an id or a time of their own: two real ones can be identical, so each gets its own id.
MOMENTARY = {"ChatPresence", "Presence"}

Resolver = Callable[[str], str | None]


@dataclass(frozen=True)
class Inbound:
    id: str  # the webhook-id
    type: WebhookType
    fields: dict  # what the envelope adds, before "payload"


def _phone(*jids, resolve: Resolver | None = None) -> str | None:
    """The first phone number among these JIDs (JSON objects), asking the LID store for a @lid one."""
    for jid in jids:
        if isinstance(jid, dict) and jid.get("User") and jid.get("Server") == PN_SERVER:
            return jid["User"]
    for jid in jids:
        if resolve and isinstance(jid, dict) and jid.get("User") and jid.get("Server") == LID_SERVER:
            phone = resolve(jid["User"])
            if phone:
                return phone
    return None


def _lid(jid) -> str | None:
    if isinstance(jid, dict) and jid.get("Server") == LID_SERVER and jid.get("User"):
        return f"{jid['User']}@{LID_SERVER}"
    return None


def _jid(jid) -> str | None:
    if not isinstance(jid, dict) or not jid.get("Server"):
        return None
    return f"{jid['User']}@{jid['Server']}" if jid.get("User") else jid["Server"]


def _chat(chat, alternates: tuple, resolve: Resolver | None) -> str | None:
    """A chat's JID; a @lid chat (a contact known by its LID) as its phone's JID when that is known."""
    if _lid(chat):
        phone = _phone(*alternates, chat, resolve=resolve)
        if phone:
            return f"{phone}@{PN_SERVER}"
    return _jid(chat)


def _source_fields(source: dict, line: str | None, resolve: Resolver | None) -> dict:
    """message_id-less fields of a MessageSource: chat, from, from_me (and from_lid)."""
    from_me = bool(source.get("IsFromMe"))
    sender, sender_alt = source.get("Sender"), source.get("SenderAlt")
    sender_phone = _phone(sender, sender_alt, resolve=resolve) or (line if from_me else None)
    # In a one-to-one chat with a LID contact, the contact is the sender, or (from the line's own
    # phone) the recipient, whose phone JID whatsmeow puts in RecipientAlt.
    alternates = (source.get("RecipientAlt"),) if from_me else (sender_alt,)
    fields = {"chat": _chat(source.get("Chat"), alternates, resolve), "from": sender_phone, "from_me": from_me}
    lid = _lid(sender) or _lid(sender_alt)
    if lid:
        fields["from_lid"] = lid
    return fields


def _message(payload: dict, line, resolve) -> dict:
    info = payload.get("Info") or {}
    return {"message_id": info.get("ID"), **_source_fields(info.get("MessageSource") or {}, line, resolve)}


def _receipt(payload: dict, line, resolve) -> dict | None:
    status = RECEIPT_STATUS.get(payload.get("Type", "DELIVERED"))  # DELIVERED is the proto default
    if status is None:
        return None
    fields = _source_fields(payload.get("MessageSource") or {}, line, resolve)
    return {"status": status, "message_ids": list(payload.get("MessageIDs") or []), "chat": fields["chat"],
            "from": fields["from"]}


def _call(payload: dict, line, resolve) -> dict:
    meta = payload.get("basicCallMeta") or {}
    fields = {"from": _phone(meta.get("from"), meta.get("callCreator"), meta.get("callCreatorAlt"), resolve=resolve),
              "call_id": meta.get("callID")}
    lid = _lid(meta.get("from")) or _lid(meta.get("callCreator"))
    if lid:
        fields["from_lid"] = lid
    return fields


def _chat_presence(payload: dict, line, resolve) -> dict:
    fields = _source_fields(payload.get("MessageSource") or {}, line, resolve)
    return {k: v for k, v in fields.items() if k != "from_me"}


def _presence(payload: dict, line, resolve) -> dict:
    who = payload.get("From")
    phone = _phone(who, resolve=resolve)
    return {"from": phone, "chat": f"{phone}@{PN_SERVER}" if phone else _jid(who)}


def _joined_group(payload: dict, line, resolve) -> dict:
    return {"chat": _jid((payload.get("GroupInfo") or {}).get("JID"))}


def _group_info(payload: dict, line, resolve) -> dict:
    return {"chat": _jid(payload.get("JID"))}


def _undecryptable(payload: dict, line, resolve) -> dict:
    fields = _message(payload, line, resolve)
    fields.pop("from_me")
    return fields


_FIELDS = {
    "Message": _message,
    "Receipt": _receipt,
    "CallOffer": _call,
    "CallTerminate": _call,
    "ChatPresence": _chat_presence,
    "Presence": _presence,
    "JoinedGroup": _joined_group,
    "GroupInfo": _group_info,
    "UndecryptableMessage": _undecryptable,
}
assert set(_FIELDS) == set(SOURCES), "every whatsmeow event the engines forward has its envelope"


def message_event_id(line: str, message_id: str) -> str:
    """The webhook-id of an inbound message: the same whenever and by whichever slot it is received
    again, and made of characters rq accepts in a job id, whatever WhatsApp's id contains."""
    return "msg_" + hashlib.sha256(f"{line}:{message_id}".encode()).hexdigest()[:32]


def event_id(line: str, source: str, payload: dict, fields: dict) -> str:
    """A message's id is its WhatsApp id's; any other event's is its content's, so that the same
    receipt, call or group change handed over twice (after a reconnect) is one webhook-id."""
    if source == "Message" and fields.get("message_id"):
        return message_event_id(line, fields["message_id"])
    if source in MOMENTARY:
        return f"evt_{uuid.uuid4().hex}"
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "evt_" + hashlib.sha256(f"{line}:{source}:{canonical}".encode()).hexdigest()[:32]


def inbound(source: str, payload: dict, line: str | None, resolve_lid: Resolver | None = None) -> Inbound | None:
    """The envelope of an event the engine delivered; None for one that is not forwarded (an
    unknown source, a receipt that is protocol chatter)."""
    if source not in _FIELDS:
        return None
    fields = _FIELDS[source](payload, line, resolve_lid)
    if fields is None:
        return None
    return Inbound(event_id(line or "", source, payload, fields), SOURCES[source], {"event": source, **fields})
