"""A running slot's lease: never two hosts serving one slot, not even across a network partition.

WhatsApp drops both clients of a device that connects twice, so a slot must run on one host at a time.
Its worker holds a lease, ``whin:lease:<ID>`` in Redis: a token (``<host> <run> <random>``, the run
being the launcher's, WHIN_HOST_INSTANCE) with a TTL (WHIN_SLOT_LEASE), renewed every third of it.
The rules:

- A worker connects only once it holds the lease. A lease held by another host is waited for until it
  expires: a dead or cut-off host's lease runs out by itself. A lease held by this same host's same
  place (this machine and data folder, whatever the launcher run) is taken over at once: one
  supervisord runs one process per program, and the data folder's lock one launcher, so it was this
  slot's previous worker, killed or crashed (waiting for it would only delay every restart by the
  TTL). A lease of another machine under the same name is waited for. With the embedded Redis
  (``solo``) the host's name is enough: no other machine can reach it.
- A worker that cannot renew (Redis unreachable or silent, the lease no longer its own, or its slot
  placed on another host meanwhile) disconnects from WhatsApp once STOP_AT of the TTL has passed
  since its last renewal began, well before the lease can expire in Redis, and then stops. Redis
  counts the TTL from when it applied the renewal, which is after it began, so the worker's deadline
  always comes first. A watchdog keeps that deadline whatever a renewal is doing (a partition that
  drops packets leaves a call waiting for its timeout), the lease's own client times out within a
  fraction of the TTL, and a disconnection that has not returned by HARD_STOP_AT ends the process.
- A worker that stops releases the lease (only if still its own), so a move is not held up by it.
- On one machine with its embedded Redis (``solo``), no other host can reach that Redis: a Redis
  outage or restart is waited out connected, as before there were hosts, and a lease that ran out
  meanwhile is taken again.
"""

import contextlib
import logging
import os
import threading
import time

import redis

from controlplane.core.connection import bounded
from controlplane.core.hosts import host_key, place_of
from controlplane.core.keys import lease_key, slot_key

log = logging.getLogger(__name__)

STOP_AT = 0.6  # of the TTL since the last renewal began: then the worker disconnects and stops
HARD_STOP_AT = 0.9  # of the TTL: a disconnection still under way then ends the process (os._exit)
CALL_TIMEOUT = 0.15  # of the TTL: the lease client's socket and connect timeouts (lease_client)
WAIT_POLL_SECONDS = 0.5

# Take the lease: free, or held by this host's run (its previous worker). KEYS[1] lease; ARGV token,
# ttl ms, the token's prefix that may be taken over ("<host> <run> ", or "<host> " when solo).
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[3])) ~= ARGV[3] then
  return held
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
# Renew, only while it is still ours, the slot still placed on this host (or on none: a slot of one
# machine before its first placing), and the host's name still this run's (hosts.claim). KEYS lease,
# slot hash, host hash; ARGV token, ttl ms, host, run ('' for none).
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local host = redis.call('HGET', KEYS[2], 'host')
if host and host ~= ARGV[3] then return 0 end
local run = redis.call('HGET', KEYS[3], 'instance')
if ARGV[4] ~= '' and run and run ~= ARGV[4] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
# Release, only while it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_client(store_client: redis.Redis, seconds: float) -> redis.Redis:
    """The lease's own Redis client, beside the store's: every call answers or fails within
    CALL_TIMEOUT of the TTL (the store's client waits a minute for a blocking read, far longer than
    a lease lasts)."""
    return bounded(store_client, seconds * CALL_TIMEOUT)


