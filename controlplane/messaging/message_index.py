"""The message index: what the gateway knows about each message of a line's chats, metadata only.

WhatsApp's calls that act on a message (a reaction, a reply's quote, a read mark, a revoke, an
edit) need facts the integrator does not send and the gateway keeps no copy to read: who wrote the
message, whether it is the line's own, when, and whether it is a text. The slot records every
message it forwards (``record_event``, from the envelope), the control plane every message a line
sends (``record_sent``, from the slot's ``Sent`` reply), each for WHIN_MESSAGE_INDEX_TTL.

No content, ever: not a word of a text, nor its length. A record is sealed (sealed.py) since its
author is a phone number, and its key names the chat and the id only through a hash:
``whin:msg:<line>:<sha256(chat, id)>`` (keys.message_key), so Redis's files show neither.
A missing record means "not seen on this line's chat within the TTL": the API refuses to act
on it (``unknown_message``) rather than guess.
"""

import hashlib
import time
from dataclasses import dataclass

from controlplane.core.keys import message_key
from controlplane.core.sealed import Sealer

GROUP_SUFFIX = "@g.us"
PN_SUFFIX = "@s.whatsapp.net"
# whatsmeow's MessageInfo.Timestamp comes through neonize in milliseconds; a Sent reply in seconds.
_MS_THRESHOLD = 10**11
# Message kinds that act on another message: they are not messages a caller could act on.
_NOT_MESSAGES = ("protocolMessage", "reactionMessage", "editedMessage", "encReactionMessage",
                 "pollUpdateMessage", "keepInChatMessage", "senderKeyDistributionMessage")
_TEXTS = ("conversation", "extendedTextMessage")


@dataclass(frozen=True)
class IndexedMessage:
    from_me: bool  # sent by the line (through the API or from its phone)
    sender: str | None  # the author's phone number (the line's own for from_me); None: unknown
    timestamp: int  # unix seconds
    text: bool  # a text message (the only kind WhatsApp lets its author edit)


def chat_of(jid: str | None) -> str | None:
    """A chat as the API names it: a phone number, or a group's JID (``120363…@g.us``)."""
    if not jid:
        return None
    if jid.endswith(PN_SUFFIX):
        return jid[: -len(PN_SUFFIX)].split(":")[0]
    return jid if jid.endswith(GROUP_SUFFIX) else None  # a @lid chat whose number is unknown: not indexed


def is_group(chat: str) -> bool:
    return chat.endswith(GROUP_SUFFIX)


def _seconds(value) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number // 1000 if number > _MS_THRESHOLD else number


def _id_hash(chat: str, message_id: str) -> str:
    return hashlib.sha256(f"{chat}\0{message_id}".encode()).hexdigest()[:32]


class MessageIndex:
    def __init__(self, client, sealer: Sealer, ttl: float):
        self.redis = client
        self.sealer = sealer
        self.ttl = max(int(ttl), 1)

    def _key(self, line: str, chat: str, message_id: str) -> str:
        return message_key(line, _id_hash(chat, message_id))

    def record(self, line: str, chat: str, message_id: str, message: IndexedMessage, pipeline=None) -> None:
        sealed = self.sealer.seal({"m": int(message.from_me), "s": message.sender, "t": message.timestamp,
                                   "x": int(message.text)})
        (pipeline or self.redis).set(self._key(line, chat, message_id), sealed, ex=self.ttl)

    def record_sent(self, line: str, to: str, message_id: str, timestamp: int, text: bool) -> None:
        """A message the line just sent through the API (the slot's Sent reply)."""
        self.record(line, to, message_id, IndexedMessage(True, line, _seconds(timestamp) or int(time.time()), text))

    def record_event(self, line: str, fields: dict, payload: dict, pipeline=None) -> bool:
        """A Message event the slot forwards (``fields``: its envelope's message_id, chat, from,
        from_me); False when it is not a message one can act on (a reaction, an edit, a deletion).
        With ``pipeline``, written in that pipeline's step (the event's own, events.Outbox)."""
        message = payload.get("Message") or {}
        chat, message_id = chat_of(fields.get("chat")), fields.get("message_id")
        if not chat or not message_id or any(kind in message for kind in _NOT_MESSAGES):
            return False
        from_me = bool(fields.get("from_me"))
        info = payload.get("Info") or {}
        timestamp = _seconds(info.get("Timestamp")) or int(time.time())
        sender = line if from_me else fields.get("from")
        self.record(line, chat, message_id, IndexedMessage(from_me, sender, timestamp,
                                                           any(kind in message for kind in _TEXTS)), pipeline)
        return True

    def find(self, line: str, chat: str, message_id: str) -> IndexedMessage | None:
        sealed = self.redis.get(self._key(line, chat, message_id))
        if sealed is None:
            return None
        if isinstance(sealed, bytes):
            sealed = sealed.decode("ascii")
        try:
            data = self.sealer.unseal(sealed)
        except ValueError:  # sealed with a key since rotated: as good as unknown
            return None
        return IndexedMessage(bool(data.get("m")), data.get("s"), int(data.get("t") or 0), bool(data.get("x")))

    def forget(self, line: str, chat: str, message_id: str) -> None:
        """A revoked message: nothing left to react to, edit or revoke."""
        self.redis.delete(self._key(line, chat, message_id))
