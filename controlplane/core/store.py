"""The one place Redis keys are spelled, and the atomic scripts that keep line <-> slot one-to-one.

Keys (prefix ``whin:``), each owned here:
  whin:slots             SET   every slot id ever provisioned (ids are never reused)
  whin:slot:<ID>         HASH  status, line, pairing, pair_deadline, qr, qr_expires_at, connected, teardown,
                               pair_error (why the last pairing ended without a phone), enrollment (an
                               id for the line's current link to this slot: set by pairing, gone once
                               it ends, so that an enrollment can end, and be reported ended, once)
  whin:lines             HASH  line -> slot id, for every enrolled line
  whin:cmd:<ID>          LIST  commands for the slot's worker (JSON), popped by the worker
  whin:reconciler:nudge  LIST  a poke that wakes the reconciler before its next tick
  whin:seq:<line>        INT   the line's event counter (the envelope's "seq")
  whin:reply:<uuid>      LIST  a slot worker's answer to one command (send), expires in a minute
  whin:rate:<line>       STR   the line's send-rate state (GCRA: the theoretical arrival time)
  whin:stats             HASH  counters: delivered, retried, given_up, sent, ... (no content, no numbers)
  whin:stats:latency     HASH  delivery latency histogram: bucket upper bound -> count, plus "sum"
  whin:slotstats:<ID>    HASH  per-slot counters: worker starts, reconnects
  whin:webhook:hold      STR   unix time before which no delivery is attempted (the receiver's Retry-After)
  whin:txn:<uuid>        STR   written by one MULTI/EXEC, for a minute: tells a lost EXEC reply from a
                               transaction that never ran (see committed_despite)

The delivery queue itself lives under rq's own keys (rq:queue:deliveries, rq:job:<id>, ...).

Every change that touches a line and a slot at once runs as one Lua script, so no reader can ever
see two slots with one line. A transition that inmovilla hears about (pairing, eviction, release,
sleep, resume) can take an ``events.Outbox``: the script then runs inside a WATCH/MULTI/EXEC that
also numbers and queues its slot.status events, so the change and its report happen together.
Readers that need several keys use MULTI (a transaction pipeline), which Redis runs without
interleaving any script.
"""

import json
import time
import uuid
from dataclasses import dataclass

import redis

from controlplane.core import ids
from controlplane.core.errors import Refused
from controlplane.core.states import SlotStatus

PREFIX = "whin:"
SLOTS = PREFIX + "slots"
LINES = PREFIX + "lines"
NUDGE = PREFIX + "reconciler:nudge"

# Fields of a slot's hash that only mean something while it is pairing or linked.
_SESSION_FIELDS = ("line", "pairing", "pair_deadline", "qr", "qr_expires_at", "connected")


# redis-py 8 times out every read after 5 s by default, blocking pops included: ours (and rq's) block
# for up to WHIN_SEND_TIMEOUT or rq's dequeue timeout, so reads get a minute before calling Redis dead.
SOCKET_TIMEOUT = 60
CONNECT_TIMEOUT = 5


def connect(url: str, decode_responses: bool = True) -> redis.Redis:
    """A client for the gateway's Redis; rq needs decode_responses=False (it stores bytes)."""
    return redis.Redis.from_url(url, decode_responses=decode_responses, socket_timeout=SOCKET_TIMEOUT,
                                socket_connect_timeout=CONNECT_TIMEOUT,
                                health_check_interval=30)


def slot_key(slot_id: str) -> str:
    return f"{PREFIX}slot:{slot_id}"


def command_key(slot_id: str) -> str:
    return f"{PREFIX}cmd:{slot_id}"


def seq_key(line: str) -> str:
    return f"{PREFIX}seq:{line}"


def txn_key(token: str) -> str:
    return f"{PREFIX}txn:{token}"


def mark_transaction(pipe, token: str) -> None:
    """Inside MULTI: leave a mark that this transaction committed (checked by committed_despite)."""
    pipe.set(txn_key(token), 1, ex=60)


