"""Make supervisord match what Redis says should run: level-based, so any drift gets repaired.

``plan(slots, programs, now)`` is pure and table-tested; ``Reconciler.apply`` carries it out and
each action is idempotent. Run as ``python -m controlplane.reconciler`` under supervisord.

Read order matters: supervisord's states first, Redis second. The API writes Redis before it starts
or stops a worker, so a worker seen running was already wanted by the time Redis is read.
"""

import contextlib
import logging
import time
from dataclasses import dataclass
from enum import StrEnum

import redis

from controlplane.core import lifeline, logs
from controlplane.core.config import Settings
from controlplane.core.errors import ServiceUnavailable
from controlplane.core.states import SlotStatus
from controlplane.core.store import Slot, SlotStore
from controlplane.messaging.delivery import recover_abandoned
from controlplane.messaging.events import bytes_connection
from controlplane.supervisor import RUNNING_STATES, STOPPED_STATES, ProgramMissing, Supervisor

log = logging.getLogger(__name__)

AOF_COMPACT_SECONDS = 300


class ActionKind(StrEnum):
    ADD = "add"  # write the program's file and load it into supervisord
    START = "start"
    STOP = "stop"
    END_PAIRING = "end_pairing"  # a pairing whose worker is gone and whose deadline passed


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    slot_id: str


def should_run(slot: Slot, now: float) -> bool:
    """A slot's worker runs while its line is active, while it pairs, and while it must be wiped."""
    if slot.teardown or slot.status is SlotStatus.ACTIVE:
        return True
    return slot.pairing and (slot.pair_deadline or 0) > now


def plan(slots: list[Slot], programs: dict[str, str], now: float) -> list[Action]:
    """The actions that bring supervisord's ``programs`` (slot id -> state name) in line with ``slots``."""
    actions = []
    for slot in slots:
        state = programs.get(slot.id)
        run = should_run(slot, now)
        if state is None:
            actions.append(Action(ActionKind.ADD, slot.id))
        if slot.pairing and not run and (state is None or state in STOPPED_STATES):
            actions.append(Action(ActionKind.END_PAIRING, slot.id))
        if run and (state is None or state in STOPPED_STATES):
            actions.append(Action(ActionKind.START, slot.id))
        elif not run and state in RUNNING_STATES:
            actions.append(Action(ActionKind.STOP, slot.id))
    return actions


class Reconciler:
    def __init__(self, store: SlotStore, supervisor: Supervisor, interval: float, rq_connection=None,
                 compact_aof: bool = False):
        self.store = store
        self.supervisor = supervisor
        self.interval = interval
        self.rq_connection = rq_connection
        self.compact_aof = compact_aof
        self._compacted = time.monotonic()
        self._redis_down_since: float | None = None

    def once(self) -> list[Action]:
        programs = self.supervisor.slot_states()  # first: see the module's note on read order
        actions = plan(self.store.all(), programs, time.time())
        self.apply(actions)
        if self.rq_connection is not None:
            # Deliveries whose worker died mid-POST: retried now rather than at a worker's next maintenance.
            recover_abandoned(self.rq_connection)
        if self.compact_aof and time.monotonic() - self._compacted > AOF_COMPACT_SECONDS:
            # The embedded Redis's append-only file keeps the sealed envelopes of delivered events until
            # it is rewritten: rewrite it regularly so they are gone from disk within minutes.
            self._compacted = time.monotonic()
            with contextlib.suppress(redis.ResponseError):  # a rewrite already running is fine
                self.store.redis.bgrewriteaof()
        return actions

    def apply(self, actions: list[Action]) -> None:
        to_add = [a.slot_id for a in actions if a.kind is ActionKind.ADD]
        if to_add:
            self.supervisor.add_programs(to_add)
        for action in actions:
            log.info("reconcile: %s slot %s", action.kind.value, action.slot_id)
            try:
                if action.kind is ActionKind.START:
                    self.supervisor.start(action.slot_id)
                elif action.kind is ActionKind.STOP:
                    self.supervisor.stop(action.slot_id, wait=False)
                elif action.kind is ActionKind.END_PAIRING:
                    self.store.end_pairing(action.slot_id)
            except ProgramMissing:
                log.warning("reconcile: slot %s has no program yet; next pass adds it", action.slot_id)

    def run_forever(self) -> None:
        while True:
            self.step()

    def step(self) -> None:
        """One pass and the wait for the next. Nothing it meets ends the loop: Redis or supervisord
        away (restarting, failing over) is waited out, and said once in the log, as JSON like the rest."""
        try:
            self.once()
            self._redis_back()
        except ServiceUnavailable as err:
            log.warning("reconcile: %s", err.detail)
        except redis.RedisError as err:
            self._redis_lost(err)
            time.sleep(self.interval)
            return
        except Exception:  # the loop must outlive a bad pass
            log.exception("reconcile pass failed")
            time.sleep(self.interval)
            return
        try:
            self.store.wait_for_nudge(self.interval)  # a Redis call too: inside the try, since issue 10
        except redis.RedisError as err:
            self._redis_lost(err)
            time.sleep(self.interval)

    def _redis_lost(self, err: redis.RedisError) -> None:
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            log.warning("reconcile: Redis unreachable (%s); trying again every %.1f s", type(err).__name__,
                        self.interval)

    def _redis_back(self) -> None:
        if self._redis_down_since is not None:
            log.info("reconcile: Redis reachable again after %.1f s", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None


def main() -> None:
    logs.configure()
    lifeline.end_with_supervisord()
    settings = Settings.from_env()
    store = SlotStore.from_url(settings.redis_url)
    Reconciler(store, Supervisor.from_settings(settings), settings.reconcile_interval,
               bytes_connection(settings), compact_aof=settings.embedded_redis).run_forever()


if __name__ == "__main__":
    main()
