"""The slot's loop: engine events -> Redis, commands from Redis -> engine.

What the worker does is decided by the slot's state when it starts:
  teardown flag set   -> log out from the network, wipe the slot's files, exit 0
  active              -> reconnect with the stored credentials, then serve until stopped
  pairing             -> show QR codes until a phone scans one (then serve) or they run out
  anything else       -> nothing to do, exit 0 (supervisord does not restart an exit 0)

Redis may go away at any moment (restarted, failed over, full). The worker rides it out rather than
exit, because whatsmeow has already acknowledged to WhatsApp every message it hands over: an inbound
event (a message, or a pairing or unlink that queues a webhook event) is retried on the engine's
thread until it is queued, and the process never ends while one is unqueued, with one exception: a
stop (SIGTERM from supervisord) gives them STOP_BUDGET_SECONDS, then the worker says in its log how
many it gives up (never what they said). Everything else the worker tells Redis is retried with
back-off on the main thread (commands, replies, the end of a teardown) or re-sent once Redis answers
again (the connected flag), and a send command whose deadline passed while Redis was away is
answered ``engine_timeout``, never sent late.
"""

import base64
import contextlib
import logging
import os
import threading
import time
import uuid

import redis

from controlplane.core import slotfiles
from controlplane.core.errors import Refused
from controlplane.core.sealed import Sealer
from controlplane.core.states import SlotStatus
from controlplane.core.store import SlotStore
from controlplane.messaging.events import EventPublisher
from slotworker import lean
from slotworker.engines.base import EngineUnavailable, NotSupported, OutboundMedia, SendRefused

log = logging.getLogger(__name__)

COMMAND_POLL_SECONDS = 0.5  # how long a stop request may wait for the command loop
PAIRING_GRACE_SECONDS = 5
# After SIGTERM, how long unqueued inbound events (and the end of a teardown) may still wait for
# Redis: under a slot program's stopwaitsecs (10 s, controlplane/templates/slot.conf), after which
# supervisord sends SIGKILL, with room for the engine's own stop (whatsmeow drains for 0.5 s).
STOP_BUDGET_SECONDS = 7.0
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MOST_SECONDS = 5.0


def masked(line: str | None) -> str:
    """Enough of a number to tell lines apart in a log, not enough to identify a person."""
    return f"…{line[-3:]}" if line else "-"


