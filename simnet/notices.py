"""The network's other events, neonize's protobufs as JSON like payloads.py's messages: receipts,
calls, typing and presence, groups. Their timestamps are Unix seconds (goneonize's encoder uses
``.Unix()`` for all of them; only MessageInfo.Timestamp is in milliseconds).
"""

import time

from neonize.events import (
    CallOfferEv,
    CallTerminateEv,
    ChatPresenceEv,
    GroupInfoEv,
    JoinedGroupEv,
    PresenceEv,
    ReceiptEv,
)
from neonize.proto.Neonize_pb2 import BasicCallMeta, ChatPresence, GroupInfo, GroupName, Receipt

from simnet.payloads import Where, as_json, group, lid, pn

RECEIPT_TYPES = {"delivered": Receipt.DELIVERED, "read": Receipt.READ, "played": Receipt.PLAYED}
# Go's zero time.Time, as neonize encodes a LastSeen that WhatsApp did not send (a contact online)
GO_ZERO_TIME_UNIX = -62135596800
REMOTE_PLATFORM, REMOTE_VERSION = "android", "2.25.21.78"


def _chat_of(phone: str, group_id: str | None) -> Where:
    """Where ``phone`` acts: its chat with the line, or a (LID-addressed) group it is in."""
    if group_id is None:
        return Where(chat=pn(phone), sender=pn(phone))
    return Where(chat=group(group_id), sender=lid(phone), is_group=True)


def receipt(phone: str, message_ids: list[str], kind: str, group_id: str | None = None) -> dict:
    """The phone ``phone`` received / read / played messages the line sent it (in a group: there)."""
    ev = ReceiptEv(MessageIDs=message_ids, Timestamp=int(time.time()), Type=RECEIPT_TYPES[kind])
    ev.MessageSource.CopyFrom(_chat_of(phone, group_id).source())
    return as_json(ev)


def _call_meta(caller: str, call_id: str) -> BasicCallMeta:
    meta = BasicCallMeta(timestamp=int(time.time()), callID=call_id)
    getattr(meta, "from").CopyFrom(pn(caller))  # "from" is a Python keyword
    meta.callCreator.CopyFrom(pn(caller))
    return meta


def call_offer(caller: str, call_id: str) -> dict:
    ev = CallOfferEv()
    ev.basicCallMeta.CopyFrom(_call_meta(caller, call_id))
    ev.callRemoteMeta.remotePlatform = REMOTE_PLATFORM
    ev.callRemoteMeta.remoteVersion = REMOTE_VERSION
    return as_json(ev)


def call_terminate(caller: str, call_id: str, reason: str) -> dict:
    ev = CallTerminateEv(reason=reason)
    ev.basicCallMeta.CopyFrom(_call_meta(caller, call_id))
    return as_json(ev)


def chat_presence(phone: str, state: str, group_id: str | None = None) -> dict:
    """composing / paused / recording (whatsmeow: COMPOSING with media "audio")."""
    ev = ChatPresenceEv(State=ChatPresence.PAUSED if state == "paused" else ChatPresence.COMPOSING)
    if state == "recording":
        ev.Media = ChatPresence.AUDIO
    ev.MessageSource.CopyFrom(_chat_of(phone, group_id).source())
    return as_json(ev)


def presence(phone: str, available: bool) -> dict:
    ev = PresenceEv(Unavailable=not available, LastSeen=GO_ZERO_TIME_UNIX if available else int(time.time()))
    ev.From.CopyFrom(pn(phone))
    return as_json(ev)


def _group_name(name: str, set_by: str, set_at: int) -> GroupName:
    group_name = GroupName(Name=name, NameSetAt=set_at)
    group_name.NameSetBy.CopyFrom(lid(set_by))
    return group_name


def group_info(group_id: str, info: dict) -> GroupInfo:
    """types.GroupInfo of simnet's group record (name, owner, members, created, name_set_at)."""
    result = GroupInfo(GroupCreated=float(info["created"]), ParticipantVersionID=str(info.get("version", 1)))
    result.JID.CopyFrom(group(group_id))
    result.OwnerJID.CopyFrom(lid(info["owner"]))
    result.OwnerPN.CopyFrom(pn(info["owner"]))
    result.GroupName.CopyFrom(_group_name(info["name"], info["owner"], info["name_set_at"]))
    for member in info["members"]:
        participant = result.Participants.add(IsAdmin=member == info["owner"], IsSuperAdmin=member == info["owner"])
        participant.JID.CopyFrom(lid(member))  # a LID-addressed group lists its members by LID
        participant.LID.CopyFrom(lid(member))
        participant.PhoneNumber.CopyFrom(pn(member))
    return result


def joined_group(group_id: str, info: dict, by: str, new: bool) -> dict:
    """The line joined (``new``: created with it in) a group; ``by`` created it or added the line."""
    ev = JoinedGroupEv(Type="new" if new else "", Reason="", CreateKey="")
    ev.GroupInfo.CopyFrom(group_info(group_id, info))
    ev.Sender.CopyFrom(lid(by))
    ev.SenderPN.CopyFrom(pn(by))
    return as_json(ev)


def group_change(group_id: str, by: str, name: str | None = None, join: list[str] = (),
                 leave: list[str] = ()) -> dict:
    """events.GroupInfo: the group's name changed, or members joined or left."""
    now = int(time.time())
    ev = GroupInfoEv(Timestamp=now)
    ev.JID.CopyFrom(group(group_id))
    ev.Sender.CopyFrom(lid(by))
    if name is not None:
        ev.Name.CopyFrom(_group_name(name, by, now))
    for member in join:
        ev.Join.add().CopyFrom(lid(member))
    for member in leave:
        ev.Leave.add().CopyFrom(lid(member))
    return as_json(ev)
