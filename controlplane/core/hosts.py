"""The slot hosts, as Redis knows them: who is alive, how full each is, and where a slot goes next.

Every host agent (the reconciler of a WHIN_ROLE=all or host machine) writes its host's hash on each
pass: a heartbeat, its capacity, whether it drains. A host whose heartbeat is older than
WHIN_HOST_DEAD_AFTER is dead. ``choose_host`` is pure: the live, not draining host with the most free
places (capacity minus the slots placed there that should run), the name breaking ties.

Keys (this module owns them):
  whin:hosts               SET   every host name that ever beat
  whin:host:<name>         HASH  heartbeat (unix time), capacity, draining ("1" while it drains),
                                 instance (the launcher run that holds the name: HostRegistry.claim)
  whin:host:<name>:nudge   LIST  a poke that wakes that host's agent before its next pass
"""

import contextlib
import hashlib
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import redis

from controlplane.core.keys import PREFIX

HOSTS = PREFIX + "hosts"


def host_key(name: str) -> str:
    return f"{PREFIX}host:{name}"


def host_nudge_key(name: str) -> str:
    return f"{PREFIX}host:{name}:nudge"


@dataclass(frozen=True)
class Host:
    name: str
    heartbeat: float
    capacity: int
    draining: bool = False

    def alive(self, now: float, dead_after: float) -> bool:
        return now - self.heartbeat <= dead_after


def choose_host(hosts: Iterable[Host], load: dict[str, int], now: float, dead_after: float,
                exclude: Iterable[str] = ()) -> str | None:
    """The live, not draining host (not in ``exclude``) with the most free places; None if all are full."""
    excluded = set(exclude)
    room = [(h.capacity - load.get(h.name, 0), h.name) for h in hosts
            if h.alive(now, dead_after) and not h.draining and h.name not in excluded]
    room = [(free, name) for free, name in room if free > 0]
    if not room:
        return None
    best = max(free for free, _ in room)
    return min(name for free, name in room if free == best)


# A launcher run's id is "<place>:<random>" (place: this machine and data folder, run_id): a run of
# the same place takes over at once (the data folder's lock rules out two at a time there, so the
# other is this gateway's earlier, crashed run); another place only once the holder is dead.
# _HELD_ELSEWHERE(key, run, now, dead_after): the age of the holder's last beat while another place's
# live run holds the name in that host hash, else nil. Both scripts below start with it.
_HELD_ELSEWHERE = """
local function place(run) return string.match(run, '^([^:]*):') or run end
local function held_elsewhere(key, run, now, dead_after)
  local other = redis.call('HGET', key, 'instance')
  local age = tonumber(now) - tonumber(redis.call('HGET', key, 'heartbeat') or '0')
  if other and other ~= run and place(other) ~= place(run) and age <= tonumber(dead_after) then
    return age
  end
  return nil
end
"""
# KEYS host hash; ARGV instance, now, dead_after. Returns false when taken, else the holder's age.
_CLAIM = _HELD_ELSEWHERE + """
local age = held_elsewhere(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if age then return tostring(age) end
-- A beat too: the claimer lives, and a dead holder's run coming back must find the name taken.
redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'heartbeat', ARGV[2])
return false
"""
# A beat, taking the name as claim would (a run whose launcher could not reach Redis claims it here);
# refused while another place's live run holds it. KEYS hosts set, host hash; ARGV name, now,
# capacity, instance ('' for none: the embedded Redis), started ('1': the agent's first beat, which
# also ends a drain), dead_after.
_BEAT = _HELD_ELSEWHERE + """
if ARGV[4] ~= '' then
  if held_elsewhere(KEYS[2], ARGV[4], ARGV[2], ARGV[6]) then return 0 end
  redis.call('HSET', KEYS[2], 'instance', ARGV[4])
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'heartbeat', ARGV[2], 'capacity', ARGV[3])
if ARGV[5] == '1' then redis.call('HDEL', KEYS[2], 'draining') end
return 1
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'instance') == ARGV[1] then redis.call('HDEL', KEYS[1], 'instance') end
"""


def place_of(run: str) -> str:
    """The place of a launcher run's id (run_id), as _HELD_ELSEWHERE reads it: the whole id if it has none."""
    return run.split(":", 1)[0]


def run_id(data_dir) -> str:
    """A new launcher run's id: "<place>:<random>", the place standing for this machine and data folder."""
    machine = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            machine = Path(path).read_text().strip()
            break
    place = hashlib.blake2b(f"{machine or socket.gethostname()}|{data_dir}".encode(), digest_size=6).hexdigest()
    return f"{place}:{uuid.uuid4().hex}"


class NameTaken(RuntimeError):
    """Another machine's launcher holds this host name."""


class HostRegistry:
    def __init__(self, client: redis.Redis, dead_after: float):
        self.redis = client
        self.dead_after = dead_after
        self._beat = client.register_script(_BEAT)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def beat(self, name: str, capacity: int, started: bool = False, instance: str = "") -> None:
        """The host's heartbeat; ``started``: the agent's first, which also ends a drain (a host that
        was drained for maintenance and started again is back in service). Raises NameTaken once
        another launcher run has claimed the name (``instance``: this run's, see claim)."""
        args = [name, f"{time.time():.3f}", capacity, instance, "1" if started else "", self.dead_after]
        if not self._beat(keys=[HOSTS, host_key(name)], args=args):
            raise NameTaken(name)

    def claim(self, name: str, instance: str) -> float | None:
        """Take ``name`` for this launcher run (``instance``); None when done, else how many seconds ago
        the run that holds it beat: two live machines under one name would pass for one host, and
        each take over the other's slots."""
        age = self._claim(keys=[host_key(name)], args=[instance, f"{time.time():.3f}", self.dead_after])
        return None if age is None else float(age)

    def release(self, name: str, instance: str) -> None:
        """A stopped launcher gives the name back, so that its next start need not wait the dead time."""
        self._release(keys=[host_key(name)], args=[instance])

    def all(self) -> list[Host]:
        names = sorted(self.redis.smembers(HOSTS))
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(host_key(name))
            found = pipe.execute()
        return [Host(name, float(h.get("heartbeat") or 0), int(h.get("capacity") or 0), h.get("draining") == "1")
                for name, h in zip(names, found, strict=True) if h]

    def get(self, name: str) -> Host | None:
        return next((h for h in self.all() if h.name == name), None)

    def alive(self, name: str) -> bool:
        host = self.get(name)
        return host is not None and host.alive(time.time(), self.dead_after)

    def set_draining(self, name: str, draining: bool) -> None:
        if draining:
            self.redis.hset(host_key(name), "draining", "1")
        else:
            self.redis.hdel(host_key(name), "draining")

    def forget(self, name: str) -> None:
        """The host is gone for good: out of GET /hosts and /metrics (host_removal.py checks first)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(HOSTS, name)
            pipe.delete(host_key(name), host_nudge_key(name))
            pipe.execute()

    def nudge(self, name: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(host_nudge_key(name), 1)
            pipe.expire(host_nudge_key(name), 60)
            pipe.execute()