def committed_despite(err: redis.WatchError, client: redis.Redis, token: str) -> bool:
    """Whether a transaction that raised ``err`` committed after all.

    redis-py raises WatchError also when the connection fails while keys are WATCHed, and that
    includes losing EXEC's reply after Redis ran it. Retrying such a transaction would decide again
    on the state it produced (refusing a kill that was done, numbering an event twice); its mark
    says whether it ran. A real WatchError (a watched key changed) never committed."""
    if "occurred while watching" not in str(err):
        return False
    return bool(client.exists(txn_key(token)))


def reply_key(request_id: str) -> str:
    return f"{PREFIX}reply:{request_id}"


def rate_key(line: str) -> str:
    return f"{PREFIX}rate:{line}"


STATS = PREFIX + "stats"
LATENCY = PREFIX + "stats:latency"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


def slot_stats_key(slot_id: str) -> str:
    return f"{PREFIX}slotstats:{slot_id}"


def observe_latency(client, seconds: float) -> None:
    """One delivery's latency into the histogram (buckets stored one by one; metrics.py accumulates)."""
    bucket = next((f"{b:g}" for b in LATENCY_BUCKETS if seconds <= b), "+Inf")
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(LATENCY, bucket, 1)
        pipe.hincrbyfloat(LATENCY, "sum", seconds)
        pipe.execute()
WEBHOOK_HOLD = PREFIX + "webhook:hold"


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
        )


# --- Lua: each script is one atomic step; errors come back as the contract's machine codes. ---

# Release a slot's line and mark its credentials for wiping: kill, eviction and the phone's unlink
# all end here. The worker (or the API, if the worker is gone) wipes and clears `teardown`.
_RELEASE_LUA = """
local function release(prefix, slot, reason)
  local key = prefix .. 'slot:' .. slot
  local line = redis.call('HGET', key, 'line')
  if line and redis.call('HGET', prefix .. 'lines', line) == slot then
    redis.call('HDEL', prefix .. 'lines', line)
  end
  redis.call('HSET', key, 'status', 'available', 'teardown', '1')
  redis.call('HDEL', key, 'line', 'pairing', 'pair_deadline', 'qr', 'qr_expires_at', 'connected', 'enrollment')
  redis.call('DEL', prefix .. 'cmd:' .. slot)
  redis.call('RPUSH', prefix .. 'cmd:' .. slot, cjson.encode({op = 'logout', reason = reason}))
  redis.call('RPUSH', prefix .. 'reconciler:nudge', '1')
  return line or ''
end
"""

_PAIR_SUCCESS = _RELEASE_LUA + """
-- ARGV: prefix, slot, line, enrollment id. Maps line -> slot and evicts whichever slot held the line
-- before. (SlotStore.pair_success mirrors these checks to name the events it queues in the same step.)
local prefix, slot, line, enrollment = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = prefix .. 'slot:' .. slot
if redis.call('EXISTS', key) == 0 then return redis.error_reply('unknown_slot') end
if redis.call('HGET', key, 'pairing') ~= '1' then return redis.error_reply('not_pairing') end
local evicted = ''
local previous = redis.call('HGET', prefix .. 'lines', line)
if previous and previous ~= slot then
  release(prefix, previous, 'evicted')
  evicted = previous
end
redis.call('HSET', prefix .. 'lines', line, slot)
redis.call('HSET', key, 'status', 'active', 'line', line, 'enrollment', enrollment)
redis.call('HDEL', key, 'pairing', 'pair_deadline', 'qr', 'qr_expires_at', 'teardown')
return evicted
"""

