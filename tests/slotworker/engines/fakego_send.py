"""FakeGo's doubles for what the line sends (mixed into FakeGo): the Go functions neonize calls to
send, upload, mark read, show a presence, ask who is on WhatsApp, read a group's info and look up
whatsmeow's LID store, with whatsmeow's own error texts (errors.go; send.go wraps the group ones).

The mixin keeps its own state (``_init_send``) and needs FakeGo's: ``calls``, ``connected``,
``running``, ``line``, ``auto_receipts``, ``media`` and ``_paths`` (the media server), ``_delivered``
(the recipient's DELIVERED receipt).

Groups are WhatsApp's: ``groups`` (id without server -> member phones); those in ``lid_groups``
address their members by LID, as whatsmeow's group info shows them (a participant's JID is the
``@lid``, its phone number alongside), and whatsmeow's store learns their LIDs from it.
"""

import threading
import time

from neonize.proto.Neonize_pb2 import (
    JID,
    Device,
    GetGroupInfoReturnFunction,
    GetJIDFromStoreReturnFunction,
    GroupInfo,
    IsOnWhatsAppResponse,
    IsOnWhatsAppReturnFunction,
    SendMessageReturnFunction,
    SendResponse,
    UploadResponse,
    UploadReturnFunction,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
from neonize.utils.jid import build_jid

from controlplane.core import whatsapp_media

ERR_NOT_CONNECTED = "websocket not connected"
ERR_NOT_IN_GROUP = "you're not participating in that group"  # group info IQ 403
ERR_NO_GROUP = "that group does not exist"  # group info IQ 404
ERR_GROUP_MEMBERS = "failed to get group members: "
ERR_NO_IDS = "no message IDs specified"
ERR_NOTHING_RETURNED = "Function returned nothing."  # neonize's Go: IsOnWhatsApp answered an empty list
# whatsmeow's MediaType as neonize passes it to Upload: the key family of the encryption
UPLOAD_KINDS = {0: "image", 1: "video", 2: "audio", 3: "document"}


def lid_of(phone: str) -> str:
    """The LID WhatsApp gives a phone here: 15 digits, stable, never a phone number of the tests."""
    return str(10**14 + int(phone) % (9 * 10**14))


class Outgoing:
    """One message WhatsApp accepted from the line: to whom (user, server), its id and time."""

    def __init__(self, user: str, server: str, message_id: str, timestamp: int, message: Message):
        self.user, self.server, self.id, self.timestamp, self.message = user, server, message_id, timestamp, message

    def __repr__(self):
        return f"Outgoing({self.user}@{self.server}, {self.id}, {[f.name for f, _ in self.message.ListFields()]})"


def _empty_jid() -> JID:
    return JID(User="", Server="", RawAgent=0, Device=0, Integrator=0, IsEmpty=True)


class SendDoubles:
    def _init_send(self) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.outbox: list[Outgoing] = []  # the same, in full: each SendMessage that WhatsApp accepted
        self.uploads: dict[str, tuple[bytes, int]] = {}  # directPath -> (the plain file, neonize's MediaType)
        self.groups: dict[str, set[str]] = {}  # WhatsApp's groups: id (no server) -> member phones
        self.lid_groups: set[str] = set()  # the groups that address their members by LID
        self.registered: set[str] = set()  # the phone numbers on WhatsApp (IsOnWhatsApp: "in")
        self.lid_answers = False  # IsOnWhatsApp answers with the number's @lid (addressing_mode=lid)
        self.lids: dict[str, str] = {}  # whatsmeow's LID store: lid user -> phone number
        # MarkRead: (chat user, sender "user@server" or "" without one, ids, receipt type)
        self.reads: list[tuple[str, str, list[str], bytes]] = []
        self.presences: list[tuple[str, str, int, int]] = []  # SendChatPresence: (user, server, state, media)

    @staticmethod
    def lid_of(phone: str) -> str:
        return lid_of(phone)

    def learn_lid(self, phone: str) -> str:
        """whatsmeow's store learns a phone's LID (from group metadata, usync); returns the LID."""
        lid = lid_of(phone)
        self.lids[lid] = phone
        return lid

    def SendMessage(self, uuid, to, to_len, message, message_len):
        print("SendMessage: Go writes lines like this to stdout", flush=True)  # never data for us
        target, sent = JID.FromString(to), Message.FromString(message)
        self.calls.append(("SendMessage", target.User, target.Server))
        if not self.connected:  # whatsmeow's first query (devices, group members) has no socket
            error = f"failed to get device list: {ERR_NOT_CONNECTED}"
            return SendMessageReturnFunction(Error=error).SerializeToString()
        if target.Server == "g.us":  # whatsmeow fetches the group's members first (group info IQ)
            error = self._group_error(target.User)
            if error:
                return SendMessageReturnFunction(Error=ERR_GROUP_MEMBERS + error).SerializeToString()
        else:
            self.registered.add(target.User)  # a phone that received messages is a known phone
        self.sent.append((target.User, sent))
        response = SendResponse(ID=f"3EB0FAKE{len(self.sent):08d}", Timestamp=int(time.time()), ServerID=0)
        self.outbox.append(Outgoing(target.User, target.Server, response.ID, response.Timestamp, sent))
        if self.auto_receipts and target.Server != "g.us":  # on Go's event thread, after SendMessage returned
            timer = threading.Timer(0.05, self._delivered, args=(target.User, response.ID))
            timer.daemon = True
            timer.start()
        return SendMessageReturnFunction(SendResponse=response).SerializePartialToString()

    def Upload(self, uuid, data, size, media_type):
        """whatsmeow's Upload: encrypted with the key family of ``media_type`` onto the media server."""
        self.calls.append(("Upload", size, media_type))
        if not self.connected:
            return UploadReturnFunction(Error=f"failed to refresh media connections: {ERR_NOT_CONNECTED}"
                                        ).SerializeToString()
        plain = bytes(data[:size])
        encrypted = whatsapp_media.encrypt(plain, UPLOAD_KINDS.get(media_type, "document"))
        path = f"/v/t62.7118-24/{next(self._paths)}_{encrypted.file_enc_sha256.hex()[:16]}.enc?ccb=11-4"
        self.media[path] = encrypted.data
        self.uploads[path] = (plain, media_type)
        return UploadReturnFunction(UploadResponse=UploadResponse(
            url=f"https://mmg.whatsapp.net{path}", DirectPath=path, Handle="", MediaKey=encrypted.media_key,
            FileEncSHA256=encrypted.file_enc_sha256, FileSHA256=encrypted.file_sha256,
            FileLength=encrypted.file_length)).SerializePartialToString()

    def GetMe(self, uuid):
        self.calls.append(("GetMe",))
        if not self.running.is_set():
            raise RuntimeError("Go panic: nil pointer dereference (GetMe without a client)")
        me = build_jid(self.line or "")
        me.Device = 7
        return Device(JID=me, Platform="android", BussinessName="", PushName="", Initialized=True).SerializeToString()

    def MarkRead(self, uuid, ids, timestamp, chat, chat_len, sender, sender_len, receipt):
        """A C string: b"" when the receipt went out. whatsmeow sends it to any chat, member or not."""
        message_ids = [i for i in ids.decode().split(" ") if i]
        chat_jid, sender_jid = JID.FromString(chat), JID.FromString(sender)
        self.calls.append(("MarkRead", message_ids, chat_jid.User, receipt))
        if not message_ids:
            return ERR_NO_IDS.encode()
        if not self.connected:
            return ERR_NOT_CONNECTED.encode()
        sender_address = f"{sender_jid.User}@{sender_jid.Server}" if sender_jid.User else ""
        self.reads.append((chat_jid.User, sender_address, message_ids, receipt))
        return b""

    def SendChatPresence(self, uuid, jid, jid_len, state, media):
        """state 0 composing / 1 paused, media 0 text / 1 audio (neonize.utils.enum); a C string."""
        target = JID.FromString(jid)
        self.calls.append(("SendChatPresence", target.User, state, media))
        if not self.connected:
            return ERR_NOT_CONNECTED.encode()
        self.presences.append((target.User, target.Server, state, media))
        return b""

    def SendPresence(self, uuid, presence):
        """The line's own presence: b"available" / b"unavailable" (neonize.utils.enum.Presence); a C string."""
        self.calls.append(("SendPresence", presence))
        return b"" if self.connected else ERR_NOT_CONNECTED.encode()

    def IsOnWhatsApp(self, uuid, numbers, size):
        """whatsmeow's usync query: numbers in international format with the "+", Query echoing it."""
        self.calls.append(("IsOnWhatsApp", numbers.decode()))
        if not self.connected:
            return IsOnWhatsAppReturnFunction(Error=f"failed to send usync query: {ERR_NOT_CONNECTED}"
                                              ).SerializeToString()
        answers = []
        for query in numbers.decode().split(" "):
            phone = query[1:] if query.startswith("+") else None  # without the +: not a number WhatsApp knows
            found = build_jid(phone or query)
            if phone in self.registered and self.lid_answers:
                found = build_jid(self.learn_lid(phone), server="lid")  # whatsmeow stores the mapping it was told
            answers.append(IsOnWhatsAppResponse(Query=query, JID=found, IsIn=phone in self.registered))
        if not answers:
            return IsOnWhatsAppReturnFunction(Error=ERR_NOTHING_RETURNED).SerializeToString()
        return IsOnWhatsAppReturnFunction(IsOnWhatsAppResponse=answers).SerializeToString()

    def GetGroupInfo(self, uuid, jid, size):
        """whatsmeow's parseParticipant: in a LID-addressed group a participant's JID is its @lid (the
        phone number alongside, and the store learns the pair), else its phone JID."""
        group = JID.FromString(jid)
        self.calls.append(("GetGroupInfo", group.User))
        error = ERR_NOT_CONNECTED if not self.connected else self._group_error(group.User)
        if error:
            return GetGroupInfoReturnFunction(Error=error).SerializeToString()
        info = GroupInfo(JID=build_jid(group.User, server="g.us"))
        for phone in sorted(self.groups[group.User]):
            participant = info.Participants.add(IsAdmin=False, IsSuperAdmin=False)
            participant.PhoneNumber.CopyFrom(build_jid(phone))
            if group.User in self.lid_groups:
                lid = build_jid(self.learn_lid(phone), server="lid")
                participant.JID.CopyFrom(lid)
                participant.LID.CopyFrom(lid)
            else:
                participant.JID.CopyFrom(build_jid(phone))
        return GetGroupInfoReturnFunction(GroupInfo=info).SerializePartialToString()

    def _group_error(self, group: str) -> str | None:
        if group not in self.groups:
            return ERR_NO_GROUP
        if self.line not in self.groups[group]:
            return ERR_NOT_IN_GROUP
        return None

    def GetPNFromLID(self, uuid, jid, size):
        self.calls.append(("GetPNFromLID",))
        if not self.running.is_set():
            raise RuntimeError("Go panic: nil pointer dereference (store lookup without a client)")
        lid = JID.FromString(jid)
        phone = self.lids.get(lid.User) if lid.Server == "lid" else None
        # whatsmeow's store answers an unknown LID with an empty JID and no error
        found = build_jid(phone) if phone else _empty_jid()
        return GetJIDFromStoreReturnFunction(Jid=found).SerializeToString()

    def GetLIDFromPN(self, uuid, jid, size):
        """neonize's get_lid_from_pn: the phone JID's LID from whatsmeow's store, an empty JID if unknown."""
        phone = JID.FromString(jid)
        self.calls.append(("GetLIDFromPN", phone.User, phone.Server))
        if not self.running.is_set():
            raise RuntimeError("Go panic: nil pointer dereference (store lookup without a client)")
        known = phone.Server == "s.whatsapp.net" and next((lid for lid, p in self.lids.items() if p == phone.User),
                                                         None)
        found = build_jid(known, server="lid") if known else _empty_jid()
        return GetJIDFromStoreReturnFunction(Jid=found).SerializeToString()
