"""The slot's commands, read and answered through the slot protocol (controlplane/core/protocol.py).

The command loop (runner.py) pops each command from the slot's Redis list and hands it here, on the
main thread. One handler per op: ``logout`` tears the slot down (no reply), ``paircode`` and each
op of a conversation (send, send_location, send_contact, react, read, presence, revoke, edit,
exists: unseal, one engine method, its reply) ask the engine and reply, ``download`` streams a
media file back from a thread (downloads.py).
A reply is written for as long as its caller waits (the command's deadline), Redis outages
included; after that nobody reads it. An unknown or unreadable command is logged by its op alone
and dropped: its content (a sealed message) never reaches the log.
"""

import base64
import logging
import time
from functools import partial

from controlplane.core import protocol
from controlplane.core.sealed import Sealer
from slotworker.downloads import Downloads
from slotworker.engines import handoff
from slotworker.engines.base import (
    Contact,
    EngineUnavailable,
    Location,
    NotSupported,
    OutboundMedia,
    Quote,
    Reaction,
    SendRefused,
)
from slotworker.outage import GAVE_UP, Patience

log = logging.getLogger(__name__)

REPLY_WAIT_SECONDS = 60  # how long a reply is retried when its command carries no deadline


class CommandHandler:
    def __init__(self, slot_id: str, store, engine, sealer: Sealer, patience: Patience, teardown,
                 media_max_bytes: int):
        self.slot_id = slot_id
        self.store = store
        self.engine = engine
        self.sealer = sealer
        self.patience = patience
        self.teardown = teardown  # the runner's: log out, wipe, end the loop
        self.downloads = Downloads(slot_id, store, engine, sealer, patience, media_max_bytes)
        self.handlers = {
            protocol.Op.LOGOUT: self.logout,
            protocol.Op.SEND: self.send,
            protocol.Op.PAIRCODE: self.pair_code,
            protocol.Op.DOWNLOAD: self.download,
            protocol.Op.SEND_LOCATION: self.send_location,
            protocol.Op.SEND_CONTACT: self.send_contact,
            protocol.Op.REACT: self.react,
            protocol.Op.READ: self.read,
            protocol.Op.PRESENCE: self.presence,
            protocol.Op.REVOKE: self.revoke,
            protocol.Op.EDIT: self.edit,
            protocol.Op.EXISTS: self.exists,
        }

    def handle(self, raw: dict) -> None:
        """One command as popped from Redis."""
        try:
            command = protocol.parse_command(raw)
        except protocol.UnknownOp as err:
            log.warning("slot %s: unknown command %r ignored", self.slot_id, err.op)
            return
        except protocol.ProtocolError as err:
            op = raw.get("op") if isinstance(raw, dict) else None
            log.warning("slot %s: unreadable %s command ignored (%s)", self.slot_id, op, err)
            return
        answer = self.handlers[command.op](command)
        if answer is not None:
            self._reply(command, answer)

    def _reply(self, command: protocol.Command, answer: protocol.Reply) -> None:
        """The answer, for as long as the caller waits for it (its deadline): after that nobody reads it."""
        if command.reply is None:
            log.warning("slot %s: a %s command without a reply address; answer dropped", self.slot_id, command.op)
            return
        deadline = command.deadline if command.deadline is not None else time.time() + REPLY_WAIT_SECONDS
        outcome = self.patience.retry("a reply", lambda: self.store.push_reply(command.reply, answer.to_dict()),
                                      until=deadline)
        if outcome is GAVE_UP:
            log.warning("slot %s: a %s reply was not delivered: Redis was unreachable until its caller stopped "
                        "waiting", self.slot_id, command.op)

    # --- one handler per op ---

    def logout(self, command: protocol.Logout) -> None:
        self.teardown(command.reason)

    # Each handler reads the unsealed request into the engine's types first (``build``), then calls the
    # engine (the partial it returns) outside that reading: an error after WhatsApp took a message is
    # never mistaken for an unreadable request the caller could safely retry.

    def send(self, command: protocol.Send) -> protocol.Reply:
        """Send one message; the answer names the outcome and WhatsApp's id, never the content."""
        def build(message: dict):
            media = message.get("media")
            return partial(self.engine.send, message["to"], text=message.get("text"),
                           media=media and _media(media), reply=_quote(message))
        return self._conversation(command, build)

    def send_location(self, command: protocol.SendLocation) -> protocol.Reply:
        def build(message: dict):
            place = message["location"]
            location = Location(float(place["latitude"]), float(place["longitude"]), place.get("name"),
                                place.get("address"))
            return partial(self.engine.send_location, message["to"], location, reply=_quote(message))
        return self._conversation(command, build)

    def send_contact(self, command: protocol.SendContact) -> protocol.Reply:
        def build(message: dict):
            card = message["contact"]
            return partial(self.engine.send_contact, message["to"], Contact(card["name"], card["vcard"]),
                           reply=_quote(message))
        return self._conversation(command, build)

    def react(self, command: protocol.React) -> protocol.Reply:
        def build(message: dict):
            given = message["reaction"]
            reaction = Reaction(given["message_id"], given["emoji"], bool(given["from_me"]), given.get("sender"))
            return partial(self.engine.react, message["to"], reaction)
        return self._conversation(command, build)

    def read(self, command: protocol.Read) -> protocol.Reply:
        return self._conversation(command, lambda message: partial(
            self.engine.mark_read, message["chat"], list(message["message_ids"]), message.get("sender")))

    def presence(self, command: protocol.Presence) -> protocol.Reply:
        return self._conversation(command, lambda message: partial(self.engine.send_presence, message["to"],
                                                                   message["state"]))

    def revoke(self, command: protocol.Revoke) -> protocol.Reply:
        return self._conversation(command, lambda message: partial(self.engine.revoke, message["to"],
                                                                   message["message_id"]))

    def edit(self, command: protocol.Edit) -> protocol.Reply:
        return self._conversation(command, lambda message: partial(self.engine.edit, message["to"],
                                                                   message["message_id"], message["text"]))

    def exists(self, command: protocol.Exists) -> protocol.Reply:
        return self._conversation(command, lambda message: partial(self.engine.exists, message["number"]))

    def _conversation(self, command: protocol.Sealed, build) -> protocol.Reply:
        """Unseal, read the request, act through the engine, and answer as the op's reply type says: a
        failure by its code (an unreadable request, the engine's refusal, WhatsApp out of reach, an op
        this engine lacks, an engine error whose outcome is unknown), never the content."""
        if command.deadline is not None and time.time() > command.deadline:
            return protocol.Failure(protocol.ENGINE_TIMEOUT, "The request expired before the slot took it.")
        try:
            message = self.sealer.unseal(command.sealed)
        except ValueError:
            return protocol.Failure("send_failed", "The request does not open with this slot's WHIN_QUEUE_KEY.")
        try:
            act = build(message)
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # say that it is unreadable, not what
            log.warning("slot %s: a malformed %s request (%s)", self.slot_id, command.op, type(err).__name__)
            return protocol.Failure("send_failed", "The slot could not read the request; nothing was sent.")
        try:
            with handoff.deadline(command.deadline):  # checked again as the engine hands it over
                result = act()
        except handoff.HandoffExpired:
            return protocol.Failure(protocol.ENGINE_TIMEOUT, "The request expired before it reached WhatsApp; "
                                                             "nothing was sent.")
        except EngineUnavailable as err:
            return protocol.Failure(protocol.WHATSAPP_UNREACHABLE, str(err))
        except SendRefused as err:
            return protocol.Failure(err.code, err.detail)
        except NotSupported as err:
            return protocol.Failure(protocol.NOT_SUPPORTED, str(err))
        except Exception as err:  # the engine broke midway: WhatsApp may have taken it, so not "failed"
            log.warning("slot %s: the engine failed during a %s (%s)", self.slot_id, command.op, type(err).__name__)
            return protocol.Failure(protocol.ENGINE_TIMEOUT, "The slot's engine failed while doing it: it may have "
                                                             "been done; check before trying again.")
        if command.success is protocol.Sent:
            return protocol.Sent(id=result.id, timestamp=result.timestamp)
        if command.success is protocol.Existence:
            return protocol.Existence(exists=bool(result.exists), jid=result.jid)
        return protocol.Done()

    def pair_code(self, command: protocol.PairCode) -> protocol.PairingCode | protocol.Failure:
        try:
            return protocol.PairingCode(self.engine.pair_code(command.line))
        except NotSupported as err:
            return protocol.Failure(protocol.NOT_SUPPORTED, str(err))
        except EngineUnavailable as err:
            return protocol.Failure(protocol.WHATSAPP_UNREACHABLE, str(err))

    def download(self, command: protocol.Download) -> None:
        if command.reply is None:
            log.warning("slot %s: a download command without a reply address; dropped", self.slot_id)
            return
        self.downloads.start(command)  # it replies itself, part by part


def _media(media: dict) -> OutboundMedia:
    thumbnail = media.get("thumbnail")
    return OutboundMedia(data=base64.b64decode(media["data"]), mimetype=media["mimetype"],
                         filename=media.get("filename"), caption=media.get("caption"), ptt=bool(media.get("ptt")),
                         seconds=media.get("seconds"), thumbnail=thumbnail and base64.b64decode(thumbnail))


def _quote(message: dict) -> Quote | None:
    """The message a reply quotes, or None."""
    reply = message.get("reply")
    return Quote(reply["message_id"], reply.get("sender"), reply.get("message")) if reply else None
