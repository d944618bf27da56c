"""The whatsmeow engine's world for the contract suite: FakeGo at neonize's ctypes boundary, with
the events whatsmeow would deliver."""

import time
from pathlib import Path

import neonize.client
from neonize.events import ReceiptEv
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message, ProtocolMessage

from controlplane.core.config import Settings
from slotworker.engines.whatsmeow import WhatsmeowEngine
from tests.slotworker.engines.fakego import FakeGo
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
        lid = str(10**14 + int(phone) % (9 * 10**14))
        self.fake.lids[lid] = phone
        return lid

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
        group_id = f"120363{time.time_ns() % 10**12:012d}"
        lids = {phone: self._lid(phone) for phone in members}
        self._owners[group_id] = lids[members[0]]
        self.fake.joined_group(group_id, name, lids[members[0]], lids)
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

    def sent_to(self, number: str) -> list[dict]:
        return [{"text": m.conversation} if m.conversation else {"media": m} for to, m in self.fake.sent
                if to == number]

    def go_offline(self) -> None:
        self.fake.connected = False

    def close(self) -> None:
        pass
