"""Riding out a Redis outage: back-off, the ways of retrying, and the inbound events not queued yet.

Redis may go away at any moment (restarted, failed over, full). The worker rides it out rather than
exit, because whatsmeow has already acknowledged to WhatsApp every message it hands over: an inbound
event (a message, or a pairing or unlink that queues a webhook event) is retried on the engine's
thread until it is queued (``Patience.until_queued``), and the process never ends while one is
unqueued (``Unqueued.finish``), with one exception: a stop (SIGTERM from supervisord) gives them
STOP_BUDGET_SECONDS, then the worker says in its log how many it gives up (never what they said).
Everything else the worker tells Redis is retried with back-off on the main thread
(``Patience.retry``: commands, replies, the end of a teardown) or tried once (``best_effort``: a
metric, or the connected flag, which the command loop re-sends once Redis answers again).
"""

import contextlib
import logging
import threading
import time

import redis

from controlplane.core.errors import Refused

log = logging.getLogger(__name__)

# After SIGTERM, how long unqueued inbound events (and the end of a teardown) may still wait for
# Redis: under a slot program's stopwaitsecs (10 s, controlplane/templates/slot.conf), after which
# supervisord sends SIGKILL, with room for the engine's own stop (whatsmeow drains for 0.5 s).
STOP_BUDGET_SECONDS = 7.0
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MOST_SECONDS = 5.0

GAVE_UP = object()  # what Patience.retry returns when it stops trying


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


class Patience:
    """How long the worker waits for Redis: until it answers, until a deadline, or until a stop's budget
    is spent. ``stop()`` starts that budget (SIGTERM)."""

    def __init__(self, slot_id: str):
        self.slot_id = slot_id
        self.stop_requested = threading.Event()
        self._stop_requested_at: float | None = None

    def stop(self) -> bool:
        """From now on, STOP_BUDGET_SECONDS at most; True the first time."""
        first = self._stop_requested_at is None
        if first:
            self._stop_requested_at = time.monotonic()
        self.stop_requested.set()
        return first

    def budget_left(self) -> float:
        if self._stop_requested_at is None:
            return float("inf")
        return self._stop_requested_at + STOP_BUDGET_SECONDS - time.monotonic()

    def until_queued(self, what: str, call):
        """call() until Redis takes it, however long that is (the calling thread waits meanwhile).
        A refusal is an answer, not an outage: it is raised. Idempotent calls only: an attempt whose
        answer was lost may have been applied."""
        backoff = Backoff()
        while True:
            try:
                result = call()
            except Refused:
                raise
            except Exception as err:  # Redis down, full, restarting: wait and try again
                delay = backoff.next()
                log.error("slot %s: cannot queue %s (%s); retrying in %.1f s", self.slot_id, what,
                          type(err).__name__, delay)
                time.sleep(delay)
                continue
            if backoff.failing:
                log.info("slot %s: queued %s after %.1f s", self.slot_id, what, backoff.reset())
            return result

    def retry(self, what: str, call, until: float | None = None, abort_on_stop: bool = False):
        """call() until Redis answers; GAVE_UP once the wall-clock ``until`` passes, once a stop's
        budget is spent, or (``abort_on_stop``) as soon as a stop is requested."""
        backoff = Backoff()
        while True:
            try:
                return call()
            except redis.RedisError as err:
                stopping = self.stop_requested.is_set()
                if (until is not None and time.time() >= until) or self.budget_left() <= 0 or (
                        abort_on_stop and stopping):
                    return GAVE_UP
                delay = backoff.next()
                log.warning("slot %s: Redis unreachable (%s) for %s; retrying in %.1f s", self.slot_id,
                            type(err).__name__, what, delay)
                if until is not None:
                    delay = max(0.0, min(delay, until - time.time()))
                if stopping:
                    time.sleep(max(0.0, min(delay, self.budget_left())))
                else:
                    self.stop_requested.wait(delay)  # a stop request ends the wait at once

    def best_effort(self, what: str, call) -> None:
        """One try: a metric or a flag the command loop re-sends; not worth waiting for."""
        try:
            call()
        except redis.RedisError as err:
            log.warning("slot %s: Redis unreachable (%s); %s not recorded", self.slot_id, type(err).__name__, what)


class Unqueued:
    """The inbound events the engine has handed over and Redis has not taken yet."""

    def __init__(self, slot_id: str, patience: Patience):
        self.slot_id = slot_id
        self.patience = patience
        self._count = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def holding(self):
        """Counts an inbound event as unqueued while the block runs: finish() waits for it."""
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                self._changed.notify_all()

    def pending(self) -> int:
        with self._changed:
            return self._count

    def finish(self) -> bool:
        """Return once every inbound event the engine handed over is queued: the worker never exits
        with one it could not queue. After a stop request it waits STOP_BUDGET_SECONDS at most, and
        then says how many it gives up (False)."""
        with self._changed:
            if self._count:
                log.warning("slot %s: %d inbound event(s) not queued yet; waiting for Redis before exiting",
                            self.slot_id, self._count)
            while self._count:
                left = self.patience.budget_left()
                if left <= 0:
                    log.error("slot %s: stopping with %d inbound event(s) that Redis never took, after %.0f s "
                              "of the stop's grace: they are lost", self.slot_id, self._count, STOP_BUDGET_SECONDS)
                    return False
                self._changed.wait(min(left, 1.0))
        return True
