"""The slot's loop: commands from Redis -> engine until an exit reason, then the engine's stop.

What to do at start is start.py's (a pure plan from the slot's state), each command is commands.py's
(through the slot protocol), the engine's events are callbacks.py's, riding out a Redis outage is
outage.py's. This module runs the plan, the command loop, the teardown (log out, wipe) and the end:
the loop ends with a reason (a stop request, a teardown, the pairing over or past its deadline), and
then the engine is stopped and the inbound events it handed over are queued before run() returns.
A send whose deadline passed while Redis was away is answered ``engine_timeout``, never sent late.
"""

import contextlib
import logging
import os
import threading
import time

import redis

from controlplane.core import sessions, slotfiles
from controlplane.core.errors import Refused
from controlplane.core.sealed import Sealer
from controlplane.core.sessions import SessionStoreUnavailable
from controlplane.core.states import SlotStatus
from controlplane.core.store import SlotStore
from controlplane.messaging.events import EventPublisher
from controlplane.messaging.message_index import MessageIndex
from slotworker import lean, start
from slotworker.callbacks import ConnectedFlag, EngineCallbacks, masked
from slotworker.commands import CommandHandler
from slotworker.lease import Lease, lease_client
from slotworker.outage import GAVE_UP, Backoff, Patience, Unqueued

log = logging.getLogger(__name__)

# An idle worker asks Redis for a command this often; nothing waits for the wait to run out (a stop,
# or an end from another thread, pokes the worker's wake list: _end). Under the client's 60 s read
# timeout (core/connection.py) and its 30 s health check, so a wait costs one round trip, no PING.
COMMAND_POLL_SECONDS = 25.0
PAIRING_GRACE_SECONDS = 5
PAIRING_TICK_SECONDS = 0.5  # past the pairing deadline, how often the loop looks again (an event queueing)
ENGINE_STOP_SECONDS = 10.0  # a stop the worker asked for itself that takes longer: the engine hangs


