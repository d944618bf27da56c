"""The whatsmeow engine's world for the contract suite: FakeGo at neonize's ctypes boundary, with
the events whatsmeow would deliver.

What the line sent is read back from what FakeGo's SendMessage received (``fake.outbox``), as the
recipient's phone would show it: simnet's inbox entry shape (``sent_to``), the media fetched and
decrypted from FakeGo's media server by the message's own reference (so its ``sha256`` is that of
the bytes the phone gets), reactions, edits and revokes applied onto the message they name. A
change lands only where its key points, as on a phone: ``remoteJID`` this chat and, for another's
message in a group, ``participant`` that member as the group addresses it (``<lid>@lid`` in a
LID-addressed group, as every group made here is). A reaction on a message the phone sent itself
(``fromMe`` false) is an entry of its own, kind ``reaction``, as simnet shows it.
"""

import hashlib
import time
from pathlib import Path

import neonize.client
from neonize.events import ReceiptEv
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message, ProtocolMessage

from controlplane.core.config import Settings
from slotworker.engines.whatsmeow import WhatsmeowEngine
from tests.slotworker.engines.fakego import FakeGo, _GoError
from tests.slotworker.engines.fakego_send import Outgoing
from tests.slotworker.engines.harness import Recorder


class WhatsmeowHarness:
    name = "whatsmeow"

    def __init__(self, tmp_path: Path, monkeypatch):
        self.fake = FakeGo()
        monkeypatch.setattr(neonize.client, "gocode", self.fake)  # every NewClient now talks to the stand-in
        self.env = {"WHIN_DATA_DIR": str(tmp_path), "WHIN_ENGINE": "whatsmeow"}
        self.settings = Settings.from_env(self.env)
        self._ids = 0
        self._owners: dict[str, str] = {}  # group -> its creator's LID
        self._read_by_phone: dict[str, set[str]] = {}  # phone -> ids of the line's messages it read

    def engine(self, slot_dir: Path, events, **env) -> WhatsmeowEngine:
        settings = Settings.from_env({**self.env, **env}) if env else self.settings
        return WhatsmeowEngine("SLOT0001", slot_dir, settings, events)

    def scan(self, line: str, recorder: Recorder) -> None:
        recorder.wait("on_qr")
        self.fake.pair(line)

    def _id(self) -> str:
        self._ids += 1
        return f"3EB0{time.time_ns():X}{self._ids}"

    def _lid(self, phone: str) -> str:
        """A phone's LID, which whatsmeow's LID store learns from WhatsApp (group metadata, usync)."""
        return self.fake.learn_lid(phone)

    def _message(self, sender: str, message: Message, **where) -> str:
        message_id = self._id()
        self.fake.emit(self.fake.message_event(sender, message, message_id, **where))
        return message_id

    # --- the phones ---

    def deliver(self, sender: str, line: str, text: str) -> str:
        return self._message(sender, Message(conversation=text))

    def send_media(self, sender: str, line: str, data: bytes, mimetype: str, filename: str | None = None,
                   caption: str | None = None, ptt: bool = False) -> str:
        return self._message(sender, self.fake.upload(data, mimetype, filename, caption, ptt))

    def own_message(self, line: str, to: str, text: str) -> str:
        # whatsmeow: the own phone's message, in the chat with ``to``, sent by the line itself
        message_id = self._id()
        ev = self.fake.message_event(to, Message(conversation=text), message_id, from_me=True)
        ev.Info.MessageSource.Sender.User = line
        self.fake.emit(ev)
        return message_id

    @staticmethod
    def _own_key(line: str, target_id: str) -> MessageKey:
        # the phone's own earlier message, as the phone names it: fromMe, in its chat with the line
        return MessageKey(remoteJID=f"{line}@s.whatsapp.net", fromMe=True, ID=target_id)

    def react(self, sender: str, line: str, target_id: str, emoji: str) -> str:
        message = Message()
        message.reactionMessage.key.CopyFrom(self._own_key(line, target_id))
        message.reactionMessage.text = emoji
        message.reactionMessage.senderTimestampMS = int(time.time() * 1000)
        return self._message(sender, message)

    def edit(self, sender: str, line: str, target_id: str, text: str) -> str:
        message = Message()
        message.protocolMessage.key.CopyFrom(self._own_key(line, target_id))
        message.protocolMessage.type = ProtocolMessage.MESSAGE_EDIT
        message.protocolMessage.editedMessage.conversation = text
        message.protocolMessage.timestampMS = int(time.time() * 1000)
        return self._message(sender, message)

    def revoke(self, sender: str, line: str, target_id: str) -> str:
        message = Message()
        message.protocolMessage.key.CopyFrom(self._own_key(line, target_id))
        message.protocolMessage.type = ProtocolMessage.REVOKE
        return self._message(sender, message)

    def read(self, phone: str, line: str, ids: list[str]) -> None:
        self._read_by_phone.setdefault(phone, set()).update(ids)
        self.fake.receipt(phone, ids, ReceiptEv.ReceiptType.READ)

    def call(self, phone: str, line: str) -> str:
        call_id = f"{time.time_ns():032X}"
        self.fake.call(phone, call_id)
        return call_id

    def hang_up(self, phone: str, line: str, call_id: str) -> None:
        self.fake.call(phone, call_id, terminate=True)

    def typing(self, phone: str, line: str, state: str) -> None:
        self.fake.chat_presence(phone, state)

    def presence(self, phone: str, line: str, available: bool) -> None:
        self.fake.presence(phone, available)

    def undecryptable(self, phone: str, line: str) -> str:
        message_id = self._id()
        self.fake.undecryptable(phone, message_id)
        return message_id

    def create_group(self, name: str, members: list[str]) -> str:
        """A group of those phones; the line hears of it (JoinedGroup) only when it is a member."""
        group_id = f"120363{time.time_ns() % 10**12:012d}"
        lids = {phone: self._lid(phone) for phone in members}
        self._owners[group_id] = lids[members[0]]
        if self.fake.line in members:
            self.fake.joined_group(group_id, name, lids[members[0]], lids)
        else:
            self.fake.groups[group_id] = set(members)
            self.fake.lid_groups.add(group_id)
            self.fake.registered.update(members)  # phones in a group are on WhatsApp
        return f"{group_id}@g.us"

    def rename_group(self, group_id: str, name: str) -> None:
        bare = group_id.split("@")[0]
        self.fake.group_renamed(bare, name, self._owners[bare])

    def group_message(self, sender: str, group_id: str, text: str) -> str:
        return self._message(sender, Message(conversation=text), group=group_id.split("@")[0],
                             lid=self._lid(sender))

    # --- WhatsApp itself ---

    def forget_media(self) -> None:
        self.fake.forget_media()

    def ban(self, line: str, seconds: int) -> None:
        self.fake.ban(seconds)

    def replace(self, line: str) -> None:
        self.fake.replace()

    def outdate(self, line: str) -> None:
        self.fake.outdated()

    def unlink(self, line: str) -> None:
        self.fake.unlink()

    def join(self, number: str) -> None:
        """That number is now on WhatsApp: IsOnWhatsApp answers it is "in"."""
        self.fake.registered.add(number)

    def sent_to(self, number: str) -> list[dict]:
        """What that phone shows from the line, as inbox entries, oldest first."""
        return self._entries(lambda out: out.server == "s.whatsapp.net" and out.user == number, number,
                             chat=f"{number}@s.whatsapp.net")

    def sent_to_group(self, group_id: str) -> list[dict]:
        """The same for what the line posted in that group."""
        bare = group_id.split("@")[0]
        return self._entries(lambda out: out.server == "g.us" and out.user == bare, group_id,
                             chat=f"{bare}@g.us", group=group_id)

    def read_by_line(self, number: str) -> list[str]:
        """Ids of that phone's messages the line marked as read (in their chat, or in a group by it)."""
        return [i for chat, sender, ids, _ in self.fake.reads if number in (chat, self._phone_of(sender))
                for i in ids]

    def chat_state(self, number: str) -> dict:
        """{line: "composing" | "recording" | "paused"}: the latest the line showed in the chat."""
        states = [(state, media) for user, server, state, media in self.fake.presences
                  if (user, server) == (number, "s.whatsapp.net")]
        if not states:
            return {}
        state, media = states[-1]  # neonize.utils.enum: state 0 composing / 1 paused, media 0 text / 1 audio
        return {self.fake.line: "paused" if state == 1 else "recording" if media == 1 else "composing"}

    def _phone_of(self, address: str) -> str:
        """The phone a "user@server" address names (an @lid through whatsmeow's store)."""
        user, _, server = address.partition("@")
        return self.fake.lids.get(user, "") if server == "lid" else user

    def _lands(self, key, chat: str, group: str | None) -> bool:
        """Whether a key points into this chat, and in a group at a member as the group names them."""
        if key.remoteJID != chat:
            return False
        if not group or key.fromMe:
            return True
        _, _, server = key.participant.partition("@")
        bare = group.split("@")[0]
        wanted = "lid" if bare in self.fake.lid_groups else "s.whatsapp.net"
        return server == wanted and self._phone_of(key.participant) in self.fake.groups.get(bare, ())

    def _entries(self, where, to: str, chat: str, group: str | None = None) -> list[dict]:
        entries: list[dict] = []
        for out in [o for o in self.fake.outbox if where(o)]:
            message = out.message
            if message.HasField("reactionMessage"):
                if self._lands(message.reactionMessage.key, chat, group):
                    self._react(entries, out, to, group)
            elif message.HasField("editedMessage") or message.HasField("protocolMessage"):
                self._change(entries, message, chat)
            else:
                entries.append(self._entry(out, to, group))
        return entries

    def _entry(self, out: Outgoing, to: str, group: str | None) -> dict:
        entry = {"id": out.id, "from": self.fake.line, "to": to, "timestamp": int(out.timestamp),
                 "status": "read" if out.id in self._read_by_phone.get(to, ()) else "delivered"}
        if group:
            entry["group"] = group
        message, context = out.message, None
        if message.HasField("conversation"):
            entry.update(kind="text", text=message.conversation)
        elif message.HasField("extendedTextMessage"):
            entry.update(kind="text", text=message.extendedTextMessage.text)
            context = message.extendedTextMessage.contextInfo
        elif message.HasField("locationMessage"):
            part = message.locationMessage
            location = {"latitude": part.degreesLatitude, "longitude": part.degreesLongitude}
            location.update({k: getattr(part, k) for k in ("name", "address") if part.HasField(k)})
            entry.update(kind="location", location=location)
            context = part.contextInfo
        elif message.HasField("contactMessage"):
            part = message.contactMessage
            entry.update(kind="contact", contact={"name": part.displayName, "vcard": part.vcard})
            context = part.contextInfo
        else:
            field = next(f for f in ("imageMessage", "videoMessage", "audioMessage", "documentMessage")
                         if message.HasField(f))
            part = getattr(message, field)
            kind = field[:-len("Message")]
            if kind == "audio" and part.PTT:
                kind = "voice"
            entry.update(kind=kind, media=self._media(message, field))
            context = part.contextInfo
        if context is not None and context.stanzaID:
            entry["reply_to"] = context.stanzaID
            quoted = _text_of(context.quotedMessage) if context.HasField("quotedMessage") else None
            if quoted is not None:
                entry["quoted_text"] = quoted
        return entry

    def _media(self, message: Message, field: str) -> dict:
        part = getattr(message, field)
        media = {"mimetype": part.mimetype, "ptt": bool(field == "audioMessage" and part.PTT)}
        if field == "documentMessage" and part.HasField("fileName"):
            media["filename"] = part.fileName
        if field != "audioMessage" and part.HasField("caption"):
            media["caption"] = part.caption
        if field in ("audioMessage", "videoMessage") and part.HasField("seconds"):
            media["seconds"] = part.seconds
        only = Message()
        getattr(only, field).CopyFrom(part)
        try:  # the bytes the phone gets: fetched by the reference, checked and decrypted
            media["sha256"] = hashlib.sha256(self.fake.plain_of(only)).hexdigest()
        except _GoError as err:
            media["sha256"] = f"undownloadable: {err}"
        return media

    def _react(self, entries: list[dict], out: Outgoing, to: str, group: str | None) -> None:
        reaction = out.message.reactionMessage
        if not reaction.key.fromMe:  # a message the phone itself sent: the reaction shows on its own
            self._standalone(entries, out, to, group)
            return
        target = next((e for e in entries if e["id"] == reaction.key.ID and e["kind"] != "reaction"), None)
        if target is None:
            return
        reactions = target.setdefault("reactions", {})
        if reaction.text:
            reactions[self.fake.line] = reaction.text
        else:
            reactions.pop(self.fake.line, None)

    def _standalone(self, entries: list[dict], out: Outgoing, to: str, group: str | None) -> None:
        """simnet's ``reaction`` entry: one per reacted message, its emoji the latest; "" removes it."""
        reaction = out.message.reactionMessage
        shown = next((e for e in entries if e["kind"] == "reaction"
                      and e["reaction"]["message_id"] == reaction.key.ID), None)
        if not reaction.text:
            if shown is not None:
                entries.remove(shown)
        elif shown is not None:
            shown["reaction"]["emoji"] = reaction.text
        else:
            entry = {"id": out.id, "from": self.fake.line, "to": to, "timestamp": int(out.timestamp),
                     "status": "delivered", "kind": "reaction",
                     "reaction": {"message_id": reaction.key.ID, "emoji": reaction.text}}
            if group:
                entry["group"] = group
            entries.append(entry)

    def _change(self, entries: list[dict], message: Message, chat: str) -> None:
        protocol = (message.editedMessage.message.protocolMessage if message.HasField("editedMessage")
                    else message.protocolMessage)
        if not (protocol.key.fromMe and protocol.key.remoteJID == chat):
            return  # only the line's own messages, in this chat
        target = next((e for e in entries if e["id"] == protocol.key.ID and e["kind"] != "reaction"), None)
        if target is None:
            return
        if protocol.type == ProtocolMessage.MESSAGE_EDIT and target["kind"] == "text":
            target["text"] = _text_of(protocol.editedMessage)
            target["edited"] = True
        elif protocol.type == ProtocolMessage.REVOKE:
            for field in ("text", "media", "location", "contact", "quoted_text"):
                target.pop(field, None)
            target["revoked"] = True

    def go_offline(self) -> None:
        self.fake.connected = False

    def close(self) -> None:
        pass


def _text_of(message: Message) -> str | None:
    """The text a phone shows for a (quoted or edited) message, if it has one."""
    if message.conversation:
        return message.conversation
    if message.HasField("extendedTextMessage"):
        return message.extendedTextMessage.text
    for field in ("imageMessage", "videoMessage", "documentMessage"):
        if message.HasField(field) and getattr(message, field).caption:
            return getattr(message, field).caption
    return None
