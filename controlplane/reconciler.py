"""Make supervisord match what Redis says should run: level-based, so any drift gets repaired.

``plan(slots, programs, now)`` is pure and table-tested; ``bound_starts`` (pure too) holds back the
starts beyond WHIN_START_CONCURRENCY, so a restart with hundreds of active slots is a ramp, not a
stampede; ``Reconciler.apply`` carries the rest out and each action is idempotent. Run as
``python -m controlplane.reconciler`` under supervisord.

Read order matters: supervisord's states first, Redis second. The API writes Redis before it starts
or stops a worker, so a worker seen running was already wanted by the time Redis is read.
"""

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

import redis

from controlplane.core import lifeline, logs
from controlplane.core.config import Role, Settings, default_start_concurrency
from controlplane.core.errors import ServiceUnavailable
from controlplane.core.hosts import HostRegistry, NameTaken, host_nudge_key
from controlplane.core.keys import lease_host, lease_key
from controlplane.core.store import Slot, SlotStore
from controlplane.messaging.backlog import Sweep
from controlplane.messaging.events import bytes_connection, drain_timeout
from controlplane.placement import Placement
from controlplane.supervisor import RUNNING_STATES, STOPPED_STATES, ProgramMissing, Supervisor

log = logging.getLogger(__name__)

AOF_COMPACT_SECONDS = 300
# While starts wait for a free place, the next pass comes this soon rather than after the interval:
# a place frees as soon as a worker connects, and a pass is cheap (one supervisord and one Redis read).
WAITING_PASS_SECONDS = 0.25


class ActionKind(StrEnum):
    ADD = "add"  # write the program's file and load it into supervisord
    START = "start"
    STOP = "stop"
    END_PAIRING = "end_pairing"  # a pairing whose worker is gone and whose deadline passed
    REMOVE = "remove"  # the program of a slot placed on another host: gone from this supervisord


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    slot_id: str


def should_run(slot: Slot, now: float) -> bool:
    return slot.wants_worker(now)


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


def plan_foreign(slots: list[Slot], programs: dict[str, str], host: str, single_machine: bool) -> list[Action]:
    """The programs here of slots that are not this host's (mine()): placed on another host (moved,
    drained away), or on none (taken off it while asleep). Stopped, then removed, so that this host
    never runs them again and `supervisorctl status` lists its own."""
    own = {slot.id for slot in mine(slots, host, single_machine)}
    elsewhere = {slot.id for slot in slots if slot.id not in own}
    actions = []
    for slot_id, state in sorted(programs.items()):
        if slot_id in elsewhere:
            kind = ActionKind.STOP if state in RUNNING_STATES else ActionKind.REMOVE
            actions.append(Action(kind, slot_id))
    return actions


def mine(slots: list[Slot], host: str, single_machine: bool) -> list[Slot]:
    """The slots this host's agent runs: those placed on it, and, on a single machine (WHIN_ROLE=all),
    those placed nowhere yet (provisioned, never started), as before there were hosts."""
    return [slot for slot in slots if slot.host == host or (slot.host is None and single_machine)]


# --- the start budget (issue 14) ---


def starting(slots: list[Slot], programs: dict[str, str], ages: dict[str, float], settle: float) -> set[str]:
    """The slots whose worker is still starting: its program runs, it has not connected yet, and it was
    spawned less than ``settle`` seconds ago. A worker that never connects (pairing, a network down, a
    teardown) stops counting after ``settle``, so it cannot hold the ramp forever. A program whose age
    is unknown counts as settled: only supervisord's word that it just spawned holds a place."""
    return {
        slot.id for slot in slots
        if programs.get(slot.id) in RUNNING_STATES and not slot.connected and ages.get(slot.id, settle) < settle
    }


def start_rank(slot: Slot) -> int:
    """Which waiting start goes first: a teardown (credentials to wipe: a /kill's promise), then a
    pairing (a person holds a phone up to a QR code, against a deadline), then active lines."""
    if slot.teardown:
        return 0
    if slot.pairing:
        return 1
    return 2


@dataclass(frozen=True)
class Bounded:
    actions: list[Action]  # what to do now
    waiting: list[str]  # slots whose start waits for a free place (a later pass)


def bound_starts(actions: list[Action], slots: list[Slot], programs: dict[str, str], ages: dict[str, float],
                 concurrency: int, settle: float) -> Bounded:
    """``actions`` with at most ``concurrency`` workers starting at once (those already starting
    included); ADD, STOP and END_PAIRING are never held back. The starts kept come last, teardown
    first, then pairing, then active (a stable sort: the store's order within a rank)."""
    by_id = {slot.id: slot for slot in slots}
    places = max(0, concurrency - len(starting(slots, programs, ages, settle)))
    starts = sorted((a for a in actions if a.kind is ActionKind.START), key=lambda a: start_rank(by_id[a.slot_id]))
    others = [a for a in actions if a.kind is not ActionKind.START]
    return Bounded(others + starts[:places], [a.slot_id for a in starts[places:]])


