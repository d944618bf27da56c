"""A stand-in for neonize's Go library (the CDLL behind ``neonize.client.gocode``), and the network behind it.

neonize's Python code runs for real: its ctypes callbacks, ``Event.execute``, protobuf parsing, the
send and download paths. Only the Go functions are played here, bytes in and bytes out, as
ENGINE-NOTES describes. Events are built as neonize's Go side fills them (goneonize/main.go and
utils/encoder.go) from whatsmeow's: a TemporaryBan's ``Expire`` in seconds, its ``Code`` one of
neonize's TempBanReason values; an edit's ``Message`` the ``protocolMessage`` MESSAGE_EDIT with
``IsEdit`` set (whatsmeow's UnwrapRaw); a revoke the ``protocolMessage`` REVOKE.

Media: ``upload`` encrypts a file as a phone does (controlplane.core.whatsapp_media.encrypt) onto
the fake media server (``media``, by directPath) and returns the ``Message`` that refers to it;
``DownloadAny`` fetches, checks and decrypts it as whatsmeow does and fails with whatsmeow's own
error text (errors.go, download.go). What the line sends (SendMessage, Upload, MarkRead, presences,
IsOnWhatsApp, group info, the LID store) is played by the ``SendDoubles`` mixin (fakego_send.py).

A folder through which a test drives the FakeGo inside another process (a slot worker of a test
gateway): the test writes ``<folder>/<slot id>/<name>.json``; FakeGo takes each file (renamed
``<name>.taken``, holding its pid) before acting on it, one at a time and in name order, as Go hands
events over one at a time. The operations:
  {"op": "pair", "line": "34…"}                       a phone scans the QR code
  {"op": "deliver", "sender": "34…", "text": "…", "id": "…"}   a phone sends a text
  {"op": "media", "sender", "id", "data": <base64>, "mimetype", "filename"?, "caption"?, "ptt"?}
                                                      a phone sends a photo, voice note or document
  {"op": "forget_media"}                              the media server forgets every file
  {"op": "lid", "lid": "<lid user>", "phone": "34…"}  whatsmeow's LID store learns a mapping
  {"op": "join", "number": "34…"}                     that number is on WhatsApp (IsOnWhatsApp: in)
  {"op": "group", "id": "120363…", "members": ["34…"]}  a group on WhatsApp (the line in it if listed)
  {"op": "event", "source": "<whatsmeow event, e.g. Receipt>", "payload": <its JSON>}
                                                      any event (json_format.ParseDict into neonize's class)
"""

import base64
import ctypes
import hashlib
import itertools
import json
import os
import threading
import time
from pathlib import Path

import neonize.events
from google.protobuf import json_format
from neonize.events import (
    EVENT_TO_INT,
    CallOfferEv,
    CallTerminateEv,
    ChatPresenceEv,
    ClientOutdatedEv,
    ConnectedEv,
    GroupInfoEv,
    JoinedGroupEv,
    LoggedOutEv,
    MessageEv,
    PairStatusEv,
    PresenceEv,
    ReceiptEv,
    StreamReplacedEv,
    TemporaryBanEv,
    UndecryptableMessageEv,
)
from neonize.proto.Neonize_pb2 import (
    JID,
    AddressingMode,
    ChatPresence,
    ConnectFailureReason,
    DownloadReturnFunction,
    PairPhoneReturnFunction,
    UndecryptableMessage,
)
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message, ProtocolMessage
from neonize.utils.jid import build_jid

from controlplane.core import whatsapp_media
from tests.slotworker.engines.fakego_send import SendDoubles

CONTROL_ENV = "WHIN_TEST_FAKE_GO_CONTROL"

