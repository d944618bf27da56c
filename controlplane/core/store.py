"""The slot store: slots, lines and commands in Redis, and the atomic steps that keep line <-> slot one-to-one.

Keys are spelled in keys.py, the Lua scripts are in scripts.py, the metrics writes in stats.py, the
command queue in commands.py, the client and the WATCH/MULTI/EXEC loop in connection.py.

Every change that touches a line and a slot at once runs as one Lua script, so no reader can ever
see two slots with one line. A transition that inmovilla hears about (pairing, eviction, release,
sleep, resume) can take an ``events.Outbox``: the script then runs inside a WATCH/MULTI/EXEC that
also numbers and queues its slot.status events, so the change and its report happen together.
Readers that need several keys use MULTI (a transaction pipeline), which Redis runs without
interleaving any script.

A step that cannot be done raises ``Refused`` with a store code (``unknown_slot``, ``not_pairing``,
``wrong_state``, ``enrollment_ended``) and ``state``, the slot's phase as the step found it; callers
map those to the contract's own codes (lifecycle.py).
"""

import time
import uuid
from dataclasses import dataclass

import redis

from controlplane.core import ids, scripts, stats
from controlplane.core.commands import CommandQueue
from controlplane.core.connection import connect, transition
from controlplane.core.errors import Refused
from controlplane.core.keys import LINES, NUDGE, SLOTS, command_key, slot_key, slot_stats_key
from controlplane.core.scripts import refusal, refused
from controlplane.core.states import SlotPhase, SlotStatus

# What a Slot is read from (Slot.from_hash): all() fetches these fields, not whole hashes.
SLOT_FIELDS = ("status", "line", "pairing", "pair_deadline", "qr", "qr_expires_at", "connected", "teardown",
               "pair_error", "enrollment", "host")


def wants_worker(status: str, teardown: bool, pairing: bool, pair_deadline: float | None, now: float) -> bool:
    """A slot's worker runs while its line is active, while it pairs, and while it must be wiped. Of
    plain values, so that a listing of 1,000 slots can ask it without building a Slot for each."""
    if teardown or status == SlotStatus.ACTIVE:
        return True
    return pairing and (pair_deadline or 0) > now


@dataclass(frozen=True)
class Slot:
    id: str
    status: SlotStatus
    line: str | None = None
    pairing: bool = False
    pair_deadline: float | None = None
    qr: str | None = None
    qr_expires_at: float | None = None
    connected: bool = False
    teardown: bool = False
    pair_error: str | None = None
    enrollment: str | None = None
    host: str | None = None  # the slot host it is placed on (core/hosts.py); None: not placed yet

    @classmethod
    def from_hash(cls, slot_id: str, h: dict) -> "Slot":
        def num(name):
            return float(h[name]) if h.get(name) else None

        return cls(
            id=slot_id,
            status=SlotStatus(h.get("status", SlotStatus.AVAILABLE.value)),
            line=h.get("line") or None,
            pairing=h.get("pairing") == "1",
            pair_deadline=num("pair_deadline"),
            qr=h.get("qr") or None,
            qr_expires_at=num("qr_expires_at"),
            connected=h.get("connected") == "1",
            teardown=h.get("teardown") == "1",
            pair_error=h.get("pair_error") or None,
            enrollment=h.get("enrollment") or None,
            host=h.get("host") or None,
        )

    def wants_worker(self, now: float) -> bool:
        return wants_worker(self.status, self.teardown, self.pairing, self.pair_deadline, now)

    @property
    def phase(self) -> SlotPhase:
        """As the scripts see it (scripts.phase): pairing and resetting are moments of ``available``."""
        if self.pairing:
            return SlotPhase.PAIRING
        if self.teardown:
            return SlotPhase.RESETTING
        return SlotPhase(self.status.value)