_RELEASE = _RELEASE_LUA + """
-- ARGV: prefix, slot, reason, allowed statuses (comma list; pairing counts as 'pairing'), enrollment
-- ('' for any; else only that enrollment may end: a release for one that already ended is refused).
-- (SlotStore.release mirrors these checks in _releasable.)
local prefix, slot, reason, allowed, enrollment = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = prefix .. 'slot:' .. slot
local status = redis.call('HGET', key, 'status')
if not status then return redis.error_reply('unknown_slot') end
if redis.call('HGET', key, 'pairing') == '1' then status = 'pairing' end
if not string.find(',' .. allowed .. ',', ',' .. status .. ',', 1, true) then
  return redis.error_reply('wrong_state:' .. status)
end
if enrollment ~= '' and redis.call('HGET', key, 'enrollment') ~= enrollment then
  return redis.error_reply('wrong_state:ended')
end
return release(prefix, slot, reason)
"""

# ARGV: from-status, to-status. A plain status change of a linked slot (sleep, resume).
_MOVE = """
local key, from, to = KEYS[1], ARGV[1], ARGV[2]
local status = redis.call('HGET', key, 'status')
if not status then return redis.error_reply('unknown_slot') end
if status ~= from then return redis.error_reply('wrong_state:' .. status) end
redis.call('HSET', key, 'status', to)
redis.call('HDEL', key, 'connected')
return status
"""

# ARGV: deadline. Starts pairing on an available slot; returns 'started' or 'already'.
_BEGIN_PAIRING = """
local key, deadline, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local status = redis.call('HGET', key, 'status')
if not status then return redis.error_reply('unknown_slot') end
if status ~= 'available' then return redis.error_reply('wrong_state:' .. status) end
if redis.call('HGET', key, 'teardown') == '1' then return redis.error_reply('wrong_state:teardown') end
local current = tonumber(redis.call('HGET', key, 'pair_deadline') or '0')
if redis.call('HGET', key, 'pairing') == '1' and current > now then return 'already' end
redis.call('HSET', key, 'pairing', '1', 'pair_deadline', deadline)
redis.call('HDEL', key, 'qr', 'qr_expires_at', 'pair_error')
return 'started'
"""

# Clears the pairing flag only if the slot is still pairing (a pair success may have won the race),
# and says why it ended. ARGV: the reason.
_END_PAIRING = """
local key = KEYS[1]
if redis.call('HGET', key, 'pairing') ~= '1' then return 0 end
redis.call('HDEL', key, 'pairing', 'pair_deadline', 'qr', 'qr_expires_at')
redis.call('HSET', key, 'pair_error', ARGV[1])
return 1
"""

# Publishes a QR only while the slot is pairing, so a late code never outlives the pairing.
_SET_QR = """
local key = KEYS[1]
if redis.call('HGET', key, 'pairing') ~= '1' then return 0 end
redis.call('HSET', key, 'qr', ARGV[1], 'qr_expires_at', ARGV[2])
return 1
"""


