"""The Lua scripts of the slot store: each one atomic step over the keys it is given.

A script spells no key and builds none: every key it touches comes in KEYS (keys.py spells them),
so each script's keys are declared as Redis expects. The one key chosen at run time, the slot that
held a line a new pairing takes, is read by the caller (under WATCH, or just before) and passed in
KEYS too; the script checks it is still the holder, and if not answers which slot is (stale_holder).

A refusal comes back as the error ``refused:<code>:<phase>`` (store.py turns it into a typed
``Refused`` with ``code`` and ``state``), where the phase is states.SlotPhase: a slot's status, or
``pairing`` / ``resetting`` while it is available.
"""

import re

import redis

from controlplane.core.errors import Refused
from controlplane.core.states import SlotPhase

_COMMON = """
local function phase(key)
  local status = redis.call('HGET', key, 'status')
  if not status then return nil end
  if redis.call('HGET', key, 'pairing') == '1' then return 'pairing' end
  if redis.call('HGET', key, 'teardown') == '1' then return 'resetting' end
  return status
end

local function refuse(code, state)
  return redis.error_reply('refused:' .. code .. ':' .. (state or ''))
end

-- Release a slot's line and mark its credentials for wiping: kill, eviction and the phone's unlink
-- all end here. The worker (or the API, if the worker is gone) wipes and clears `teardown`.
local function release(key, lines, commands, nudge, slot, reason)
  local line = redis.call('HGET', key, 'line')
  if line and redis.call('HGET', lines, line) == slot then
    redis.call('HDEL', lines, line)
  end
  redis.call('HSET', key, 'status', 'available', 'teardown', '1')
  redis.call('HDEL', key, 'line', 'pairing', 'pair_deadline', 'qr', 'qr_expires_at', 'connected', 'enrollment')
  redis.call('DEL', commands)
  redis.call('RPUSH', commands, cjson.encode({op = 'logout', reason = reason}))
  redis.call('RPUSH', nudge, '1')
  return line or ''
end
"""

# Maps line -> slot and evicts whichever slot held the line before, in one step.
# KEYS: slot, lines, nudge [, the holder's slot, the holder's commands]  (the holder as read under WATCH)
# ARGV: slot id, line, enrollment id, the holder's id as read ('' for none)
# (SlotStore.pair_success mirrors the checks to name the events it queues in the same step.)
PAIR_SUCCESS = _COMMON + """
local key, lines, nudge = KEYS[1], KEYS[2], KEYS[3]
local slot, line, enrollment, holder = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local state = phase(key)
if not state then return refuse('unknown_slot') end
if state ~= 'pairing' then return refuse('not_pairing', state) end
local previous = redis.call('HGET', lines, line) or ''
if previous ~= holder then return redis.error_reply('stale:' .. previous) end  -- read again: this one
local evicted = ''
if previous ~= '' and previous ~= slot then
  release(KEYS[4], lines, KEYS[5], nudge, previous, 'evicted')
  evicted = previous
end
redis.call('HSET', lines, line, slot)
redis.call('HSET', key, 'status', 'active', 'line', line, 'enrollment', enrollment)
redis.call('HDEL', key, 'pairing', 'pair_deadline', 'qr', 'qr_expires_at', 'teardown')
return evicted
"""

# Releases a slot whose phase is one of those allowed.
# KEYS: slot, lines, the slot's commands, nudge
# ARGV: slot id, reason, allowed phases (comma list), enrollment ('' for any; else only that
# enrollment may end: a release for one that already ended is refused).
# (SlotStore.release mirrors these checks in _releasable.)
RELEASE = _COMMON + """
local key, lines, commands, nudge = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local slot, reason, allowed, enrollment = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local state = phase(key)
if not state then return refuse('unknown_slot') end
if not string.find(',' .. allowed .. ',', ',' .. state .. ',', 1, true) then
  return refuse('wrong_state', state)
end
if enrollment ~= '' and redis.call('HGET', key, 'enrollment') ~= enrollment then
  return refuse('enrollment_ended', state)
end
return release(key, lines, commands, nudge, slot, reason)
"""

# A plain status change of a linked slot (sleep, resume).
# KEYS: slot. ARGV: from-status, to-status.
MOVE = _COMMON + """
local key, from, to = KEYS[1], ARGV[1], ARGV[2]
local state = phase(key)
if not state then return refuse('unknown_slot') end
if state ~= from then return refuse('wrong_state', state) end
redis.call('HSET', key, 'status', to)
redis.call('HDEL', key, 'connected')
return state
"""

# Starts pairing on an available slot; returns 'started' or 'already' (pairing, not overdue).
# KEYS: slot. ARGV: deadline, now.
BEGIN_PAIRING = _COMMON + """
local key, deadline, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local state = phase(key)
if not state then return refuse('unknown_slot') end
if state ~= 'available' and state ~= 'pairing' then return refuse('wrong_state', state) end
local current = tonumber(redis.call('HGET', key, 'pair_deadline') or '0')
if state == 'pairing' and current > now then return 'already' end
redis.call('HSET', key, 'pairing', '1', 'pair_deadline', deadline)
redis.call('HDEL', key, 'qr', 'qr_expires_at', 'pair_error')
return 'started'
"""

# Clears the pairing flag only if the slot is still pairing (a pair success may have won the race),
# and says why it ended. KEYS: slot. ARGV: the reason.
END_PAIRING = """
local key = KEYS[1]
if redis.call('HGET', key, 'pairing') ~= '1' then return 0 end
redis.call('HDEL', key, 'pairing', 'pair_deadline', 'qr', 'qr_expires_at')
redis.call('HSET', key, 'pair_error', ARGV[1])
return 1
"""

# Publishes a QR only while the slot is pairing, so a late code never outlives the pairing.
# KEYS: slot. ARGV: the code, when it expires.
SET_QR = """
local key = KEYS[1]
if redis.call('HGET', key, 'pairing') ~= '1' then return 0 end
redis.call('HSET', key, 'qr', ARGV[1], 'qr_expires_at', ARGV[2])
return 1
"""


# --- the scripts' refusals, read back in Python ---

_DETAILS = {
    "unknown_slot": "There is no such slot.",
    "not_pairing": "The slot is no longer pairing.",
    "wrong_state": "The slot is {state}.",
    "enrollment_ended": "That enrollment of the slot has ended.",
}
# refuse() above; inside MULTI/EXEC redis-py puts the command that failed before it.
_REFUSAL = re.compile(r"(?:^|: )refused:([a-z_]+):([a-z_]*)$")


_STALE = re.compile(r"(?:^|: )stale:([A-Za-z0-9]*)$")


def stale_holder(err: redis.ResponseError) -> str | None:
    """When PAIR_SUCCESS found the line held by another slot than the one its caller passed in KEYS
    (it changed hands meanwhile): the holder it found ('' for none), to try again with. Else None."""
    found = _STALE.search(str(err))
    return found.group(1) if found else None


def refused(code: str, state: str | None) -> Refused:
    """The refusal a script answers with ``refuse(code, state)``, as the typed error callers read."""
    return Refused(code, _DETAILS[code].format(state=state), state=SlotPhase(state) if state else None)


def refusal(err: redis.ResponseError) -> Refused:
    """A script's error reply as its Refused; any other error (a bug, a Redis fault) is raised as it is."""
    found = _REFUSAL.search(str(err))
    if found is None:
        raise err
    return refused(found.group(1), found.group(2) or None)
