"""The slot's commands, read and answered through the slot protocol (controlplane/core/protocol.py).

The command loop (runner.py) pops each command from the slot's Redis list and hands it here, on the
main thread. One handler per op: ``logout`` tears the slot down (no reply), ``send`` and ``paircode``
ask the engine and reply, ``download`` streams a media file back from a thread (downloads.py).
A reply is written for as long as its caller waits (the command's deadline), Redis outages
included; after that nobody reads it. An unknown or unreadable command is logged by its op alone
and dropped: its content (a sealed message) never reaches the log.
"""

import base64
import logging
import time

from controlplane.core import protocol
from controlplane.core.sealed import Sealer
from slotworker.downloads import Downloads
from slotworker.engines.base import EngineUnavailable, NotSupported, OutboundMedia, SendRefused
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

    def send(self, command: protocol.Send) -> protocol.Sent | protocol.Failure:
        """Send one message; the answer names the outcome and WhatsApp's id, never the content."""
        if command.deadline is not None and time.time() > command.deadline:
            return protocol.Failure(protocol.ENGINE_TIMEOUT, "The request expired before the slot took it.")
        message = self.sealer.unseal(command.sealed)
        media = message.get("media")
        try:
            result = self.engine.send(message["to"], text=message.get("text"), media=media and OutboundMedia(
                data=base64.b64decode(media["data"]), mimetype=media["mimetype"],
                filename=media.get("filename"), caption=media.get("caption")))
        except EngineUnavailable as err:
            return protocol.Failure(protocol.WHATSAPP_UNREACHABLE, str(err))
        except SendRefused as err:
            return protocol.Failure(err.code, err.detail)
        return protocol.Sent(id=result.id, timestamp=result.timestamp)

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