def held_elsewhere(actions: list[Action], holders: dict[str, str | None], host: str) -> list[str]:
    """The slots among ``actions``' starts whose lease a worker of another host still holds (``holders``:
    slot id -> the host in its lease). Started later: the worker would only wait for that lease, and a
    slot would have a process on two hosts while one drains or its lease runs out."""
    return [a.slot_id for a in actions if a.kind is ActionKind.START and holders.get(a.slot_id) not in (None, host)]


class HostAgent:
    """This machine as a slot host: its heartbeat, and the placing of slots no live host runs."""

    def __init__(self, settings: Settings, store: SlotStore, hosts: HostRegistry):
        self.settings = settings
        self.name = settings.host_name
        self.single_machine = settings.role is Role.ALL
        self.hosts = hosts
        self.placement = Placement(settings, store, hosts)
        self._started = False

    def beat(self) -> None:
        """Each pass; the first also starts the heartbeat's own thread, so that a long pass (placing
        hundreds of a dead host's slots) or a stuck one (supervisord slow to answer) never makes this
        host, whose workers go on serving, look dead to the others."""
        self._beat_once(started=not self._started)
        if not self._started:
            self._started = True
            threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True).start()

    def _beat_forever(self) -> None:
        every = max(0.1, min(self.settings.reconcile_interval, self.settings.host_dead_after / 4))
        while True:
            time.sleep(every)
            # Redis away: the pass says so in the log, and this beats again once it is back.
            with contextlib.suppress(redis.RedisError):
                self._beat_once()

    def _beat_once(self, started: bool = False) -> None:
        try:
            # With the embedded Redis no other machine can share the name: nothing to claim.
            self.hosts.beat(self.name, self.settings.host_capacity, started=started,
                            instance="" if self.settings.embedded_redis else self.settings.host_instance)
        except NameTaken:
            # Another machine's launcher holds this name now (this one was away longer than the dead
            # time): its slots are that machine's. This agent ends; its workers' leases fail too.
            log.critical("reconcile: another machine runs as host %s now; this agent stops (give each machine "
                         "its own WHIN_HOST_NAME)", self.name)
            logging.shutdown()
            os._exit(2)

    def place_orphans(self, slots: list[Slot]) -> bool:
        """Place each slot that should run and has no live host to run it (never placed, or its host
        died and its session can move); True if any was placed."""
        now = time.time()
        alive = {h.name for h in self.hosts.all() if h.alive(now, self.settings.host_dead_after)}
        placed = False
        view = None  # read once, at the first orphan: not once per slot
        for slot in slots:
            if not slot.wants_worker(now) or slot.host in alive:
                continue
            if slot.host and not self.placement.movable:
                continue  # pinned to the host that holds its files
            before = slot.host
            view = view or self.placement.view()
            after = self.placement.place(slot, view=view)
            if after and after != before:
                log.info("reconcile: slot %s placed on host %s (was %s)", slot.id, after, before or "none")
                placed = True
        return placed


