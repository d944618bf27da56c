"""The slot protocol: the commands a slot's worker takes from Redis and the replies it writes back.

Both sides use these types: the control plane builds a command and reads its reply (outbound.py,
inbound_media.py, lifecycle.py), the worker reads the command and builds the reply
(slotworker/commands.py). The queue in between (commands.py) carries plain dicts, one JSON object
each, and this is the wire:

  {"op": "logout", "reason": "killed"}                       no reply
  {"op": "send", "sealed": "<sealed.py token>", "reply": "<id>", "deadline": 1764170060.5}
      -> {"ok": true, "id": "3EB0…", "timestamp": 1764170000}  or a failure
  {"op": "paircode", "line": "34666123456", "reply": "<id>", "deadline": 1764170060.5}
      -> {"ok": true, "code": "ABCD-EFGH"}  or a failure
  {"op": "download", "sealed": "<sealed {"message": …}>", "reply": "<id>", "deadline": 1764170060.5}
      -> {"ok": true, "size": 52311}  or a failure, then on
         the same reply list binary frames (media_frame): b"c" + a sealed chunk, …, b"e" + the size in
         ASCII, or b"f" + a failure's JSON midway (the reader then drops what it has: not whole)
  {"op": "send_location" | "send_contact" | "react" | "revoke" | "edit", "sealed": …, "reply": …,
   "deadline": …}  -> {"ok": true, "id": "3EB0…", "timestamp": 1764170000}  or a failure
  {"op": "read" | "presence", "sealed": …, "reply": …, "deadline": …}  -> {"ok": true}  or a failure
  {"op": "exists", "sealed": …, "reply": …, "deadline": …}
      -> {"ok": true, "exists": true, "jid": "34611122233@s.whatsapp.net"}  or a failure
  a failure: {"ok": false, "error": "<machine code>", "detail": "<sentence>"}

``reply`` (where the answer goes) and ``deadline`` (unix seconds; after it nobody reads the answer)
are added by ``CommandQueue.ask``, which is what ``ask`` below calls. The store's Lua scripts push
the logout of a released or evicted slot themselves (scripts.py), in this same shape. A send's
message is sealed (sealed.py) before it becomes a command: its content is never in Redis in the
clear, and these types never hold it unsealed.

A reader ignores fields it does not know (a newer writer may add some); an unknown op, or a
missing or mistyped field, is a ``ProtocolError``. Standard library only: the slot worker imports it.
"""

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class Op(StrEnum):
    LOGOUT = "logout"  # log out from the network, wipe the slot's files, mark the slot clean
    SEND = "send"  # send one message (sealed)
    PAIRCODE = "paircode"  # a code the phone types instead of scanning a QR
    DOWNLOAD = "download"  # a received message's media, decrypted, streamed back in sealed chunks
    # Around a conversation: each sealed like a send (a location, an emoji, an edit are content too).
    SEND_LOCATION = "send_location"  # a location pin
    SEND_CONTACT = "send_contact"  # a contact card
    REACT = "react"  # a reaction on a message of the chat ("" removes it)
    READ = "read"  # mark received messages as read
    PRESENCE = "presence"  # composing / recording / paused in a chat
    REVOKE = "revoke"  # delete a message the line sent, for everyone
    EDIT = "edit"  # replace the text of a message the line sent
    EXISTS = "exists"  # is a number on WhatsApp


# The failures a worker says itself; a send WhatsApp refuses carries the engine's own code instead.
ENGINE_TIMEOUT = "engine_timeout"  # the command's deadline passed before the worker took it
WHATSAPP_UNREACHABLE = "whatsapp_unreachable"
NOT_SUPPORTED = "not_supported"  # this engine cannot do that (e.g. pairing by code)


class ProtocolError(ValueError):
    """A command or a reply this version cannot read."""


class UnknownOp(ProtocolError):
    def __init__(self, op: Any):
        super().__init__(f"unknown op {op!r}")
        self.op = op


def _field(data: dict, name: str, kind: type | tuple[type, ...], default: Any = ..., what: str = "command") -> Any:
    value = data.get(name, default)
    if value is ...:
        raise ProtocolError(f"a {what} without {name!r}")
    if value is not default and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ProtocolError(f"a {what} whose {name!r} is a {type(value).__name__}")
    return value


# --- replies ---


@dataclass(frozen=True)
class Failure:
    error: str  # a machine code: one of the above, or the engine's refusal (e.g. send_failed)
    detail: str = ""

    def to_dict(self) -> dict:
        return {"ok": False, "error": self.error, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict) -> "Failure":
        detail = _field(data, "detail", (str, type(None)), None, "reply")
        return cls(_field(data, "error", str, what="reply"), detail or "")


@dataclass(frozen=True)
class Sent:
    id: str  # WhatsApp's id of the message
    timestamp: int  # unix seconds, as WhatsApp's SendResponse

    def to_dict(self) -> dict:
        return {"ok": True, "id": self.id, "timestamp": self.timestamp}

    @classmethod
    def from_dict(cls, data: dict) -> "Sent":
        return cls(_field(data, "id", str, what="reply"), _field(data, "timestamp", int, what="reply"))