class SlotStore(CommandQueue):
    """Slots, lines and commands (commands.py) in Redis. Methods that change state are atomic."""

    def __init__(self, client: redis.Redis):
        self.redis = client
        self._pair_success = client.register_script(scripts.PAIR_SUCCESS)
        self._release = client.register_script(scripts.RELEASE)
        self._move = client.register_script(scripts.MOVE)
        self._begin_pairing = client.register_script(scripts.BEGIN_PAIRING)
        self._end_pairing = client.register_script(scripts.END_PAIRING)
        self._set_qr = client.register_script(scripts.SET_QR)

    @classmethod
    def from_url(cls, url: str) -> "SlotStore":
        return cls(connect(url))

    # --- provisioning and reads ---

    def create_slots(self, count: int) -> list[str]:
        created = []
        while len(created) < count:
            slot_id = ids.new_slot_id()
            # SADD answers 0 for an id that exists (or existed): never reuse one.
            if self.redis.sadd(SLOTS, slot_id):
                self.redis.hset(slot_key(slot_id), mapping={"status": SlotStatus.AVAILABLE.value,
                                                             "created": f"{time.time():.3f}"})
                created.append(slot_id)
        return created

    def get(self, slot_id: str) -> Slot | None:
        h = self.redis.hgetall(slot_key(slot_id))
        return Slot.from_hash(slot_id, h) if h else None

    def require(self, slot_id: str) -> Slot:
        slot = self.get(slot_id)
        if slot is None:
            raise Refused("unknown_slot", f"There is no slot {slot_id}.")
        return slot

    def all(self) -> list[Slot]:
        """Every slot, sorted by id, read as one consistent snapshot."""
        return [Slot.from_hash(slot_id, fields) for slot_id, fields in self.fields(SLOT_FIELDS)]

    def fields(self, names: tuple[str, ...]) -> list[tuple[str, dict]]:
        """Every slot's id and ``names`` fields (``status`` among them), sorted by id.

        One SORT ... GET, not a pipeline of one HGETALL per slot: a single command is a consistent
        snapshot as MULTI was, and it costs the client one reply instead of ~20 µs of redis-py per
        slot (GET /slots with 500 slots: 1-7 ms instead of ~20, measured by bench/host_scale.py)."""
        rows = self._per_slot([slot_key("*") + "->" + name for name in names])
        slots = []
        for slot_id, values in rows:
            found = {name: value for name, value in zip(names, values, strict=True) if value is not None}
            if "status" in found:  # no status: a slot whose hash create_slots has not written yet
                slots.append((slot_id, found))
        return slots

    def slot_counters(self, names: tuple[str, ...]) -> list[tuple[str, tuple]]:
        """Every slot's id and its ``names`` counters (stats.py's per-slot hash; None when never counted)."""
        return self._per_slot([slot_stats_key("*") + "->" + name for name in names])

    def _per_slot(self, patterns: list[str]) -> list[tuple[str, list]]:
        flat = self.redis.sort(SLOTS, alpha=True, get=["#", *patterns])
        width = len(patterns) + 1
        return [(flat[i], flat[i + 1:i + width]) for i in range(0, len(flat), width)]

    def place(self, slot_id: str, host: str | None, expected: str | None) -> bool:
        """Put the slot on ``host`` (None: on no host) if it is still on ``expected``: of two agents
        placing one slot at once, one wins. False when it had moved meanwhile (or is gone). A slot that
        leaves a host is not connected until its worker on the next one says so."""
        key = slot_key(slot_id)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                if not pipe.exists(key) or (pipe.hget(key, "host") or None) != expected:
                    return False
                pipe.multi()
                if host:
                    pipe.hset(key, "host", host)
                else:
                    pipe.hdel(key, "host")
                if expected and host != expected:
                    # Said by the worker it leaves (a dead host's says so for ever): the new one
                    # says it again once it is connected.
                    pipe.hdel(key, "connected")
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def lines(self) -> dict[str, str]:
        return self.redis.hgetall(LINES)

    def slot_for_line(self, line: str) -> str | None:
        return self.redis.hget(LINES, line)

    # --- transitions ---

    def begin_pairing(self, slot_id: str, deadline: float) -> bool:
        """Mark the slot as pairing; False when it already was (and is not overdue)."""
        result = _call(self._begin_pairing, [slot_key(slot_id)], [f"{deadline:.3f}", time.time()])
        return result == "started"

    def end_pairing(self, slot_id: str, reason: str = "ended") -> bool:
        return bool(self._end_pairing(keys=[slot_key(slot_id)], args=[reason]))

    def set_qr(self, slot_id: str, code: str, expires_at: float) -> bool:
        return bool(self._set_qr(keys=[slot_key(slot_id)], args=[code, f"{expires_at:.3f}"]))

    def pair_success(self, slot_id: str, line: str, enrollment: str | None = None, outbox=None) -> str | None:
        """Map line -> slot atomically as a new enrollment; return the slot that held the line before
        (now evicted). With an outbox, the same step queues ``evicted`` for that slot, then ``enrolled``.

        The line's holder is read first (under WATCH with an outbox), so that its keys reach the script
        in KEYS; if the line changed hands meanwhile the script says to whom, and we try again with it."""
        enrollment = enrollment or uuid.uuid4().hex

        def call(holder: str):
            evicted = holder if holder and holder != slot_id else None
            keys = [slot_key(slot_id), LINES, NUDGE, *([slot_key(evicted), command_key(evicted)] if evicted else [])]
            return evicted, keys, [slot_id, line, enrollment, holder]

        if outbox is None:
            holder = self.redis.hget(LINES, line) or ""
            while True:
                _, keys, args = call(holder)
                try:
                    return self._pair_success(keys=keys, args=args) or None
                except redis.ResponseError as err:
                    holder = scripts.stale_holder(err)
                    if holder is None:
                        raise refusal(err) from None

        def decide(pipe):
            phase = _phase(pipe.hgetall(slot_key(slot_id)))
            if phase is not SlotPhase.PAIRING:
                raise refused("not_pairing", phase)
            evicted, keys, args = call(pipe.hget(LINES, line) or "")
            events = [(evicted, line, "evicted", f"paired on slot {slot_id}")] if evicted else []
            events.append((slot_id, line, "enrolled", None))
            return evicted, events, self._pair_success, keys, args

        return transition(self.redis, [slot_key(slot_id), LINES], decide, outbox)

    def release(self, slot_id: str, reason: str, allowed: tuple[str, ...], enrollment: str | None = None,
                outbox=None, detail: str | None = None) -> str | None:
        """Unmap the slot's line, mark its credentials for wiping; return the line it had.

        ``allowed``: the phases (states.SlotPhase) it may be released from. ``enrollment``: release only
        that enrollment (refused once it has ended: killed, evicted or unlinked already). With an
        outbox, the same step queues the slot.status ``reason`` (with ``detail`` as its reason) when
        there was a line: the one terminal event of the enrollment."""
        keys = [slot_key(slot_id), LINES, command_key(slot_id), NUDGE]
        args = [slot_id, reason, ",".join(allowed), enrollment or ""]
        if outbox is None:
            return _call(self._release, keys, args) or None

        def decide(pipe):
            line = _releasable(pipe.hgetall(slot_key(slot_id)), allowed, enrollment)
            return line, [(slot_id, line, reason, detail)] if line else [], self._release, keys, args

        return transition(self.redis, [slot_key(slot_id)], decide, outbox)

    def move(self, slot_id: str, source: SlotStatus, target: SlotStatus, outbox=None) -> None:
        """A linked slot's plain status change; with an outbox, queues the slot.status ``target``."""
        keys, args = [slot_key(slot_id)], [source.value, target.value]
        if outbox is None:
            _call(self._move, keys, args)
            return

        def decide(pipe):
            h = pipe.hgetall(slot_key(slot_id))
            phase = _phase(h)
            if phase != source.value:
                raise refused("wrong_state", phase)
            line = h.get("line")
            return None, [(slot_id, line, target.value, None)] if line else [], self._move, keys, args

        transition(self.redis, [slot_key(slot_id)], decide, outbox)

    def set_connected(self, slot_id: str, connected: bool) -> None:
        if connected:
            self.redis.hset(slot_key(slot_id), "connected", "1")
        else:
            self.redis.hdel(slot_key(slot_id), "connected")

    def finish_teardown(self, slot_id: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(slot_key(slot_id), "teardown", "connected")
            pipe.delete(command_key(slot_id))
            pipe.execute()

    # --- counters (stats.py) ---

    def count(self, name: str, by: int = 1) -> None:
        stats.count(self.redis, name, by)

    def count_for_slot(self, slot_id: str, name: str) -> None:
        stats.count_for_slot(self.redis, slot_id, name)


def _call(script, keys, args):
    try:
        return script(keys=keys, args=args)
    except redis.ResponseError as err:
        raise refusal(err) from None


def _phase(h: dict) -> SlotPhase:
    """scripts.phase on a slot's hash, in Python (Slot.phase); refused when there is no such slot."""
    if not h.get("status"):
        raise refused("unknown_slot", None)
    return Slot.from_hash("", h).phase


def _releasable(h: dict, allowed: tuple[str, ...], enrollment: str | None) -> str | None:
    """scripts.RELEASE's checks on a slot's hash, in Python: the line a release would free, or its refusal."""
    phase = _phase(h)
    if phase not in allowed:
        raise refused("wrong_state", phase)
    if enrollment and h.get("enrollment") != enrollment:
        raise refused("enrollment_ended", phase)
    return h.get("line") or None
