"""POST /hosts/<name>/drain: a host's slots move to other hosts one by one, for maintenance.

The host is marked draining first, so nothing new is placed there. Then each of its slots in turn is
placed on the live host with the most room (placement.py) and that host's agent is woken, and the drain
waits until the slot serves again there (its lease held by the new host, connected), before the next:
each line is offline for a moment, never all at once. A slot whose worker does not run (sleeping,
available) is only taken off the host: it is placed again when it is next started. Messages that
reach WhatsApp meanwhile wait there and arrive once the slot is back (at-least-once, as ever).

A host stays draining until its agent starts again (a restart after the maintenance puts it back in
service). Without WHIN_SESSION_DB a slot's session is a folder on the host's disk and cannot move, so
a drain is refused.
"""

import logging
import time

from controlplane.core.errors import EngineTimeout, Refused, ServiceUnavailable
from controlplane.core.keys import lease_host, lease_key

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


def drain(lifecycle, name: str) -> list[str]:
    """Move every slot off host ``name``; returns the ids of the slots moved to another host."""
    hosts = lifecycle.hosts
    if hosts.get(name) is None:
        raise Refused("unknown_host", f"There is no slot host named {name!r}.")
    if not lifecycle.placement.movable:
        raise Refused("sessions_pinned", "Slot sessions live on each host's disk (WHIN_SESSION_DB is not set): "
                                         "they cannot move to another host.")
    hosts.set_draining(name, True)
    moved = []
    for slot in [s for s in lifecycle.store.all() if s.host == name]:
        current = lifecycle.store.get(slot.id)
        if current is None or current.host != name:
            continue  # moved (or killed) meanwhile
        if not current.wants_worker(time.time()):
            lifecycle.store.place(slot.id, None, name)
            if current.pairing:  # its time ran out: no host's agent would end it now
                lifecycle.store.end_pairing(slot.id)
            continue
        target = lifecycle.placement.place(current, exclude=(name,))
        if target is None or target == name:
            raise ServiceUnavailable("no_host", f"No other live slot host has room for slot {slot.id}; "
                                     "the drain stopped there (add a host or raise WHIN_HOST_CAPACITY).")
        hosts.nudge(name)  # its agent stops the worker, which gives the lease back
        hosts.nudge(target)
        _wait_until_served(lifecycle, slot.id, target)
        log.info("drain: slot %s moved from host %s to host %s", slot.id, name, target)
        moved.append(slot.id)
    return moved


def _wait_until_served(lifecycle, slot_id: str, host: str) -> None:
    settings = lifecycle.settings
    deadline = time.monotonic() + settings.connect_timeout + settings.lease_seconds + settings.reconcile_interval * 2
    woken = False
    while time.monotonic() < deadline:
        slot = lifecycle.store.get(slot_id)
        if slot is None or not slot.wants_worker(time.time()):
            return  # slept, killed or unlinked meanwhile: nothing to wait for
        holder = lease_host(lifecycle.store.redis.get(lease_key(slot_id)))
        if holder == host and (slot.connected or slot.pairing or slot.teardown):
            return
        if holder is None and not woken:
            # The old worker has let go: the new host's agent, which holds a start back while another
            # host's worker has the lease, starts it now rather than at its next pass.
            lifecycle.hosts.nudge(host)
            woken = True
        time.sleep(POLL_SECONDS)
    raise EngineTimeout(f"Slot {slot_id} was moved to host {host} but does not serve there yet; "
                        "it keeps trying, and the drain stopped there.")
