"""The slot's loop: engine events -> Redis, commands from Redis -> engine.

What the worker does is decided by the slot's state when it starts:
  teardown flag set   -> log out from the network, wipe the slot's files, exit 0
  active              -> reconnect with the stored credentials, then serve until stopped
  pairing             -> show QR codes until a phone scans one (then serve) or they run out
  anything else       -> nothing to do, exit 0 (supervisord does not restart an exit 0)
"""

import base64
import contextlib
import logging
import os
import threading
import time
import uuid

from controlplane import slotfiles
from controlplane.errors import Refused
from controlplane.events import EventPublisher
from controlplane.sealed import Sealer
from controlplane.states import SlotStatus
from controlplane.store import SlotStore
from slotworker import lean
from slotworker.engines.base import EngineUnavailable, NotSupported, OutboundMedia, SendRefused

log = logging.getLogger(__name__)

COMMAND_POLL_SECONDS = 0.5  # how long a stop request may wait for the command loop
PAIRING_GRACE_SECONDS = 5


def masked(line: str | None) -> str:
    """Enough of a number to tell lines apart in a log, not enough to identify a person."""
    return f"…{line[-3:]}" if line else "-"


class SlotRunner:
    def __init__(self, slot_id: str, settings, store: SlotStore, engine_factory, publisher: EventPublisher):
        self.slot_id = slot_id
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.sealer = Sealer(settings.queue_key)
        self.line: str | None = None
        self.enrollment: str | None = None  # the store's id for this link of the line: what may end it
        self.slot_dir = settings.slot_dir(slot_id)
        self.engine = engine_factory(slot_id, self.slot_dir, settings, self)
        self._done = threading.Event()
        self._teardown_lock = threading.Lock()
        self._torn_down = False
        self._was_connected = False
        self._pair_deadline: float | None = None

    # --- the process's life ---

    def run(self) -> int:
        self.store.count_for_slot(self.slot_id, "starts")
        slot = self.store.get(self.slot_id)
        if slot is None:
            log.error("slot %s: not provisioned; nothing to run", self.slot_id)
            return 0
        if slot.teardown:
            self._teardown("reset")
            return 0
        if slot.status is SlotStatus.ACTIVE:
            if not self.engine.has_credentials():
                log.error("slot %s: active but its credentials are gone; releasing the line", self.slot_id)
                self._release("credentials_lost")
                return 0
            log.info("slot %s: reconnecting line %s", self.slot_id, masked(slot.line))
            self.line = slot.line
            self.enrollment = slot.enrollment
            self.engine.connect()
        elif slot.pairing:
            log.info("slot %s: pairing", self.slot_id)
            self._pair_deadline = slot.pair_deadline
            slotfiles.private_dir(self.slot_dir)
            self.engine.start_pairing()
        else:
            log.info("slot %s: %s and not pairing; nothing to do", self.slot_id, slot.status.value)
            return 0
        self._serve()
        return 0

    def request_stop(self) -> None:
        self._done.set()

    def _serve(self) -> None:
        lean.release_startup_memory()  # the engine is imported and started: its start-up garbage can go
        while not self._done.is_set():
            command = self.store.pop_command(self.slot_id, timeout=COMMAND_POLL_SECONDS)
            if command is not None:
                self._handle(command)
            self._enforce_pairing_deadline()
        self.engine.stop()
        self.store.set_connected(self.slot_id, False)

    def _handle(self, command: dict) -> None:
        if command.get("op") == "logout":
            self._teardown(command.get("reason", "logout"))
        elif command.get("op") == "send":
            self.store.push_reply(command["reply"], self._send(command))
        elif command.get("op") == "paircode":
            self.store.push_reply(command["reply"], self._pair_code(command["line"]))
        else:
            log.warning("slot %s: unknown command %r ignored", self.slot_id, command.get("op"))

    def _enforce_pairing_deadline(self) -> None:
        # whatsmeow may hang after its codes run out (ENGINE-NOTES: FetchMe loops): end regardless.
        if self._pair_deadline and time.time() > self._pair_deadline + PAIRING_GRACE_SECONDS:
            log.warning("slot %s: pairing deadline passed; ending the worker", self.slot_id)
            self.store.end_pairing(self.slot_id, "deadline")
            os._exit(0)

    def _send(self, command: dict) -> dict:
        """Send one message; the answer names the outcome and WhatsApp's id, never the content."""
        if time.time() > command.get("deadline", float("inf")):
            return {"ok": False, "error": "engine_timeout", "detail": "The request expired before the slot took it."}
        message = self.sealer.unseal(command["sealed"])
        media = message.get("media")
        try:
            result = self.engine.send(message["to"], text=message.get("text"), media=media and OutboundMedia(
                data=base64.b64decode(media["data"]), mimetype=media["mimetype"],
                filename=media.get("filename"), caption=media.get("caption")))
        except EngineUnavailable as err:
            return {"ok": False, "error": "whatsapp_unreachable", "detail": str(err)}
        except SendRefused as err:
            return {"ok": False, "error": err.code, "detail": err.detail}
        return {"ok": True, "id": result.id, "timestamp": result.timestamp}

    def _pair_code(self, line: str) -> dict:
        try:
            return {"ok": True, "code": self.engine.pair_code(line)}
        except NotSupported as err:
            return {"ok": False, "error": "not_supported", "detail": str(err)}
        except EngineUnavailable as err:
            return {"ok": False, "error": "whatsapp_unreachable", "detail": str(err)}

    # --- wiping ---

    def _teardown(self, reason: str) -> None:
        """Log out from the network, delete every credential and key file, mark the slot clean.

        Runs once: a kill's logout and the network's echo of it may both ask for it."""
        with self._teardown_lock:
            if self._torn_down:
                return
            self._torn_down = True
            self._done.set()
            # Log out while the session is still up (whatsmeow needs its client for that), then stop.
            # After the phone's own unlink the device is already gone: nothing to tell WhatsApp.
            if reason != "logged_out":
                self.engine.logout()
            self.engine.stop()
            slotfiles.wipe(self.slot_dir)
            self.store.finish_teardown(self.slot_id)
            log.info("slot %s: logged out and wiped (%s)", self.slot_id, reason)

    def _release(self, reason: str) -> None:
        # Already released (killed or evicted meanwhile)? The teardown below applies all the same.
        with contextlib.suppress(Refused):
            self.store.release(self.slot_id, reason, (SlotStatus.ACTIVE.value, SlotStatus.SLEEPING.value))
        self._teardown(reason)

    # --- engine events (on the engine's thread: quick, no blocking calls) ---

    def on_qr(self, code: str, expires_in: float) -> None:
        if not self.store.set_qr(self.slot_id, code, time.time() + expires_in):
            log.info("slot %s: no longer pairing; stopping", self.slot_id)
            self._done.set()

    def on_paired(self, line: str) -> None:
        enrollment = uuid.uuid4().hex
        try:
            # One step: the line moves here, the slot that held it is released, and ``evicted`` (its one
            # terminal event) and ``enrolled`` are numbered and queued. Its worker's logout tells nothing.
            evicted = self.store.pair_success(self.slot_id, line, enrollment=enrollment,
                                              outbox=self.publisher.outbox())
        except Refused:
            # Killed or timed out while the phone scanned: undo the link rather than keep a stray one.
            log.warning("slot %s: paired after pairing ended; logging the device out", self.slot_id)
            self._teardown("pairing_cancelled")
            return
        self._pair_deadline = None
        self.line = line
        self.enrollment = enrollment
        self.store.count("pairing_paired")
        log.info("slot %s: paired with line %s", self.slot_id, masked(line))
        if evicted:
            log.info("slot %s: line %s moved here from slot %s", self.slot_id, masked(line), evicted)

    def on_pairing_ended(self, reason: str) -> None:
        self.store.end_pairing(self.slot_id, reason)
        self.store.count(f"pairing_{reason}")
        log.info("slot %s: pairing ended (%s)", self.slot_id, reason)
        self._done.set()

    def on_connected(self) -> None:
        if self._was_connected:
            self.store.count_for_slot(self.slot_id, "reconnects")
        self._was_connected = True
        self.store.set_connected(self.slot_id, True)
        log.info("slot %s: connected", self.slot_id)

    def on_disconnected(self) -> None:
        self.store.set_connected(self.slot_id, False)

    def on_logged_out(self, reason: str) -> None:
        """The network says this device is logged out. The phone's unlink, unless this enrollment has
        already ended (killed, evicted): then it is the echo of our own logout, and not news."""
        if self._torn_down:
            log.info("slot %s: logged out while tearing down (%s); already reported", self.slot_id, reason)
            return
        try:
            # Releasing this enrollment claims its one terminal event: refused once a kill or an eviction
            # has ended it, however late the network's word arrives.
            self.store.release(self.slot_id, "logged_out", (SlotStatus.ACTIVE.value, SlotStatus.SLEEPING.value),
                               enrollment=self.enrollment, outbox=self.publisher.outbox(), detail=reason)
            log.info("slot %s: the phone unlinked this device (%s)", self.slot_id, reason)
        except Refused:
            log.info("slot %s: logged out after its enrollment ended (%s); not reported", self.slot_id, reason)
        self._teardown("logged_out")

    def on_message(self, payload: dict, message_id: str, sender: str | None) -> None:
        if self._torn_down or self.line is None:
            log.info("slot %s: message after its line was released; not delivered", self.slot_id)
            return
        # Queued before returning, however long Redis takes to come back: the sim engine acknowledges
        # only after this returns, and whatsmeow has already acknowledged (ENGINE-NOTES), so an exit
        # here would lose the message rather than get it again.
        delay = 0.1
        while True:
            try:
                self.publisher.message(self.slot_id, self.line, payload, message_id, sender)
                return
            except Exception as err:  # noqa: BLE001 - Redis down, full, restarting: wait and try again
                log.error("slot %s: cannot queue an inbound message (%s); retrying in %.1f s",
                          self.slot_id, type(err).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