class Reconciler:
    def __init__(self, store: SlotStore, supervisor: Supervisor, interval: float, delivery_sweep=None,
                 compact_aof: bool = False, start_concurrency: int | None = None,
                 start_settle: float = 15.0, host: "HostAgent | None" = None, manage_slots: bool = True):
        self.store = store
        # This machine's slot host (its heartbeat and placement); None: every slot is this
        # supervisord's, as on one machine before there were hosts. manage_slots=False: no slots
        # here at all (WHIN_ROLE=api), only the delivery sweep.
        self.host = host
        self.manage_slots = manage_slots
        self.supervisor = supervisor
        self.interval = interval
        self.start_concurrency = start_concurrency or default_start_concurrency()
        self.start_settle = start_settle
        self.waiting: list[str] = []  # the starts the last pass held back
        # When this reconciler last started each slot (monotonic): a place in the start budget is held
        # by a start of ours, not by supervisord's own respawns of a worker that crashes at start,
        # which would otherwise look freshly spawned for ever and hold the ramp.
        self._issued: dict[str, float] = {}
        self._began = time.monotonic()
        self.delivery_sweep = delivery_sweep  # backlog.Sweep: the delivery machinery kept whole
        self.compact_aof = compact_aof
        self._compacted = time.monotonic()
        self._redis_down_since: float | None = None

    def once(self) -> list[Action]:
        actions = self._slots_pass() if self.manage_slots else []
        if self.delivery_sweep is not None:
            self.delivery_sweep()
        if self.compact_aof and time.monotonic() - self._compacted > AOF_COMPACT_SECONDS:
            # The embedded Redis's append-only file keeps the sealed envelopes of delivered events until
            # it is rewritten: rewrite it regularly so they are gone from disk within minutes.
            self._compacted = time.monotonic()
            with contextlib.suppress(redis.ResponseError):  # a rewrite already running is fine
                self.store.redis.bgrewriteaof()
        return actions

    def _slots_pass(self) -> list[Action]:
        programs, spawned = self.supervisor.slot_programs()  # first: see the module's note on read order
        slots = self.store.all()
        foreign = []
        if self.host is not None:
            self.host.beat()
            if self.host.place_orphans(slots):  # a dead host's slots, or new ones: placed, then read again
                slots = self.store.all()
            foreign = plan_foreign(slots, programs, self.host.name, self.host.single_machine)
            slots = mine(slots, self.host.name, self.host.single_machine)
        ages = self.start_ages(spawned)
        planned = plan(slots, programs, time.time()) + foreign
        if self.host is not None:
            held = set(held_elsewhere(planned, self.lease_holders(planned), self.host.name))
            planned = [a for a in planned if not (a.kind is ActionKind.START and a.slot_id in held)]
        bounded = bound_starts(planned, slots, programs, ages, self.start_concurrency, self.start_settle)
        if bounded.waiting and not self.waiting:
            log.info("reconcile: %d slot starts wait for a place (at most %d starting at once)",
                     len(bounded.waiting), self.start_concurrency)
        self.waiting = bounded.waiting
        actions = bounded.actions
        self.apply(actions)
        return actions

    def lease_holders(self, actions: list[Action]) -> dict[str, str | None]:
        """The host holding each to-be-started slot's lease, in one MGET (none when nothing starts)."""
        starts = [a.slot_id for a in actions if a.kind is ActionKind.START]
        if not starts:
            return {}
        tokens = self.store.redis.mget([lease_key(slot_id) for slot_id in starts])
        return {slot_id: lease_host(token) for slot_id, token in zip(starts, tokens, strict=True)}

    def start_ages(self, spawned: dict[str, float]) -> dict[str, float]:
        """Seconds since each recent start of ours. In this reconciler's first settle seconds, also
        supervisord's ages (``spawned``) of the workers it did not start: a ramp a previous reconciler
        began, before it was restarted."""
        now = time.monotonic()
        self._issued = {slot_id: at for slot_id, at in self._issued.items() if now - at < self.start_settle}
        ages = {slot_id: now - at for slot_id, at in self._issued.items()}
        if now - self._began < self.start_settle:
            ages = {**spawned, **ages}
        return ages

    def apply(self, actions: list[Action]) -> None:
        to_add = [a.slot_id for a in actions if a.kind is ActionKind.ADD]
        if to_add:
            self.supervisor.add_programs(to_add)
        for action in actions:
            log.info("reconcile: %s slot %s", action.kind.value, action.slot_id)
            try:
                if action.kind is ActionKind.START:
                    self._issued[action.slot_id] = time.monotonic()
                    self.supervisor.start(action.slot_id)
                elif action.kind is ActionKind.STOP:
                    self.supervisor.stop(action.slot_id, wait=False)
                elif action.kind is ActionKind.END_PAIRING:
                    self.store.end_pairing(action.slot_id)
                elif action.kind is ActionKind.REMOVE:
                    self.supervisor.remove(action.slot_id)
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
            # A Redis call too: inside the try, since issue 10. Starts waiting: come back soon.
            self.store.wait_for_nudge(min(self.interval, WAITING_PASS_SECONDS) if self.waiting else self.interval,
                                      own=host_nudge_key(self.host.name) if self.host else None)
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
    # A worker that has not connected within connect_timeout (the API's own wait for a reconnect) is
    # as started as it will get: it stops holding a place in the start budget.
    # The delivery machinery's sweep runs where the delivery workers do (all, api); the slots' pass
    # where slots run (all, host).
    sweep = None
    if settings.role is not Role.HOST:
        sweep = Sweep(bytes_connection(settings), settings.delivery_workers, drain_timeout(settings))
    host = None
    if settings.role is not Role.API:
        host = HostAgent(settings, store, HostRegistry(store.redis, settings.host_dead_after))
    Reconciler(store, Supervisor.from_settings(settings), settings.reconcile_interval, sweep,
               compact_aof=settings.embedded_redis,
               start_concurrency=settings.start_concurrency, start_settle=settings.connect_timeout,
               host=host, manage_slots=host is not None).run_forever()


if __name__ == "__main__":
    main()
