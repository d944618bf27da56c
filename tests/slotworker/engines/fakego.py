"""A stand-in for neonize's Go library (the CDLL behind ``neonize.client.gocode``), and the network behind it.

neonize's Python code runs for real: its ctypes callbacks, ``Event.execute``, protobuf parsing, the
send path. Only the Go functions are played here, bytes in and bytes out, as ENGINE-NOTES describes.
"""

import ctypes
import json
import os
import threading
import time
from pathlib import Path

from neonize.events import EVENT_TO_INT, ConnectedEv, LoggedOutEv, MessageEv, PairStatusEv
from neonize.proto.Neonize_pb2 import (
    JID,
    ConnectFailureReason,
    PairPhoneReturnFunction,
    SendMessageReturnFunction,
    SendResponse,
    UploadResponse,
    UploadReturnFunction,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message
from neonize.utils.jid import build_jid

# A folder through which a test drives the FakeGo inside another process (a slot worker of a test
# gateway): it writes <folder>/<slot id>/<name>.json, {"op": "pair", "line": ...} or {"op": "deliver",
# "sender": ..., "text": ..., "id": ...}; FakeGo takes each file (renamed <name>.taken, holding its pid)
# before acting on it, one at a time and in name order, as Go hands events over one at a time.
CONTROL_ENV = "WHIN_TEST_FAKE_GO_CONTROL"

UNREACHABLE = b'failed to dial whatsapp web websocket: Get "https://web.whatsapp.com/ws/chat": no such host'


class FakeGo:
    def __init__(self, reachable: bool = True, hang: bool = False, echo_logout: bool = True):
        self.reachable = reachable
        self.hang = hang  # like whatsmeow after its codes run out: Neonize() never returns, Stop or not
        # As WhatsApp may: our own remove-companion-device answered with a stream error 401, which
        # whatsmeow dispatches as LoggedOut while Logout() is still running.
        self.echo_logout = echo_logout
        self.calls: list[tuple] = []
        self.sent: list[tuple[str, Message]] = []
        self.connected = False
        self.running = threading.Event()
        self._stopped = threading.Event()
        self._qr_cb = self._event_cb = None
        self._uuid = b""
        self._buffers = []  # keep what we hand to callbacks alive while they read it

    # --- what neonize calls ---

    def Neonize(self, name, uuid, jid, jid_len, new_device, level, qr_cb, login_cb, event_cb, log_cb,
                subscribers, n_subscribers, props, n_props, pair_phone, n_pair_phone, proxy):
        self.calls.append(("Neonize", name, bool(new_device), JID.FromString(jid) if jid_len else None))
        if not name.startswith(b"postgres"):
            open(name.decode(), "ab").close()  # as Go does: the sqlite store appears on connect
        self.subscribed = set(bytes(subscribers))
        if not self.reachable:
            return UNREACHABLE
        self._uuid, self._qr_cb, self._event_cb = uuid, qr_cb, event_cb
        self._stopped.clear()
        self.running.set()
        if os.environ.get(CONTROL_ENV):
            folder = Path(os.environ[CONTROL_ENV]) / uuid.decode()
            threading.Thread(target=self._follow, args=(folder,), daemon=True, name="fakego-control").start()
        if new_device:
            self.show_qr("2@fake-ref-1,fake-noise,fake-identity,fake-adv,1")
        else:
            self.connect_now()
        while not self._stopped.wait(0.05) or self.hang:
            if self.hang and self._stopped.is_set():
                time.sleep(0.05)
        self.running.clear()
        return b""

    def Stop(self, uuid):
        self.calls.append(("Stop",))
        self._stopped.set()
        return b""

    def Disconnect(self, uuid):
        self.calls.append(("Disconnect",))
        self.connected = False

    def IsConnected(self, uuid):
        return self.connected

    def IsLoggedIn(self, uuid):
        return self.connected

    def Logout(self, uuid):
        self.calls.append(("Logout",))
        if not self.connected:
            return b"client is nil"
        if self.echo_logout:
            self.connected = False
            self.emit(LoggedOutEv(OnConnect=False, Reason=ConnectFailureReason.LOGGED_OUT))
        return b""

    def PairPhone(self, uuid, payload, size):
        self.calls.append(("PairPhone",))
        return PairPhoneReturnFunction(Code="ABCD-EFGH").SerializePartialToString()

    def SendMessage(self, uuid, to, to_len, message, message_len):
        print("SendMessage: Go writes lines like this to stdout", flush=True)  # never data for us
        target, sent = JID.FromString(to), Message.FromString(message)
        self.sent.append((target.User, sent))
        response = SendResponse(ID=f"3EB0FAKE{len(self.sent):08d}", Timestamp=int(time.time()), ServerID=0)
        return SendMessageReturnFunction(SendResponse=response).SerializePartialToString()

    def Upload(self, uuid, data, size, media_type):
        self.calls.append(("Upload", size, media_type))
        return UploadReturnFunction(UploadResponse=UploadResponse(
            url="https://mmg.whatsapp.net/fake", DirectPath="/v/fake", Handle="", MediaKey=b"k" * 32,
            FileEncSHA256=b"e" * 32, FileSHA256=b"s" * 32, FileLength=size)).SerializePartialToString()

    # --- what the network does, through the same callbacks Go uses ---

    def show_qr(self, text: str) -> None:
        buffer = ctypes.create_string_buffer(text.encode())
        self._buffers.append(buffer)
        self._qr_cb(self._uuid, ctypes.addressof(buffer))

    def emit(self, event) -> None:
        data = event.SerializePartialToString()  # proto2 required fields: as Go, we send what we have
        buffer = ctypes.create_string_buffer(data, len(data))
        self._buffers.append(buffer)
        self._event_cb(self._uuid, ctypes.addressof(buffer), len(data), EVENT_TO_INT[type(event)])

    def connect_now(self) -> None:
        self.connected = True
        self.emit(ConnectedEv(status=True))

    def pair(self, line: str) -> None:
        jid = build_jid(line)
        jid.Device = 7
        self.emit(PairStatusEv(ID=jid, Status=PairStatusEv.PStatus.SUCCESS, BusinessName="", Platform="android"))
        self.connect_now()

    def deliver(self, sender: str, text: str, message_id: str, lid: bool = False) -> None:
        ev = MessageEv()
        source = ev.Info.MessageSource
        if lid:  # a sender known only by its @lid, the phone number alongside
            source.Sender.CopyFrom(build_jid("201234567890123", server="lid"))
            source.SenderAlt.CopyFrom(build_jid(sender))
        else:
            source.Sender.CopyFrom(build_jid(sender))
        source.Chat.CopyFrom(source.Sender)
        ev.Info.ID = message_id
        ev.Info.Timestamp = int(time.time() * 1000)
        ev.Message.conversation = text
        self.emit(ev)

    def _follow(self, folder: Path) -> None:
        """Act on the test's commands while this connect() runs."""
        while not self._stopped.wait(0.05):
            for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                taken = path.with_suffix(".taken")
                try:
                    command = json.loads(path.read_text())
                    os.replace(path, taken)
                except (OSError, ValueError):
                    continue  # not fully there yet, or taken meanwhile
                taken.write_text(str(os.getpid()))
                if command["op"] == "pair":
                    self.pair(command["line"])
                elif command["op"] == "deliver":
                    self.deliver(command["sender"], command["text"], command["id"])

    def unlink(self) -> None:
        self.connected = False
        self.emit(LoggedOutEv(OnConnect=False, Reason=ConnectFailureReason.LOGGED_OUT))
