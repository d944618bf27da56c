"""The engine's events (base.EngineEvents), as the slot runner receives them on the engine's thread.

They must return quickly: whatsmeow runs its handlers one at a time on neonize's connect thread, fed
by a 100-slot channel (ENGINE-NOTES). A QR code, the connected flag and a metric are tried once and
never waited for (the command loop re-sends the flag). The one exception, on purpose, is queueing an
inbound event (a message, a receipt, a call…, a pairing, the phone's unlink, each a webhook event): it is retried here
until Redis takes it, however long an outage lasts, because the sim engine acknowledges a message
only after its callback returns and whatsmeow has already acknowledged it to WhatsApp. Returning, or
exiting, before it is queued would lose it rather than get it again: waiting is what makes delivery
at-least-once (outage.py; ``Unqueued.finish`` holds the exit meanwhile). An event that ends the
enrollment (the phone's unlink, a pairing that came too late) also tears the slot down from here,
as it did before the split: the engine has nothing left to deliver by then.
"""

import logging
import threading
import time
import uuid

import redis

from controlplane.core.errors import Refused
from controlplane.core.event_types import WebhookType
from controlplane.core.states import SlotStatus
from controlplane.messaging import envelope
from controlplane.messaging.events import status_event

log = logging.getLogger(__name__)


def masked(line: str | None) -> str:
    """Enough of a number to tell lines apart in a log, not enough to identify a person."""
    return f"…{line[-3:]}" if line else "-"


class ConnectedFlag:
    """What the engine last said about its connection, and what Redis was last told of it."""

    def __init__(self, store, slot_id: str):
        self.store = store
        self.slot_id = slot_id
        self.now = False
        self._reported = False
        self._lock = threading.Lock()

    def known_as(self, connected: bool) -> None:
        """What Redis says now (read at the worker's start): a previous worker that ended without a
        word (kill -9, a host's crash) may have left it saying connected."""
        with self._lock:
            self._reported = connected

    def report(self) -> None:
        """Tell Redis what the engine last said, if it has not been told (either thread)."""
        with self._lock:
            wanted = self.now
            if wanted != self._reported:
                self.store.set_connected(self.slot_id, wanted)
                self._reported = wanted


