"""One harness per engine, so that one contract suite runs over both (test_contract.py).

Each harness plays the world outside the engine: the phones (send a message, a photo, read, call,
type, post in a group…) and WhatsApp itself (forget media, ban, replace, outdate). SimHarness does it
through simnet's HTTP API; WhatsmeowHarness through FakeGo, with the events whatsmeow would deliver.
"""

import base64
import threading
import time
from pathlib import Path

import neonize.client
import requests
from neonize.events import ReceiptEv
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message, ProtocolMessage
from werkzeug.serving import make_server

from controlplane.core.config import Settings
from simnet.app import create_app
from simnet.network import Network, QrSchedule
from slotworker.engines.sim import SimEngine
from slotworker.engines.whatsmeow import WhatsmeowEngine
from tests.gateway import free_port, wait_for
from tests.slotworker.engines.fakego import FakeGo


class Recorder:
    """The engine's events as the slot runner would get them."""

    def __init__(self):
        self.events: list[tuple] = []

    def __getattr__(self, name):
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args: self.events.append((name, *args))

    def of(self, name: str) -> list[tuple]:
        return [e[1:] for e in self.events if e[0] == name]

    def wait(self, name: str, count: int = 1, timeout: float = 10) -> list[tuple]:
        return wait_for(lambda: len(self.of(name)) >= count and self.of(name), timeout=timeout, what=name)

    def payloads(self, source: str, where=lambda payload: True) -> list[dict]:
        """The payloads of the on_event calls of that source (a whatsmeow event name) that match."""
        return [payload for src, payload in self.of("on_event") if src == source and where(payload)]

    def wait_event(self, source: str, where=lambda payload: True, timeout: float = 10) -> dict:
        """The first payload of that source matching ``where``, once it came."""
        return wait_for(lambda: self.payloads(source, where) and self.payloads(source, where)[0], timeout=timeout,
                        what=f"a {source} event")


class SimHarness:
    name = "sim"

    def __init__(self, tmp_path: Path):
        self.network = Network(tmp_path / "simnet", QrSchedule(first=30, following=10, count=3))
        port = free_port()
        self.server = make_server("127.0.0.1", port, create_app(self.network), threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {"WHIN_DATA_DIR": str(tmp_path), "WHIN_SIMNET_PORT": str(port)}
        self.settings = Settings.from_env(self.env)

    def engine(self, slot_dir: Path, events, **env) -> SimEngine:
        settings = Settings.from_env({**self.env, **env}) if env else self.settings
        return SimEngine("SLOT0001", slot_dir, settings, events)

    def _post(self, path: str, body: dict | None = None) -> dict:
        response = requests.post(f"{self.url}{path}", json=body or {}, timeout=5)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def scan(self, line: str, recorder: Recorder) -> None:
        qr = recorder.wait("on_qr")[-1][0]
        requests.post(f"{self.url}/scan", json={"line": line, "qr": qr}, timeout=5).raise_for_status()

    # --- the phones ---

    def deliver(self, sender: str, line: str, text: str) -> str:
        return self._post("/messages", {"from": sender, "to": line, "text": text})["id"]

    def send_media(self, sender: str, line: str, data: bytes, mimetype: str, filename: str | None = None,
                   caption: str | None = None, ptt: bool = False) -> str:
        media = {"data": base64.b64encode(data).decode(), "mimetype": mimetype, "filename": filename,
                 "caption": caption, "ptt": ptt}
        body = {"from": sender, "to": line, "media": {k: v for k, v in media.items() if v is not None}}
        return self._post("/messages", body)["id"]

    def own_message(self, line: str, to: str, text: str) -> str:
        """The line's own phone writes to someone: every linked device sees it (IsFromMe)."""
        return self._post("/messages", {"from": line, "to": to, "text": text})["id"]

    def react(self, sender: str, line: str, target_id: str, emoji: str) -> str:
        body = {"from": sender, "to": line, "reaction": {"message_id": target_id, "emoji": emoji}}
        return self._post("/messages", body)["id"]

    def edit(self, sender: str, line: str, target_id: str, text: str) -> str:
        body = {"from": sender, "to": line, "edit": {"message_id": target_id, "text": text}}
        return self._post("/messages", body)["id"]

    def revoke(self, sender: str, line: str, target_id: str) -> str:
        return self._post("/messages", {"from": sender, "to": line, "revoke": {"message_id": target_id}})["id"]

    def read(self, phone: str, line: str, ids: list[str]) -> None:
        self._post(f"/phones/{phone}/read", {"line": line, "ids": ids})

    def call(self, phone: str, line: str) -> str:
        return self._post(f"/phones/{phone}/call", {"line": line})["call_id"]

    def hang_up(self, phone: str, line: str, call_id: str) -> None:
        self._post(f"/phones/{phone}/hangup", {"line": line, "call_id": call_id})

    def typing(self, phone: str, line: str, state: str) -> None:
        self._post(f"/phones/{phone}/typing", {"line": line, "state": state})

    def presence(self, phone: str, line: str, available: bool) -> None:
        self._post(f"/phones/{phone}/presence", {"line": line, "available": available})

    def undecryptable(self, phone: str, line: str) -> str:
        return self._post(f"/phones/{phone}/undecryptable", {"line": line})["id"]

    def create_group(self, name: str, members: list[str]) -> str:
        return self._post("/groups", {"name": name, "members": members})["id"]

    def rename_group(self, group_id: str, name: str) -> None:
        self._post(f"/groups/{group_id}", {"name": name})

    def group_message(self, sender: str, group_id: str, text: str) -> str:
        return self._post("/messages", {"from": sender, "group": group_id, "text": text})["id"]

    # --- WhatsApp itself ---

    def forget_media(self) -> None:
        requests.delete(f"{self.url}/media", timeout=5).raise_for_status()

    def ban(self, line: str, seconds: int) -> None:
        self._post(f"/phones/{line}/ban", {"seconds": seconds})

    def replace(self, line: str) -> None:
        self._post(f"/phones/{line}/replace")

    def outdate(self, line: str) -> None:
        self._post(f"/phones/{line}/outdated", {"outdated": True})

    def unlink(self, line: str) -> None:
        requests.post(f"{self.url}/phones/{line}/unlink", timeout=5).raise_for_status()

    def sent_to(self, number: str) -> list[dict]:
        return self.network.inbox(number)

    def go_offline(self) -> None:
        self.server.shutdown()

    def close(self) -> None:
        self.server.shutdown()


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