class SlotRunner(EngineCallbacks):
    def __init__(self, slot_id: str, settings, store: SlotStore, engine_factory, publisher: EventPublisher):
        self.slot_id = slot_id
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.line: str | None = None
        self.enrollment: str | None = None  # the store's id for this link of the line: what may end it
        self.slot_dir = settings.slot_dir(slot_id)
        self.patience = Patience(slot_id)
        self.unqueued = Unqueued(slot_id, self.patience)
        self.connected = ConnectedFlag(store, slot_id)
        self.engine = engine_factory(slot_id, self.slot_dir, settings, self)
        self.lease = Lease(lease_client(store.redis, settings.lease_seconds), slot_id, settings.host_name,
                           settings.lease_seconds, self._lease_lost, solo=settings.embedded_redis,
                           run=settings.host_instance)
        sealer = Sealer(settings.queue_key)
        self.messages = MessageIndex(store.redis, sealer, settings.message_index_ttl)
        self.commands = CommandHandler(slot_id, store, self.engine, sealer, self.patience,
                                       self._teardown, settings.media_max_bytes)
        self.exit_reason: str | None = None  # why the command loop ended: the first reason given
        self._done = threading.Event()
        self._teardown_lock = threading.Lock()
        self._torn_down = False
        self._was_connected = False
        self._pair_deadline: float | None = None
        self._loop_thread: int | None = None  # the thread waiting for commands, once _serve runs

    # --- the process's life ---

    def run(self) -> int:
        read = self.patience.retry("its slot's state", lambda: self.store.get(self.slot_id), abort_on_stop=True)
        if read is GAVE_UP:
            log.info("slot %s: stopped before Redis answered; nothing started", self.slot_id)
            return 0
        slot = read
        if slot is not None and slot.host and slot.host != self.settings.host_name:
            log.info("slot %s: placed on host %s, not this one (%s); not starting here", self.slot_id,
                     slot.host, self.settings.host_name)
            return 0
        if slot is not None and not self.lease.acquire(self.patience.stop_requested, self._still_placed_here):
            log.info("slot %s: stopped, or moved away, before its lease was free; nothing started", self.slot_id)
            return 0
        try:
            return self._run_leased(slot)
        finally:
            self.lease.release()

    def _still_placed_here(self) -> bool:
        try:
            slot = self.store.get(self.slot_id)
        except redis.RedisError:
            return True  # unknown: keep waiting
        return slot is not None and slot.host in (None, self.settings.host_name)

    def _lease_lost(self) -> None:
        # Off WhatsApp first, from this thread: the command loop may be stuck on the same Redis.
        self.engine.stop()
        log.warning("slot %s: disconnected from WhatsApp (lease lost); stopping", self.slot_id)
        self.request_stop()

    def _run_leased(self, slot) -> int:
        self.patience.best_effort("a start", lambda: self.store.count_for_slot(self.slot_id, "starts"))
        # A flag a previous worker left saying connected is put right at once: the API would show the
        # line connected, and the reconciler would not count this start against its budget.
        self.connected.known_as(slot.connected)
        self.patience.best_effort("the connected flag", self.connected.report)
        what = start.plan(slot, self.engine.has_credentials)
        if what is start.Start.NOT_PROVISIONED:
            log.error("slot %s: not provisioned; nothing to run", self.slot_id)
            return 0
        if what is start.Start.WIPE:
            self._teardown("reset")
            return 0
        if what is start.Start.RELEASE_LOST_CREDENTIALS:
            log.error("slot %s: active but its credentials are gone; releasing the line", self.slot_id)
            self._release_lost_credentials(slot.enrollment)
            return 0
        if what is start.Start.RECONNECT:
            log.info("slot %s: reconnecting line %s", self.slot_id, masked(slot.line))
            self.line = slot.line
            self.enrollment = slot.enrollment
            if not self._while_leased(self.engine.connect):
                return 0
        elif what is start.Start.PAIR:
            log.info("slot %s: pairing", self.slot_id)
            self._pair_deadline = slot.pair_deadline
            slotfiles.private_dir(self.slot_dir)
            if not self._while_leased(self.engine.start_pairing):
                return 0
        else:
            log.info("slot %s: %s and not pairing; nothing to do", self.slot_id, slot.status.value)
            return 0
        self._serve()
        log.info("slot %s: worker done (%s)", self.slot_id, self.exit_reason)
        return 0

    def _while_leased(self, begin) -> bool:
        """Start talking to WhatsApp only while the lease is still ours (it may have been lost during
        the reads before); False, nothing started, if not."""
        with self.lease.held() as ours:
            if ours:
                begin()
                return True
        log.warning("slot %s: lease lost before connecting; nothing started", self.slot_id)
        return False

    def request_stop(self, signum: int | None = None) -> None:
        if self.patience.stop() and signum is not None:
            log.info("slot %s: signal %d, stopping", self.slot_id, signum)
        self._end("stopped")

    def _end(self, reason: str) -> None:
        """The command loop ends, for the first reason given (either thread): from another thread than
        the loop's, its wait for a command is poked, so that it ends now, not when the wait runs out."""
        if self.exit_reason is None:
            self.exit_reason = reason
        self._done.set()
        if self._loop_thread not in (None, threading.get_ident()):
            self._wake()

    def _wake(self) -> None:
        # Tried once: with Redis away the loop is not in a wait but in its back-off (on _done), and a
        # Redis that hangs would hang the loop's wait whatever its length.
        try:
            self.store.wake_worker(self.slot_id)
        except redis.RedisError as err:
            log.debug("slot %s: could not poke the command loop (%s)", self.slot_id, type(err).__name__)

    def finish_inbound(self) -> bool:
        """Return once every inbound event the engine handed over is queued (outage.Unqueued.finish)."""
        return self.unqueued.finish()

    def _serve(self) -> None:
        lean.release_startup_memory()  # the engine is imported and started: its start-up garbage can go
        backoff = Backoff()
        # Before the first wait, and after _loop_thread is set: an end from now on pokes the wait, and
        # an end before it set _done, which the loop reads before waiting. A stale poke only costs a turn.
        self._loop_thread = threading.get_ident()
        self.patience.best_effort("the wake list's reset", lambda: self.store.clear_wake(self.slot_id))
        try:
            while not self._done.is_set():
                self._enforce_pairing_deadline()
                if self._done.is_set():
                    break
                try:
                    self.connected.report()
                    command = self.store.wait_command(self.slot_id, timeout=self._poll_seconds())
                    if command is not None:
                        self.commands.handle(command)
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
            self._stop_engine()
        finally:
            queued = self.finish_inbound()
            if queued and not redis_failing:
                self.connected.now = False
                self.patience.best_effort("the connected flag", lambda: self.store.set_connected(self.slot_id, False))

    def _stop_engine(self) -> None:
        if self.patience.stop_requested.is_set():
            self.engine.stop()  # supervisord stopping us: its SIGKILL is the backstop for a hung engine
            return
        # Last resort, and the only os._exit of the runner: whatsmeow may hang once its codes run out
        # (ENGINE-NOTES: FetchMe loops), and nobody else would end a worker that ended itself.
        watchdog = threading.Timer(ENGINE_STOP_SECONDS, self._abandon_hung_engine)
        watchdog.daemon = True
        watchdog.start()
        try:
            self.engine.stop()
        finally:
            watchdog.cancel()

    def _abandon_hung_engine(self) -> None:
        log.error("slot %s: the engine did not stop within %.0f s; exiting without it", self.slot_id,
                  ENGINE_STOP_SECONDS)
        self.finish_inbound()  # never with an inbound event unqueued
        logging.shutdown()
        os._exit(0)

    def _poll_seconds(self) -> float:
        """The long wait, but no later than the pairing deadline's end (then ticks while it waits)."""
        if not self._pair_deadline:
            return COMMAND_POLL_SECONDS
        left = self._pair_deadline + PAIRING_GRACE_SECONDS - time.time()
        return min(COMMAND_POLL_SECONDS, max(PAIRING_TICK_SECONDS, left))

    def _enforce_pairing_deadline(self) -> None:
        # whatsmeow may hang after its codes run out (ENGINE-NOTES: FetchMe loops): end regardless,
        # but not while a pairing that did succeed is still being recorded (on_paired, retrying).
        if not (self._pair_deadline and time.time() > self._pair_deadline + PAIRING_GRACE_SECONDS):
            return
        if self.unqueued.pending() or not self._pair_deadline:
            return
        log.warning("slot %s: pairing deadline passed; ending the worker", self.slot_id)
        try:
            self.store.end_pairing(self.slot_id, "deadline")
        except redis.RedisError as err:
            # The reconciler ends a pairing whose worker is gone and whose deadline passed.
            log.warning("slot %s: could not record the pairing's end (%s); the reconciler will",
                        self.slot_id, type(err).__name__)
        self._end("pairing_deadline")

    # --- wiping ---

    def _teardown(self, reason: str) -> None:
        """Log out from the network, delete every credential and key file, mark the slot clean.

        Runs once: a kill's logout and the network's echo of it may both ask for it."""
        with self._teardown_lock:
            if self._torn_down:
                return
            self._torn_down = True
            self._end("torn_down")
            # Log out while the session is still up (whatsmeow needs its client for that), then stop.
            # After the phone's own unlink the device is already gone: nothing to tell WhatsApp.
            if reason != "logged_out":
                self.engine.logout()
            self.engine.stop()
            slotfiles.wipe(self.slot_dir)
            try:
                sessions.for_slot(self.settings, self.slot_id, self.slot_dir).wipe()  # rows too, with WHIN_SESSION_DB
            except SessionStoreUnavailable as err:
                # The teardown flag stays: the reconciler starts the worker again, which wipes then.
                log.error("slot %s: files wiped, but not its session record (%s); trying again on the next start",
                          self.slot_id, err)
                return
            # Not recorded (stopped while Redis was away): the teardown flag stays, and the reconciler
            # starts the worker again for it, which finds nothing left to wipe and records it then.
            outcome = self.patience.retry("the end of the teardown", lambda: self.store.finish_teardown(self.slot_id))
            if outcome is GAVE_UP:
                log.warning("slot %s: wiped, but Redis never took the teardown's end (%s)", self.slot_id, reason)
                return
            log.info("slot %s: logged out and wiped (%s)", self.slot_id, reason)

    def _release_lost_credentials(self, enrollment: str | None) -> None:
        """The line cannot be served without its session: it ends as an unlink would, with its one
        terminal event (``logged_out``, reason ``credentials_lost``), so inmovilla hears of it. Refused
        when a kill or an eviction ended the enrollment first; the wipe applies all the same."""
        with contextlib.suppress(Refused):
            self.patience.until_queued("a lost session", lambda: self.store.release(
                self.slot_id, "logged_out", (SlotStatus.ACTIVE.value, SlotStatus.SLEEPING.value),
                enrollment=enrollment, outbox=self.publisher.outbox(), detail="credentials_lost"))
        self._teardown("credentials_lost")