UNREACHABLE = b'failed to dial whatsapp web websocket: Get "https://web.whatsapp.com/ws/chat": no such host'
# whatsmeow's download errors, as neonize hands them over (err.Error()); HMAC and ciphertext-hash failures
# are wrapped after the last media host was tried.
ERR_404 = "download failed with status code 404"
ERR_HMAC = "failed to download media from last host: invalid media hmac"
ERR_ENC_SHA256 = "failed to download media from last host: hash of media ciphertext doesn't match"
ERR_SHA256 = "hash of media plaintext doesn't match"
ERR_NOTHING = "didn't find any attachments in message"
ERR_NO_URL = "no url present"
ERR_MEDIA_CONN = "failed to refresh media connections: websocket not connected"
# whatsmeow's DownloadAny looks at these top-level fields only, in this order.
DOWNLOADABLE = ("imageMessage", "videoMessage", "audioMessage", "documentMessage", "stickerMessage")
OFFLINE_SOURCES = ("TemporaryBan", "StreamReplaced", "ClientOutdated")


def media_field(mimetype: str) -> str:
    if mimetype.startswith("image/"):
        return "imageMessage"
    if mimetype.startswith("audio/"):
        return "audioMessage"
    if mimetype.startswith("video/"):
        return "videoMessage"
    return "documentMessage"