class Backoff:
    """Waits between attempts while Redis does not answer: 0.1 s, doubling up to 5 s."""

    def __init__(self):
        self.delay: float | None = None
        self.since: float | None = None  # monotonic time of the first failure of this outage

    @property
    def failing(self) -> bool:
        return self.delay is not None

    def next(self) -> float:
        if self.delay is None:
            self.delay, self.since = BACKOFF_FIRST_SECONDS, time.monotonic()
        else:
            self.delay = min(self.delay * 2, BACKOFF_MOST_SECONDS)
        return self.delay

    def reset(self) -> float:
        """Back to normal; returns how long the outage lasted."""
        lasted = time.monotonic() - self.since if self.since is not None else 0.0
        self.delay = self.since = None
        return lasted


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
        self._done = threading.Event()  # the command loop should end (stopped, torn down, pairing over)
        self._stop_requested = threading.Event()  # SIGTERM: from now on STOP_BUDGET_SECONDS
        self._stop_requested_at: float | None = None
        self._inbound = 0  # inbound events handed over by the engine and not queued yet
        self._inbound_changed = threading.Condition()
        self._connected_now = False  # what the engine last said...
        self._connected_reported = False  # ...and what Redis was last told (the serve loop catches up)
        self._report_lock = threading.Lock()
        self._teardown_lock = threading.Lock()
        self._torn_down = False
        self._was_connected = False
        self._pair_deadline: float | None = None

    # --- the process's life ---

    def run(self) -> int:
        read = self._retry("its slot's state", lambda: self.store.get(self.slot_id), abort_on_stop=True)
        if read is _GAVE_UP:
            log.info("slot %s: stopped before Redis answered; nothing started", self.slot_id)
            return 0
        slot = read
        self._best_effort("a start", lambda: self.store.count_for_slot(self.slot_id, "starts"))
        if slot is None:
            log.error("slot %s: not provisioned; nothing to run", self.slot_id)
            return 0
        if slot.teardown:
            self._teardown("reset")
            return 0
        if slot.status is SlotStatus.ACTIVE:
            if not self.engine.has_credentials():
                log.error("slot %s: active but its credentials are gone; releasing the line", self.slot_id)
                self._release_lost_credentials(slot.enrollment)
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

    def request_stop(self, signum: int | None = None) -> None:
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
            if signum is not None:
                log.info("slot %s: signal %d, stopping", self.slot_id, signum)
        self._stop_requested.set()
        self._done.set()

    def _serve(self) -> None:
        lean.release_startup_memory()  # the engine is imported and started: its start-up garbage can go
        backoff = Backoff()
        try:
            while not self._done.is_set():
                self._enforce_pairing_deadline()
                try:
                    self._report_connected()
                    command = self.store.pop_command(self.slot_id, timeout=COMMAND_POLL_SECONDS)
                    if command is not None:
                        self._handle(command)
                except redis.RedisError as err:
                    delay = backoff.next()
                    log.warning("slot %s: Redis unreachable (%s); commands wait, retrying in %.1f s",
                                self.slot_id, type(err).__name__, delay)
                    self._done.wait(delay)
                    continue
                if backoff.failing:
                    log.info("slot %s: Redis reachable again after %.1f s", self.slot_id, backoff.reset())
        finally:
            self._wind_down(redis_failing=backoff.failing)

    def _wind_down(self, redis_failing: bool) -> None:
        """Stop the engine (no new events), then wait for the inbound events it has handed over."""
        try:
            self.engine.stop()
        finally:
            queued = self.finish_inbound()
            if queued and not redis_failing:
                self._connected_now = False
                self._best_effort("the connected flag", lambda: self.store.set_connected(self.slot_id, False))

    def finish_inbound(self) -> bool:
        """Return once every inbound event the engine handed over is queued: the worker never exits
        with one it could not queue. After a stop request it waits STOP_BUDGET_SECONDS at most, and
        then says how many it gives up (False)."""
        with self._inbound_changed:
            if self._inbound:
                log.warning("slot %s: %d inbound event(s) not queued yet; waiting for Redis before exiting",
                            self.slot_id, self._inbound)
            while self._inbound:
                left = self._stop_budget_left()
                if left <= 0:
                    log.error("slot %s: stopping with %d inbound event(s) that Redis never took, after %.0f s "
                              "of the stop's grace: they are lost", self.slot_id, self._inbound, STOP_BUDGET_SECONDS)
                    return False
                self._inbound_changed.wait(min(left, 1.0))
        return True

    def _handle(self, command: dict) -> None:
        if command.get("op") == "logout":
            self._teardown(command.get("reason", "logout"))
        elif command.get("op") == "send":
            self._reply(command, self._send(command))
        elif command.get("op") == "paircode":
            self._reply(command, self._pair_code(command["line"]))
        else:
            log.warning("slot %s: unknown command %r ignored", self.slot_id, command.get("op"))

    def _reply(self, command: dict, answer: dict) -> None:
        """The answer, for as long as the caller waits for it (its deadline): after that nobody reads it."""
        deadline = command.get("deadline", time.time() + 60)
        outcome = self._retry("a reply", lambda: self.store.push_reply(command["reply"], answer), until=deadline)
        if outcome is _GAVE_UP:
            log.warning("slot %s: a %s reply was not delivered: Redis was unreachable until its caller stopped "
                        "waiting", self.slot_id, command.get("op"))

    def _enforce_pairing_deadline(self) -> None:
        # whatsmeow may hang after its codes run out (ENGINE-NOTES: FetchMe loops): end regardless,
        # but not while a pairing that did succeed is still being recorded (on_paired, retrying).
        if not (self._pair_deadline and time.time() > self._pair_deadline + PAIRING_GRACE_SECONDS):
            return
        with self._inbound_changed:
            if self._inbound or not self._pair_deadline:
                return
        log.warning("slot %s: pairing deadline passed; ending the worker", self.slot_id)
        try:
            self.store.end_pairing(self.slot_id, "deadline")
        except redis.RedisError as err:
            # The reconciler ends a pairing whose worker is gone and whose deadline passed.
            log.warning("slot %s: could not record the pairing's end (%s); the reconciler will",
                        self.slot_id, type(err).__name__)
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
            # Not recorded (stopped while Redis was away): the teardown flag stays, and the reconciler
            # starts the worker again for it, which finds nothing left to wipe and records it then.
            if self._retry("the end of the teardown", lambda: self.store.finish_teardown(self.slot_id)) is _GAVE_UP:
                log.warning("slot %s: wiped, but Redis never took the teardown's end (%s)", self.slot_id, reason)
                return
            log.info("slot %s: logged out and wiped (%s)", self.slot_id, reason)

    def _release_lost_credentials(self, enrollment: str | None) -> None:
        """The line cannot be served without its session: it ends as an unlink would, with its one
        terminal event (``logged_out``, reason ``credentials_lost``), so inmovilla hears of it. Refused
        when a kill or an eviction ended the enrollment first; the wipe applies all the same."""
        with contextlib.suppress(Refused):
            self._until_queued("a lost session", lambda: self.store.release(
                self.slot_id, "logged_out", (SlotStatus.ACTIVE.value, SlotStatus.SLEEPING.value),
                enrollment=enrollment, outbox=self.publisher.outbox(), detail="credentials_lost"))
        self._teardown("credentials_lost")

    # --- engine events (on the engine's thread: quick, no blocking calls) ---

    def on_qr(self, code: str, expires_in: float) -> None:
        try:
            still_pairing = self.store.set_qr(self.slot_id, code, time.time() + expires_in)
        except redis.RedisError as err:  # a code nobody can see; the next one may be
            log.warning("slot %s: could not show a QR code (%s)", self.slot_id, type(err).__name__)
            return
        if not still_pairing:
            log.info("slot %s: no longer pairing; stopping", self.slot_id)
            self._done.set()

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

        with self._inbound_event():
            try:
                evicted = self._until_queued("a pairing", record)
            except Refused:
                # Killed or timed out while the phone scanned: undo the link rather than keep a stray one.
                log.warning("slot %s: paired after pairing ended; logging the device out", self.slot_id)
                self._teardown("pairing_cancelled")
                return
            self._pair_deadline = None
            self.line = line
            self.enrollment = enrollment
        self._best_effort("a pairing", lambda: self.store.count("pairing_paired"))
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
            self._done.set()

    def on_connected(self) -> None:
        if self._was_connected:
            self._best_effort("a reconnect", lambda: self.store.count_for_slot(self.slot_id, "reconnects"))
        self._was_connected = True
        self._connected_now = True
        self._best_effort("the connected flag", self._report_connected)  # else the serve loop catches up
        log.info("slot %s: connected", self.slot_id)

    def on_disconnected(self) -> None:
        self._connected_now = False
        self._best_effort("the connected flag", self._report_connected)

    def _report_connected(self) -> None:
        """Tell Redis what the engine last said, if it has not been told (either thread)."""
        with self._report_lock:
            wanted = self._connected_now
            if wanted != self._connected_reported:
                self.store.set_connected(self.slot_id, wanted)
                self._connected_reported = wanted

    def on_logged_out(self, reason: str) -> None:
        """The network says this device is logged out. The phone's unlink, unless this enrollment has
        already ended (killed, evicted): then it is the echo of our own logout, and not news."""
        if self._torn_down:
            log.info("slot %s: logged out while tearing down (%s); already reported", self.slot_id, reason)
            return
        with self._inbound_event():
            try:
                # Releasing this enrollment claims its one terminal event: refused once a kill or an
                # eviction has ended it, however late the network's word arrives.
                self._until_queued("an unlink", lambda: self.store.release(
                    self.slot_id, "logged_out", (SlotStatus.ACTIVE.value, SlotStatus.SLEEPING.value),
                    enrollment=self.enrollment, outbox=self.publisher.outbox(), detail=reason))
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
        # here would lose the message rather than get it again (finish_inbound holds the exit).
        line = self.line
        with self._inbound_event():
            self._until_queued("an inbound message",
                               lambda: self.publisher.message(self.slot_id, line, payload, message_id, sender))

    # --- Redis going away ---

    @contextlib.contextmanager
    def _inbound_event(self):
        """Counts an inbound event as unqueued while the block runs: finish_inbound waits for it."""
        with self._inbound_changed:
            self._inbound += 1
        try:
            yield
        finally:
            with self._inbound_changed:
                self._inbound -= 1
                self._inbound_changed.notify_all()

    def _until_queued(self, what: str, call):
        """call() until Redis takes it, however long that is (the engine's thread waits meanwhile).
        A refusal is an answer, not an outage: it is raised. Idempotent calls only: an attempt whose
        answer was lost may have been applied."""
        backoff = Backoff()
        while True:
            try:
                result = call()
            except Refused:
                raise
            except Exception as err:  # noqa: BLE001 - Redis down, full, restarting: wait and try again
                delay = backoff.next()
                log.error("slot %s: cannot queue %s (%s); retrying in %.1f s", self.slot_id, what,
                          type(err).__name__, delay)
                time.sleep(delay)
                continue
            if backoff.failing:
                log.info("slot %s: queued %s after %.1f s", self.slot_id, what, backoff.reset())
            return result

    def _retry(self, what: str, call, until: float | None = None, abort_on_stop: bool = False):
        """call() until Redis answers; _GAVE_UP once the wall-clock ``until`` passes, once a stop's
        budget is spent, or (``abort_on_stop``) as soon as a stop is requested."""
        backoff = Backoff()
        while True:
            try:
                return call()
            except redis.RedisError as err:
                stopping = self._stop_requested.is_set()
                if (until is not None and time.time() >= until) or self._stop_budget_left() <= 0 or (
                        abort_on_stop and stopping):
                    return _GAVE_UP
                delay = backoff.next()
                log.warning("slot %s: Redis unreachable (%s) for %s; retrying in %.1f s", self.slot_id,
                            type(err).__name__, what, delay)
                if until is not None:
                    delay = max(0.0, min(delay, until - time.time()))
                if stopping:
                    time.sleep(max(0.0, min(delay, self._stop_budget_left())))
                else:
                    self._stop_requested.wait(delay)  # a stop request ends the wait at once

    def _best_effort(self, what: str, call) -> None:
        """One try: a metric or a flag the serve loop re-sends; not worth waiting for."""
        try:
            call()
        except redis.RedisError as err:
            log.warning("slot %s: Redis unreachable (%s); %s not recorded", self.slot_id, type(err).__name__, what)

    def _stop_budget_left(self) -> float:
        if self._stop_requested_at is None:
            return float("inf")
        return self._stop_requested_at + STOP_BUDGET_SECONDS - time.monotonic()


_GAVE_UP = object()  # what _retry returns when it stops trying