@dataclass(frozen=True)
class Done:
    """Success with nothing to say (a read mark, a typing indicator)."""

    def to_dict(self) -> dict:
        return {"ok": True}

    @classmethod
    def from_dict(cls, data: dict) -> "Done":
        return cls()


@dataclass(frozen=True)
class Existence:
    exists: bool
    jid: str | None  # the JID WhatsApp knows the number by, when it is on WhatsApp

    def to_dict(self) -> dict:
        return {"ok": True, "exists": self.exists, "jid": self.jid}

    @classmethod
    def from_dict(cls, data: dict) -> "Existence":
        exists = data.get("exists")
        if not isinstance(exists, bool):
            raise ProtocolError("an exists reply without a boolean 'exists'")
        return cls(exists, _field(data, "jid", (str, type(None)), None, "reply"))


@dataclass(frozen=True)
class PairingCode:
    code: str  # "ABCD-EFGH"

    def to_dict(self) -> dict:
        return {"ok": True, "code": self.code}

    @classmethod
    def from_dict(cls, data: dict) -> "PairingCode":
        return cls(_field(data, "code", str, what="reply"))


@dataclass(frozen=True)
class MediaHeader:
    """The first answer to a download: the file is there, and its bytes follow. Its type and name
    are not here: the API reads them from the message it sent, so Redis never holds them."""

    size: int | None  # the exact size when the engine knows it before the bytes

    def to_dict(self) -> dict:
        return {"ok": True, "size": self.size}

    @classmethod
    def from_dict(cls, data: dict) -> "MediaHeader":
        return cls(_field(data, "size", (int, type(None)), None, "reply"))


@dataclass(frozen=True)
class MediaChunk:
    sealed: bytes  # Sealer.seal_chunk of the next piece of the file


@dataclass(frozen=True)
class MediaEnd:
    size: int  # every byte was sent, and the file passed its checks


# A download's parts after its header are binary frames: one byte says which, the rest is the part.
# JSON and base64 would cost more than the file's own decryption on files of megabytes.
_CHUNK, _END, _FAILURE = b"c", b"e", b"f"


def chunk_context(reply: str, index: int) -> bytes:
    """What a sealed chunk is bound to: its download's reply list and its place in it."""
    return f"{reply}:{index}".encode("ascii")


def media_frame(part: "MediaChunk | MediaEnd | Failure") -> bytes:
    if isinstance(part, MediaChunk):
        return _CHUNK + part.sealed
    if isinstance(part, MediaEnd):
        return _END + str(part.size).encode("ascii")
    return _FAILURE + json.dumps(part.to_dict()).encode("utf-8")


def read_media_frame(frame: Any) -> "MediaChunk | MediaEnd | Failure":
    """One part after a download's header."""
    if not isinstance(frame, bytes) or not frame:
        raise ProtocolError("a media part is a non-empty binary frame")
    kind, rest = frame[:1], frame[1:]
    if kind == _CHUNK:
        return MediaChunk(rest)
    if kind == _END and rest.isdigit():
        return MediaEnd(int(rest))
    if kind == _FAILURE:
        try:
            return Failure.from_dict(json.loads(rest))
        except ValueError:
            raise ProtocolError("a failure frame that is not JSON") from None
    raise ProtocolError(f"an unknown media frame {kind!r}")


# --- commands ---


@dataclass(frozen=True)
class Command:
    op: ClassVar[Op]
    success: ClassVar[type | None] = None  # the reply's type when it went well; None: no reply
    reply: str | None = field(default=None, kw_only=True)
    deadline: float | None = field(default=None, kw_only=True)

    def to_dict(self) -> dict:
        data = {"op": self.op.value, **self._payload()}
        if self.reply is not None:
            data["reply"] = self.reply
        if self.deadline is not None:
            data["deadline"] = self.deadline
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Command":
        deadline = _field(data, "deadline", (int, float), None)
        envelope = {"reply": _field(data, "reply", str, None),
                    "deadline": None if deadline is None else float(deadline)}
        return cls(**cls._parse(data), **envelope)

    def read_reply(self, data: dict) -> "Reply":
        """The worker's answer to this command, typed."""
        if self.success is None:
            raise ProtocolError(f"a {self.op.value} command has no reply")
        if not isinstance(data, dict):
            raise ProtocolError("a reply is a JSON object")
        return self.success.from_dict(data) if data.get("ok") is True else Failure.from_dict(data)

    def _payload(self) -> dict:
        raise NotImplementedError

    @classmethod
    def _parse(cls, data: dict) -> dict:
        raise NotImplementedError


@dataclass(frozen=True)
class Logout(Command):
    op: ClassVar[Op] = Op.LOGOUT
    reason: str = "logout"  # killed, evicted, cancelled...: said in the worker's log

    def _payload(self) -> dict:
        return {"reason": self.reason}

    @classmethod
    def _parse(cls, data: dict) -> dict:
        return {"reason": _field(data, "reason", str, "logout")}