class Lease:
    def __init__(self, client: redis.Redis, slot_id: str, host: str, seconds: float, on_lost, solo: bool = False,
                 run: str = ""):
        self.redis = client
        self.solo = solo
        self.slot_id = slot_id
        self.host = host
        self.run = run
        self.seconds = seconds
        self.token = f"{host} {run or '-'} {os.urandom(8).hex()}"
        # Whose lease this worker takes over at once (see the module's note): a worker of the same
        # place's runs (run: "<place>:<random>", hosts.run_id), or of this host at all when solo.
        place = f"{place_of(run)}:" if ":" in run else f"{run or '-'} "
        self.successor_of = f"{host} " if solo else f"{host} {place}"
        self.on_lost = on_lost  # called once, from the renewing thread, when the lease cannot be kept
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._held = False
        self._lock = threading.Lock()  # _held's changes, and what must not run once it is lost (held())
        self._stopped = threading.Event()
        self._renewed_at = 0.0  # monotonic: when the last successful renewal began
        self._thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return lease_key(self.slot_id)

    @contextlib.contextmanager
    def held(self):
        """``with lease.held() as ok:`` ok says whether the lease is still this worker's (and not past
        its give-up point), and it stays so until the block ends: a connect made inside it is never
        made after the lease was lost (the loss waits for the block, then disconnects)."""
        with self._lock:
            yield self._held and (self.solo or time.monotonic() - self._renewed_at < self.seconds * STOP_AT)

    def acquire(self, stop: threading.Event, still_wanted=lambda: True) -> bool:
        """Wait until the lease is ours (True), or ``stop`` is set or ``still_wanted()`` says no (False).
        Redis errors are waited out like a held lease."""
        said = False
        while not stop.is_set():
            began = time.monotonic()
            try:
                holder = self._acquire(keys=[self.key], args=[self.token, int(self.seconds * 1000), self.successor_of])
            except redis.RedisError as err:
                holder = f"unknown (Redis unreachable: {type(err).__name__})"
            if holder is None:
                self._held, self._renewed_at = True, began
                if said:
                    log.info("slot %s: lease taken", self.slot_id)
                self._start_renewing()
                return True
            if not said:
                held_by = holder.decode() if isinstance(holder, bytes) else str(holder)
                log.info("slot %s: waiting for its lease, held by %s", self.slot_id, held_by.split(" ")[0])
                said = True
            if not still_wanted():
                return False
            stop.wait(WAIT_POLL_SECONDS)
        return False

    def _start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._keep, name=f"lease-{self.slot_id}", daemon=True)
        self._thread.start()
        if not self.solo:
            threading.Thread(target=self._watch, name=f"lease-watch-{self.slot_id}", daemon=True).start()

    def _watch(self) -> None:
        """The give-up deadline, kept apart from the renewals: one that hangs cannot delay it."""
        give_up_after = self.seconds * STOP_AT
        while not self._stopped.wait(max(0.0, self._renewed_at + give_up_after - time.monotonic())):
            late = time.monotonic() - self._renewed_at
            if late >= give_up_after:
                self._lose(f"not renewed for {late:.1f} s")
                return

    def _keep(self) -> None:
        every = self.seconds / 3
        give_up_after = self.seconds * STOP_AT
        while not self._stopped.wait(self._next_wait(every, give_up_after)):
            began = time.monotonic()
            try:
                ttl = int(self.seconds * 1000)
                kept = self._renew(keys=[self.key, slot_key(self.slot_id), host_key(self.host)],
                                   args=[self.token, ttl, self.host, self.run])
                if not kept and self.solo:  # ran out while Redis was away (or restarted): nobody else's
                    kept = self._acquire(keys=[self.key], args=[self.token, ttl, self.successor_of]) is None
            except redis.RedisError as err:
                # Retried up to the give-up point, which the watchdog keeps (_watch); solo, for ever.
                log.warning("slot %s: lease not renewed (%s); retrying", self.slot_id, type(err).__name__)
                continue
            if not kept:
                self._lose("it is no longer this worker's (expired, taken by another host, or the slot moved)")
                return
            self._renewed_at = began

    def _next_wait(self, every: float, give_up_after: float) -> float:
        # The next renewal, but never past the give-up point: a failing Redis is retried up to it.
        if self.solo:
            return every
        until_give_up = self._renewed_at + give_up_after - time.monotonic()
        return max(0.05, min(every, until_give_up if until_give_up > 0 else 0.05))

    def _lose(self, why: str) -> None:
        """Once, from whichever thread sees it first: off WhatsApp (on_lost) before the TTL runs out,
        then the lease given back if it is still this worker's token (the slot moved, say), so that
        the next host need not wait for it to expire."""
        # Armed first: a connect under held() may keep the lock a while. A disconnection stuck past
        # HARD_STOP_AT would outlive the lease: the process ends, and the kernel closes its connection.
        left = max(0.0, self._renewed_at + self.seconds * HARD_STOP_AT - time.monotonic())
        deadline = threading.Timer(left, self._exit_now)
        deadline.daemon = True
        with self._lock:
            if not self._held:
                return
            self._held = False
            deadline.start()
        self._stopped.set()
        log.error("slot %s: lease lost, %s; disconnecting before another host may take the slot", self.slot_id, why)
        try:
            self.on_lost()
        finally:
            deadline.cancel()
        with contextlib.suppress(redis.RedisError):  # unreachable: it expires by itself
            self._release(keys=[self.key], args=[self.token])

    def _exit_now(self) -> None:
        log.critical("slot %s: still connected as its lease runs out; ending the worker", self.slot_id)
        logging.shutdown()
        os._exit(70)

    def release(self) -> None:
        """Stop renewing, and give the lease back if it is still ours (one try: else it expires)."""
        self._stopped.set()
        with self._lock:
            if not self._held:
                return
            self._held = False
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError as err:
            log.warning("slot %s: lease not released (%s); it expires by itself", self.slot_id, type(err).__name__)