class FakeGo(SendDoubles):
    def __init__(self, reachable: bool = True, hang: bool = False, echo_logout: bool = True,
                 auto_receipts: bool = True):
        self.reachable = reachable
        self.hang = hang  # like whatsmeow after its codes run out: Neonize() never returns, Stop or not
        # As WhatsApp may: our own remove-companion-device answered with a stream error 401, which
        # whatsmeow dispatches as LoggedOut while Logout() is still running.
        self.echo_logout = echo_logout
        self.auto_receipts = auto_receipts  # the recipient's phone acknowledges what we send: DELIVERED
        self.calls: list[tuple] = []
        self._init_send()  # sent, outbox, uploads, groups, lid_groups, registered, lids, reads, presences
        self.connected = False
        self.line: str | None = None
        self.media: dict[str, bytes] = {}  # the media server: directPath -> encrypted file
        self.media_reachable = True
        self.banned_until = 0.0  # while in the future, every connect is refused with a TemporaryBan
        self.subscribed: set[int] = set()
        self.running = threading.Event()
        self._stopped = threading.Event()
        self._qr_cb = self._event_cb = None
        self._uuid = b""
        self._buffers = []  # keep what we hand to callbacks alive while they read it
        self._emitting = threading.Lock()  # Go hands events over one at a time
        self._paths = itertools.count(1)

    # --- what neonize calls ---

    def Neonize(self, name, uuid, jid, jid_len, new_device, level, qr_cb, login_cb, event_cb, log_cb,
                subscribers, n_subscribers, props, n_props, pair_phone, n_pair_phone, proxy):
        stored = JID.FromString(jid) if jid_len else None
        self.calls.append(("Neonize", name, bool(new_device), stored))
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
            self.line = stored.User if stored else self.line
            if self.banned_until > time.time():  # whatsmeow's connect failure 402
                self.emit(TemporaryBanEv(Code=TemporaryBanEv.TempBanReason.BLOCKED_BY_USERS,
                                         Expire=max(int(self.banned_until - time.time()), 1)))
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

    def DownloadAny(self, uuid, message, size):
        self.calls.append(("DownloadAny",))
        try:
            return DownloadReturnFunction(Binary=self._download(Message.FromString(message))).SerializeToString()
        except _GoError as err:
            return DownloadReturnFunction(Error=str(err)).SerializeToString()

    # --- the media server ---

    def upload(self, plain: bytes, mimetype: str, filename: str | None = None, caption: str | None = None,
               ptt: bool = False) -> Message:
        """A phone's upload: the encrypted file on the media server, and the message referring to it."""
        field = media_field(mimetype)
        encrypted = whatsapp_media.encrypt(plain, whatsapp_media.MEDIA_FIELDS[field])
        path = f"/v/t62.7118-24/{next(self._paths)}_{encrypted.file_enc_sha256.hex()[:16]}.enc?ccb=11-4"
        self.media[path] = encrypted.data
        message = Message()
        media = getattr(message, field)
        media.URL = f"https://mmg.whatsapp.net{path}"
        media.directPath = path
        media.mimetype = mimetype
        media.mediaKey = encrypted.media_key
        media.fileSHA256 = encrypted.file_sha256
        media.fileEncSHA256 = encrypted.file_enc_sha256
        media.fileLength = encrypted.file_length
        media.mediaKeyTimestamp = int(time.time())
        if field == "audioMessage":
            media.PTT = ptt
        elif caption:
            media.caption = caption
        if field == "documentMessage" and filename:
            media.fileName = filename
        return message

    def forget_media(self) -> None:
        self.media.clear()

    def plain_of(self, message: Message) -> bytes:
        """What the recipient's phone gets from the message's media: fetched, checked and decrypted by
        the key family of the message's own field (a file uploaded as another kind fails its MAC)."""
        return self._download(message)

    def _download(self, message: Message) -> bytes:
        field = next((f for f in DOWNLOADABLE if message.HasField(f)), None)
        if field is None:
            raise _GoError(ERR_NOTHING)
        media = getattr(message, field)
        if not media.directPath:
            raise _GoError(ERR_NO_URL)
        if not self.media_reachable:
            raise _GoError(ERR_MEDIA_CONN)
        data = self.media.get(media.directPath)
        if data is None:
            raise _GoError(ERR_404)
        if hashlib.sha256(data).digest() != media.fileEncSHA256:
            raise _GoError(ERR_ENC_SHA256)
        try:
            plain = whatsapp_media.decrypt(data, media.mediaKey, whatsapp_media.MEDIA_FIELDS[field])
        except whatsapp_media.MediaCorrupt as err:
            raise _GoError(ERR_HMAC if "MAC" in str(err) else f"failed to decrypt file: {err}") from None
        if hashlib.sha256(plain).digest() != media.fileSHA256:
            raise _GoError(ERR_SHA256)
        return plain

    # --- what the network does, through the same callbacks Go uses ---

    def show_qr(self, text: str) -> None:
        buffer = ctypes.create_string_buffer(text.encode())
        self._buffers.append(buffer)
        self._qr_cb(self._uuid, ctypes.addressof(buffer))

    def emit(self, event) -> None:
        """Hand an event to neonize, if it subscribed to its type (Go checks its subscribers for each)."""
        if EVENT_TO_INT[type(event)] not in self.subscribed:
            self.calls.append(("unsubscribed", type(event).__name__))
            return
        data = event.SerializePartialToString()  # proto2 required fields: as Go, we send what we have
        buffer = ctypes.create_string_buffer(data, len(data))
        with self._emitting:
            self._buffers.append(buffer)
            self._event_cb(self._uuid, ctypes.addressof(buffer), len(data), EVENT_TO_INT[type(event)])

    def emit_json(self, source: str, payload: dict) -> None:
        """Any whatsmeow event from its JSON ("Receipt", {...}), as neonize's class of that name."""
        if source in OFFLINE_SOURCES:
            self.connected = False  # whatsmeow drops the connection and does not reconnect
        self.emit(json_format.ParseDict(payload, getattr(neonize.events, f"{source}Ev")()))

    def connect_now(self) -> None:
        self.connected = True
        self.emit(ConnectedEv(status=True))

    def pair(self, line: str) -> None:
        jid = build_jid(line)
        jid.Device = 7
        self.line = line
        self.emit(PairStatusEv(ID=jid, Status=PairStatusEv.PStatus.SUCCESS, BusinessName="", Platform="android"))
        self.connect_now()

    def message_event(self, sender: str, message: Message, message_id: str, *, group: str | None = None,
                      lid: str | None = None, from_me: bool = False) -> MessageEv:
        """A Message event as whatsmeow fills it: in a group the sender may be a bare @lid (no SenderAlt)."""
        self.registered.add(sender)  # a phone that writes is on WhatsApp
        ev = MessageEv(IsEphemeral=False, IsViewOnce=False, IsViewOnceV2=False)
        source = ev.Info.MessageSource
        source.Sender.CopyFrom(build_jid(lid, server="lid") if lid else build_jid(sender))
        source.Chat.CopyFrom(build_jid(group, server="g.us") if group else build_jid(sender))
        source.IsGroup = bool(group)
        source.IsFromMe = from_me
        if lid:
            source.AddressingMode = AddressingMode.LID
        ev.Info.ID = message_id
        ev.Info.Timestamp = int(time.time() * 1000)  # MessageInfo.Timestamp: Unix milliseconds
        media = next((f for f in DOWNLOADABLE if message.HasField(f)), None)
        ev.Info.Type = "media" if media else "reaction" if message.HasField("reactionMessage") else "text"
        if media:
            ev.Info.MediaType = "ptt" if media == "audioMessage" and message.audioMessage.PTT else media[:-7]
        if message.HasField("protocolMessage"):  # whatsmeow's EditAttribute: "1" an edit, "7" the sender's revoke
            edit = message.protocolMessage.type == ProtocolMessage.MESSAGE_EDIT
            ev.IsEdit = edit
            ev.Info.Edit = "1" if edit else "7"
        ev.Message.CopyFrom(message)
        ev.Raw.CopyFrom(message)  # neonize's Raw: whatsmeow's unwrapped evt.Message, the same here
        return ev

    def deliver(self, sender: str, text: str, message_id: str, lid: bool = False) -> None:
        ev = self.message_event(sender, Message(conversation=text), message_id)
        if lid:  # a sender known only by its @lid, the phone number alongside
            ev.Info.MessageSource.Sender.CopyFrom(build_jid("201234567890123", server="lid"))
            ev.Info.MessageSource.SenderAlt.CopyFrom(build_jid(sender))
        self.emit(ev)

    def receipt(self, phone: str, ids: list[str], kind) -> None:
        ev = ReceiptEv(MessageIDs=ids, Timestamp=int(time.time()), Type=kind)  # seconds: encoder's .Unix()
        ev.MessageSource.Chat.CopyFrom(build_jid(phone))
        ev.MessageSource.Sender.CopyFrom(build_jid(phone))
        ev.MessageSource.IsFromMe = False
        ev.MessageSource.IsGroup = False
        self.emit(ev)

    def call(self, phone: str, call_id: str, terminate: bool = False) -> None:
        ev = CallTerminateEv(reason="") if terminate else CallOfferEv()
        meta = ev.basicCallMeta
        meta.timestamp, meta.callID = int(time.time()), call_id
        getattr(meta, "from").CopyFrom(build_jid(phone))  # "from": a Python keyword
        meta.callCreator.CopyFrom(build_jid(phone))
        if not terminate:
            ev.callRemoteMeta.remotePlatform, ev.callRemoteMeta.remoteVersion = "android", "2.25.21.78"
        self.emit(ev)

    def chat_presence(self, phone: str, state: str) -> None:
        """composing / paused / recording (whatsmeow: COMPOSING with media AUDIO)."""
        ev = ChatPresenceEv(State=ChatPresence.PAUSED if state == "paused" else ChatPresence.COMPOSING)
        if state == "recording":
            ev.Media = ChatPresence.AUDIO
        ev.MessageSource.Chat.CopyFrom(build_jid(phone))
        ev.MessageSource.Sender.CopyFrom(build_jid(phone))
        ev.MessageSource.IsFromMe = ev.MessageSource.IsGroup = False
        self.emit(ev)

    def presence(self, phone: str, available: bool) -> None:
        ev = PresenceEv(Unavailable=not available, LastSeen=-62135596800 if available else int(time.time()))
        ev.From.CopyFrom(build_jid(phone))  # LastSeen: Go's zero time when WhatsApp sent none
        self.emit(ev)

    def joined_group(self, group: str, name: str, owner_lid: str, members: dict[str, str]) -> None:
        """The line was put in a LID-addressed group; ``members``: phone -> lid user."""
        self.groups[group] = set(members)
        self.lid_groups.add(group)
        self.registered.update(members)
        self.lids.update({lid: phone for phone, lid in members.items()})  # whatsmeow learns them from the group
        ev = JoinedGroupEv(Type="new", Reason="", CreateKey="")
        info = ev.GroupInfo
        info.JID.CopyFrom(build_jid(group, server="g.us"))
        info.OwnerJID.CopyFrom(build_jid(owner_lid, server="lid"))
        info.GroupName.Name, info.GroupName.NameSetAt = name, int(time.time())
        info.GroupCreated = float(int(time.time()))
        for phone, lid in members.items():
            participant = info.Participants.add(IsAdmin=lid == owner_lid, IsSuperAdmin=lid == owner_lid)
            participant.JID.CopyFrom(build_jid(lid, server="lid"))
            participant.LID.CopyFrom(build_jid(lid, server="lid"))
            participant.PhoneNumber.CopyFrom(build_jid(phone))
        ev.Sender.CopyFrom(build_jid(owner_lid, server="lid"))
        self.emit(ev)

    def group_renamed(self, group: str, name: str, by_lid: str) -> None:
        ev = GroupInfoEv(Timestamp=int(time.time()))
        ev.JID.CopyFrom(build_jid(group, server="g.us"))
        ev.Sender.CopyFrom(build_jid(by_lid, server="lid"))
        ev.Name.Name, ev.Name.NameSetAt = name, int(time.time())
        ev.Name.NameSetBy.CopyFrom(build_jid(by_lid, server="lid"))
        self.emit(ev)

    def undecryptable(self, phone: str, message_id: str) -> None:
        ev = UndecryptableMessageEv(IsUnavailable=False, DecryptFailMode=UndecryptableMessage.DECRYPT_FAIL_SHOW)
        ev.Info.MessageSource.Chat.CopyFrom(build_jid(phone))
        ev.Info.MessageSource.Sender.CopyFrom(build_jid(phone))
        ev.Info.ID, ev.Info.Type, ev.Info.Timestamp = message_id, "text", int(time.time() * 1000)
        self.emit(ev)

    def ban(self, seconds: int, code=TemporaryBanEv.TempBanReason.SEND_TO_TOO_MANY_PEOPLE) -> None:
        """WhatsApp's connect failure 402: whatsmeow stops, expecting the disconnect (no auto-reconnect)."""
        self.banned_until = time.time() + seconds
        self.connected = False
        self.emit(TemporaryBanEv(Code=code, Expire=seconds))  # neonize: int64(Expire.Seconds())

    def replace(self) -> None:
        """Another client took the session (stream error "replaced"): whatsmeow does not reconnect."""
        self.connected = False
        self.emit(StreamReplacedEv())

    def outdated(self) -> None:
        """Connect failure 405: whatsmeow's WhatsApp Web version is too old; it does not reconnect."""
        self.connected = False
        self.emit(ClientOutdatedEv())

    def _delivered(self, phone: str, message_id: str) -> None:
        if self.connected and self.running.is_set():
            self.receipt(phone, [message_id], ReceiptEv.ReceiptType.DELIVERED)

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
                self._act(command)

    def _act(self, command: dict) -> None:
        op = command["op"]
        if op == "pair":
            self.pair(command["line"])
        elif op == "deliver":
            self.deliver(command["sender"], command["text"], command["id"])
        elif op == "media":
            message = self.upload(base64.b64decode(command["data"]), command["mimetype"], command.get("filename"),
                                  command.get("caption"), bool(command.get("ptt")))
            self.emit(self.message_event(command["sender"], message, command["id"]))
        elif op == "forget_media":
            self.forget_media()
        elif op == "lid":
            self.lids[command["lid"]] = command["phone"]
        elif op == "join":
            self.registered.add(command["number"])
        elif op == "group":
            self.groups[command["id"].split("@")[0]] = set(command["members"])
            self.registered.update(command["members"])
        elif op == "event":
            self.emit_json(command["source"], command["payload"])

    def unlink(self) -> None:
        self.connected = False
        self.emit(LoggedOutEv(OnConnect=False, Reason=ConnectFailureReason.LOGGED_OUT))


class _GoError(Exception):
    """What whatsmeow's function returned as its error; FakeGo answers it as the error field."""