class EngineCallbacks:
    """SlotRunner's half that the engine calls. Uses the runner's slot_id, store, publisher, messages
    (the message index), patience, unqueued, connected, engine, line, enrollment, _pair_deadline,
    _torn_down, _teardown() and _end()."""

    _offline: str | None = None  # the reason the network last refused the line's connection

    def on_qr(self, code: str, expires_in: float) -> None:
        try:
            still_pairing = self.store.set_qr(self.slot_id, code, time.time() + expires_in)
        except redis.RedisError as err:  # a code nobody can see; the next one may be
            log.warning("slot %s: could not show a QR code (%s)", self.slot_id, type(err).__name__)
            return
        if not still_pairing:
            log.info("slot %s: no longer pairing; stopping", self.slot_id)
            self._end("pairing_over")

    def on_paired(self, line: str) -> None:
        enrollment = uuid.uuid4().hex

        def record():
            # One step: the line moves here, the slot that held it is released, and ``evicted`` (its one
            # terminal event) and ``enrolled`` are numbered and queued. Its worker's logout tells nothing.
            try:
                return self.store.pair_success(self.slot_id, line, enrollment=enrollment,
                                               outbox=self.publisher.outbox())
            except Refused:
                slot = self.store.get(self.slot_id)
                if slot is not None and slot.enrollment == enrollment:
                    return None  # an attempt whose answer Redis's restart swallowed went through
                raise

        with self.unqueued.holding():
            try:
                evicted = self.patience.until_queued("a pairing", record)
            except Refused:
                # Killed or timed out while the phone scanned: undo the link rather than keep a stray one.
                log.warning("slot %s: paired after pairing ended; logging the device out", self.slot_id)
                self._teardown("pairing_cancelled")
                return
            self._pair_deadline = None
            self.line = line
            self.enrollment = enrollment
        self.patience.best_effort("a pairing", lambda: self.store.count("pairing_paired"))
        log.info("slot %s: paired with line %s", self.slot_id, masked(line))
        if evicted:
            log.info("slot %s: line %s moved here from slot %s", self.slot_id, masked(line), evicted)

    def on_pairing_ended(self, reason: str) -> None:
        try:
            self.store.end_pairing(self.slot_id, reason)
            self.store.count(f"pairing_{reason}")
            log.info("slot %s: pairing ended (%s)", self.slot_id, reason)
        except redis.RedisError as err:
            # Left pairing in Redis: the reconciler ends it once its deadline passes and no worker runs.
            log.warning("slot %s: pairing ended (%s) but Redis did not take it (%s)", self.slot_id, reason,
                        type(err).__name__)
        finally:
            self._end("pairing_over")

    def on_connected(self) -> None:
        if self._offline is not None:
            reason, self._offline = self._offline, None
            self._status(SlotStatus.ACTIVE.value, "back_online", {"was": reason})
        if self._was_connected:
            self.patience.best_effort("a reconnect", lambda: self.store.count_for_slot(self.slot_id, "reconnects"))
        self._was_connected = True
        self.connected.now = True
        log.info("slot %s: connected", self.slot_id)  # first: the flag frees a start's place, the log tells when
        self.patience.best_effort("the connected flag", self.connected.report)  # else the loop catches up

    def on_disconnected(self) -> None:
        self.connected.now = False
        self.patience.best_effort("the connected flag", self.connected.report)

    def on_logged_out(self, reason: str) -> None:
        """The network says this device is logged out. The phone's unlink, unless this enrollment has
        already ended (killed, evicted): then it is the echo of our own logout, and not news."""
        if self._torn_down:
            log.info("slot %s: logged out while tearing down (%s); already reported", self.slot_id, reason)
            return
        with self.unqueued.holding():
            try:
                # Releasing this enrollment claims its one terminal event: refused once a kill or an
                # eviction has ended it, however late the network's word arrives.
                self.patience.until_queued("an unlink", lambda: self.store.release(
                    self.slot_id, "logged_out", (SlotStatus.ACTIVE.value, SlotStatus.SLEEPING.value),
                    enrollment=self.enrollment, outbox=self.publisher.outbox(), detail=reason))
                log.info("slot %s: the phone unlinked this device (%s)", self.slot_id, reason)
            except Refused:
                log.info("slot %s: logged out after its enrollment ended (%s); not reported", self.slot_id, reason)
        self._teardown("logged_out")

    def on_event(self, source: str, payload: dict) -> None:
        """Whatever the network delivered to the line (a message, a receipt, a call…), as its webhook event."""
        received_at = time.time()
        if self._torn_down or self.line is None:
            log.debug("slot %s: a %s after its line was released; not delivered", self.slot_id, source)
            return
        line = self.line
        event = envelope.inbound(source, payload, line, self.engine.phone_for_lid)
        if event is None:
            return  # protocol chatter (a retry receipt…)
        index = None
        if source == "Message":
            # In the step that queues it, so that a reply, a reaction or a read mark the webhook's
            # receiver makes of it finds it in the index.
            def index(pipe):
                self.messages.record_event(line, event.fields, payload, pipe)
        if not self.publisher.wants(event.type):
            if index is not None:  # a type WHIN_EVENTS leaves out: indexed all the same, one try
                self.patience.best_effort("a message's index entry",
                                          lambda: self.messages.record_event(line, event.fields, payload))
            return
        # Queued before returning, however long Redis takes to come back (see the module's docstring).
        with self.unqueued.holding():
            self.patience.until_queued(f"an inbound {event.type.value}",
                                       lambda: self.publisher.inbound(self.slot_id, line, event, payload, index,
                                                                     received_at))

    def on_offline(self, reason: str, details: dict) -> None:
        """The network refuses the line's connection (a ban, another client, an outdated library): a
        ``slot.status`` ``offline`` with the reason, and ``active`` again once the engine reconnects."""
        self._offline = reason
        self.connected.now = False
        self.patience.best_effort("the connected flag", self.connected.report)
        log.warning("slot %s: WhatsApp refuses the connection (%s)", self.slot_id, reason)
        self._status("offline", reason, details)

    def _status(self, status: str, reason: str, details: dict) -> None:
        if self._torn_down or self.line is None or not self.publisher.wants(WebhookType.SLOT_STATUS):
            return
        # Made once, outside the retries: a retry after a lost reply is then the same webhook-id.
        event = status_event(self.slot_id, self.line, status, reason, details)
        with self.unqueued.holding():
            self.patience.until_queued(f"a {status} status", lambda: self.publisher.outbox().send([event]))