class SlotStore:
    """Slots, lines and commands in Redis. Methods that change state are atomic."""

    def __init__(self, client: redis.Redis):
        self.redis = client
        self._pair_success = client.register_script(_PAIR_SUCCESS)
        self._release = client.register_script(_RELEASE)
        self._move = client.register_script(_MOVE)
        self._begin_pairing = client.register_script(_BEGIN_PAIRING)
        self._end_pairing = client.register_script(_END_PAIRING)
        self._set_qr = client.register_script(_SET_QR)

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
        slot_ids = sorted(self.redis.smembers(SLOTS))
        with self.redis.pipeline(transaction=True) as pipe:
            for slot_id in slot_ids:
                pipe.hgetall(slot_key(slot_id))
            hashes = pipe.execute()
        return [Slot.from_hash(s, h) for s, h in zip(slot_ids, hashes, strict=True) if h]

    def lines(self) -> dict[str, str]:
        return self.redis.hgetall(LINES)

    def slot_for_line(self, line: str) -> str | None:
        return self.redis.hget(LINES, line)

    # --- transitions ---

    def begin_pairing(self, slot_id: str, deadline: float) -> bool:
        """Mark the slot as pairing; False when it already was (and is not overdue)."""
        result = self._call(self._begin_pairing, [slot_key(slot_id)], [f"{deadline:.3f}", time.time()])
        return result == "started"

    def end_pairing(self, slot_id: str, reason: str = "ended") -> bool:
        return bool(self._end_pairing(keys=[slot_key(slot_id)], args=[reason]))

    def set_qr(self, slot_id: str, code: str, expires_at: float) -> bool:
        return bool(self._set_qr(keys=[slot_key(slot_id)], args=[code, f"{expires_at:.3f}"]))

    def pair_success(self, slot_id: str, line: str, enrollment: str | None = None, outbox=None) -> str | None:
        """Map line -> slot atomically as a new enrollment; return the slot that held the line before
        (now evicted). With an outbox, the same step queues ``evicted`` for that slot, then ``enrolled``."""
        args = [PREFIX, slot_id, line, enrollment or uuid.uuid4().hex]
        if outbox is None:
            return self._call(self._pair_success, [], args) or None

        def decide(pipe):
            if not pipe.exists(slot_key(slot_id)):
                raise _refusal("unknown_slot")
            if pipe.hget(slot_key(slot_id), "pairing") != "1":
                raise _refusal("not_pairing")
            previous = pipe.hget(LINES, line)
            evicted = previous if previous and previous != slot_id else None
            events = [("evicted", evicted, f"paired on slot {slot_id}")] if evicted else []
            events.append(("enrolled", slot_id, None))
            return evicted, [(slot, line, status, reason) for status, slot, reason in events], self._pair_success, args

        return self._transition([slot_key(slot_id), LINES], decide, outbox)

    def release(self, slot_id: str, reason: str, allowed: tuple[str, ...], enrollment: str | None = None,
                outbox=None, detail: str | None = None) -> str | None:
        """Unmap the slot's line, mark its credentials for wiping; return the line it had.

        ``enrollment``: release only that enrollment (refused once it has ended: killed, evicted or
        unlinked already). With an outbox, the same step queues the slot.status ``reason`` (with
        ``detail`` as its reason) when there was a line: the one terminal event of the enrollment."""
        args = [PREFIX, slot_id, reason, ",".join(allowed), enrollment or ""]
        if outbox is None:
            return self._call(self._release, [], args) or None

        def decide(pipe):
            line = _releasable(pipe.hgetall(slot_key(slot_id)), allowed, enrollment)
            return line, [(slot_id, line, reason, detail)] if line else [], self._release, args

        return self._transition([slot_key(slot_id)], decide, outbox)

    def move(self, slot_id: str, source: SlotStatus, target: SlotStatus, outbox=None) -> None:
        """A linked slot's plain status change; with an outbox, queues the slot.status ``target``."""
        if outbox is None:
            self._call(self._move, [slot_key(slot_id)], [source.value, target.value])
            return

        def decide(pipe):
            h = pipe.hgetall(slot_key(slot_id))
            if not h:
                raise _refusal("unknown_slot")
            if h.get("status") != source.value:
                raise _refusal(f"wrong_state:{h.get('status')}")
            line = h.get("line")
            events = [(slot_id, line, target.value, None)] if line else []
            return None, events, self._move, [source.value, target.value], [slot_key(slot_id)]

        self._transition([slot_key(slot_id)], decide, outbox)

    def _transition(self, watched: list[str], decide, outbox):
        """Run a script and queue the events it causes in one MULTI/EXEC.

        ``decide(pipe)`` reads the WATCHed keys, raises the script's refusal if it would refuse, and
        returns (result, events, script, args[, keys]): what the script will do and which
        (slot, line, status, reason) events report it. WATCH makes the script, run at EXEC, meet the
        state decide read; if any of those keys changed meanwhile, nothing is written and we read again."""
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                token, result = uuid.uuid4().hex, None
                try:
                    pipe.watch(*watched)
                    result, events, script, args, *keys = decide(pipe)
                    events = [outbox.status(*e) for e in events]
                    if events:
                        outbox.stage(pipe, events)
                    pipe.multi()
                    script(keys=keys[0] if keys else [], args=args, client=pipe)
                    if events:
                        outbox.write(pipe)
                    mark_transaction(pipe, token)
                    pipe.execute()
                    return result
                except redis.WatchError as err:
                    if committed_despite(err, self.redis, token):
                        return result
                    continue
                except redis.ResponseError as err:
                    raise _refusal(str(err)) from None

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

    # --- commands to a slot's worker, and pokes for the reconciler ---

    def push_command(self, slot_id: str, command: dict) -> str:
        """Queue a command; returns it as queued, for withdraw_command."""
        raw = json.dumps(command)
        self.redis.rpush(command_key(slot_id), raw)
        return raw

    def withdraw_command(self, slot_id: str, raw: str) -> bool:
        """Take back a command the worker has not popped yet; False when it already took it."""
        return bool(self.redis.lrem(command_key(slot_id), 1, raw))

    def ask(self, slot_id: str, command: dict, timeout: float) -> tuple[dict | None, bool]:
        """Send a command that expects an answer; wait for it. Returns (answer, taken): with no answer
        in time the command is withdrawn if still unread, and ``taken`` says whether the worker had it."""
        request_id = uuid.uuid4().hex
        raw = self.push_command(slot_id, {**command, "reply": request_id, "deadline": time.time() + timeout})
        answer = self.wait_reply(request_id, timeout=timeout)
        if answer is not None:
            return answer, True
        return None, not self.withdraw_command(slot_id, raw)

    def push_reply(self, request_id: str, reply: dict) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(reply_key(request_id), json.dumps(reply))
            pipe.expire(reply_key(request_id), 60)
            pipe.execute()

    def wait_reply(self, request_id: str, timeout: float) -> dict | None:
        item = self.redis.blpop([reply_key(request_id)], timeout=timeout)
        return json.loads(item[1]) if item else None

    def count(self, name: str, by: int = 1) -> None:
        self.redis.hincrby(STATS, name, by)

    def count_for_slot(self, slot_id: str, name: str) -> None:
        self.redis.hincrby(slot_stats_key(slot_id), name, 1)

    def pop_command(self, slot_id: str, timeout: float) -> dict | None:
        item = self.redis.blpop([command_key(slot_id)], timeout=timeout)
        return json.loads(item[1]) if item else None

    def wait_for_nudge(self, timeout: float) -> bool:
        woke = self.redis.blpop([NUDGE], timeout=timeout)
        if woke:
            self.redis.delete(NUDGE)  # several pokes mean one more pass, not several
        return bool(woke)

    @staticmethod
    def _call(script, keys, args):
        try:
            return script(keys=keys, args=args)
        except redis.ResponseError as err:
            raise _refusal(str(err)) from None


def _releasable(h: dict, allowed: tuple[str, ...], enrollment: str | None) -> str | None:
    """_RELEASE's checks on a slot's hash, in Python: the line a release would free, or its refusal."""
    if not h.get("status"):
        raise _refusal("unknown_slot")
    status = "pairing" if h.get("pairing") == "1" else h["status"]
    if status not in allowed:
        raise _refusal(f"wrong_state:{status}")
    if enrollment and h.get("enrollment") != enrollment:
        raise _refusal("wrong_state:ended")
    return h.get("line") or None


def _refusal(message: str) -> Refused:
    if message.startswith("unknown_slot"):
        return Refused("unknown_slot", "There is no such slot.")
    if message.startswith("not_pairing"):
        return Refused("not_pairing", "The slot is no longer pairing.")
    if message.startswith("wrong_state:"):
        state = message.split(":", 1)[1]
        return Refused("wrong_state", state)
    raise redis.ResponseError(message)