@dataclass(frozen=True)
class Sealed(Command):
    """A command whose whole content is one sealed JSON object (Sealer.seal): what it says about a
    chat (a text, a pin, an emoji, the numbers it involves) is unreadable on its way."""

    sealed: str

    def _payload(self) -> dict:
        return {"sealed": self.sealed}

    @classmethod
    def _parse(cls, data: dict) -> dict:
        return {"sealed": _field(data, "sealed", str)}


# What each one seals (the slot's commands.py reads it):
#   send           {"to", "text" | "media": {"data" (base64), "mimetype", "filename"?, "caption"?, "ptt"?,
#                   "seconds"?, "thumbnail"? (base64 JPEG)}, "reply"?: {"message_id", "sender"?, "message"?}}
#   send_location  {"to", "location": {"latitude", "longitude", "name"?, "address"?}, "reply"?}
#   send_contact   {"to", "contact": {"name", "vcard"}, "reply"?}
#   react          {"to", "reaction": {"message_id", "emoji", "from_me", "sender"?}}
#   read           {"chat", "message_ids": [...], "sender"?}
#   presence       {"to", "state": "composing" | "recording" | "paused"}
#   revoke         {"to", "message_id"}
#   edit           {"to", "message_id", "text"}
#   exists         {"number"}
# "to"/"chat" is a phone number or a group JID ("120363…@g.us"); "sender" the author's phone number.


@dataclass(frozen=True)
class Send(Sealed):
    op: ClassVar[Op] = Op.SEND
    success: ClassVar[type] = Sent


@dataclass(frozen=True)
class SendLocation(Sealed):
    op: ClassVar[Op] = Op.SEND_LOCATION
    success: ClassVar[type] = Sent


@dataclass(frozen=True)
class SendContact(Sealed):
    op: ClassVar[Op] = Op.SEND_CONTACT
    success: ClassVar[type] = Sent


@dataclass(frozen=True)
class React(Sealed):
    op: ClassVar[Op] = Op.REACT
    success: ClassVar[type] = Sent


@dataclass(frozen=True)
class Read(Sealed):
    op: ClassVar[Op] = Op.READ
    success: ClassVar[type] = Done


@dataclass(frozen=True)
class Presence(Sealed):
    op: ClassVar[Op] = Op.PRESENCE
    success: ClassVar[type] = Done


@dataclass(frozen=True)
class Revoke(Sealed):
    op: ClassVar[Op] = Op.REVOKE
    success: ClassVar[type] = Sent


@dataclass(frozen=True)
class Edit(Sealed):
    op: ClassVar[Op] = Op.EDIT
    success: ClassVar[type] = Sent


@dataclass(frozen=True)
class Exists(Sealed):
    op: ClassVar[Op] = Op.EXISTS
    success: ClassVar[type] = Existence


@dataclass(frozen=True)
class PairCode(Command):
    op: ClassVar[Op] = Op.PAIRCODE
    success: ClassVar[type] = PairingCode
    line: str  # the phone number that will type the code

    def _payload(self) -> dict:
        return {"line": self.line}

    @classmethod
    def _parse(cls, data: dict) -> dict:
        return {"line": _field(data, "line", str)}


@dataclass(frozen=True)
class Download(Sealed):
    op: ClassVar[Op] = Op.DOWNLOAD
    success: ClassVar[type] = MediaHeader
    # sealed: Sealer.seal({"message": <the payload's Message object>})


COMMANDS: dict[Op, type[Command]] = {command.op: command for command in (
    Logout, Send, PairCode, Download, SendLocation, SendContact, React, Read, Presence, Revoke, Edit, Exists)}
Reply = Sent | PairingCode | MediaHeader | Done | Existence | Failure


def parse_command(data: Any) -> Command:
    """A command as popped from the slot's queue; raises UnknownOp or ProtocolError."""
    if not isinstance(data, dict):
        raise ProtocolError("a command is a JSON object")
    try:
        op = Op(data.get("op"))
    except ValueError:
        raise UnknownOp(data.get("op")) from None
    return COMMANDS[op].from_dict(data)


def ask(queue, slot_id: str, command: Command, timeout: float) -> tuple[Reply | None, bool]:
    """``queue.ask`` (commands.py) with typed ends: (the reply, True), or (None, whether the worker
    took the command) when no reply came within ``timeout``."""
    answer, taken = queue.ask(slot_id, command.to_dict(), timeout=timeout)
    return (None if answer is None else command.read_reply(answer)), taken


def ask_stream(queue, slot_id: str, command: Command, timeout: float) -> tuple[Reply | None, bool, str]:
    """``ask`` for a command answered by several replies: also the reply list's id, to read the rest
    from (``queue.wait_reply``) and to drop (``queue.drop_replies``) when done."""
    answer, taken, request_id = queue.ask_stream(slot_id, command.to_dict(), timeout=timeout)
    return (None if answer is None else command.read_reply(answer)), taken, request_id
