"""The slot hosts, as Redis knows them: who is alive, how full each is, and where a slot goes next.

Every host agent (the reconciler of a WHIN_ROLE=all or host machine) writes its host's hash on each
pass: a heartbeat, its capacity, whether it drains. A host whose heartbeat is older than
WHIN_HOST_DEAD_AFTER is dead. ``choose_host`` is pure: the live, not draining host with the most free
places (capacity minus the slots placed there that should run), the name breaking ties.

Keys (this module owns them):
  whin:hosts               SET   every host name that ever beat
  whin:host:<name>         HASH  heartbeat (unix time), capacity, draining ("1" while it drains)
  whin:host:<name>:nudge   LIST  a poke that wakes that host's agent before its next pass
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass

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


class HostRegistry:
    def __init__(self, client: redis.Redis, dead_after: float):
        self.redis = client
        self.dead_after = dead_after

    def beat(self, name: str, capacity: int, started: bool = False) -> None:
        """The host's heartbeat; ``started``: the agent's first, which also ends a drain (a host that
        was drained for maintenance and started again is back in service)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(HOSTS, name)
            pipe.hset(host_key(name), mapping={"heartbeat": f"{time.time():.3f}", "capacity": capacity})
            if started:
                pipe.hdel(host_key(name), "draining")
            pipe.execute()

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
