"""Where a slot's worker runs: the host it is placed on, chosen when it is enrolled or resumed, and again
when its host dies or drains.

A slot keeps its host while that host lives. A slot of a dead host moves to the live host with the most
room (core/hosts.choose_host), but only when its session can move: with WHIN_SESSION_DB, any host
resumes it from PostgreSQL; without it, the session is a folder on one machine's disk, and the slot
stays pinned there until that host comes back. Placing is a compare-and-set on the slot's ``host``
(store.place): agents placing one slot at once agree on one host. The new host starts the worker, which
waits for the slot's lease (slotworker/lease.py): never two hosts at once.
"""

import logging
import time

from controlplane.core.config import Role, Settings
from controlplane.core.hosts import HostRegistry, choose_host
from controlplane.core.store import Slot, SlotStore

log = logging.getLogger(__name__)


def load(slots: list[Slot], now: float) -> dict[str, int]:
    """Per host, the slots placed there whose worker should run: the places taken."""
    taken: dict[str, int] = {}
    for slot in slots:
        if slot.host and slot.wants_worker(now):
            taken[slot.host] = taken.get(slot.host, 0) + 1
    return taken


class Placement:
    def __init__(self, settings: Settings, store: SlotStore, hosts: HostRegistry):
        self.settings = settings
        self.store = store
        self.hosts = hosts

    @property
    def movable(self) -> bool:
        """Sessions in PostgreSQL: a slot can resume on any host."""
        return bool(self.settings.session_db)

    def place(self, slot: Slot, exclude: tuple[str, ...] = ()) -> str | None:
        """The host ``slot``'s worker runs on, placing it first if it has none, or if its host is dead
        (or in ``exclude``) and its session can move. None: no live host has room."""
        now = time.time()
        known = self.hosts.all()
        alive = {h.name for h in known if h.alive(now, self.settings.host_dead_after)}
        if slot.host and slot.host not in exclude and (slot.host in alive or not self.movable):
            return slot.host
        choice = choose_host(known, load(self.store.all(), now), now, self.settings.host_dead_after,
                             exclude=exclude)
        if choice is None and self.settings.role is Role.ALL and self.settings.host_name not in exclude \
                and not alive - {self.settings.host_name}:
            # The one machine of a single-host gateway, before its agent's first heartbeat.
            choice = self.settings.host_name
        if choice is None:
            return None
        if self.store.place(slot.id, choice, slot.host):
            if slot.host:
                log.info("placement: slot %s moves from host %s to host %s", slot.id, slot.host, choice)
            return choice
        return (self.store.get(slot.id) or slot).host  # placed by someone else meanwhile: theirs
