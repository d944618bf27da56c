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
from collections import Counter
from dataclasses import dataclass

from controlplane.core.config import Role, Settings
from controlplane.core.hosts import Host, HostRegistry, choose_host
from controlplane.core.store import Slot, SlotStore, wants_worker

log = logging.getLogger(__name__)


# What placing needs of a slot: where it is, and whether its worker should run (Slot.wants_worker).
PLACEMENT_FIELDS = ("status", "pairing", "pair_deadline", "teardown", "host")


@dataclass(frozen=True)
class Occupancy:
    """Per host, the slots placed there (``placed``) and how many of them take a place, their worker
    being one that should run (``taken``)."""
    placed: dict[str, list[str]]
    taken: Counter

    @classmethod
    def read(cls, store: SlotStore, now: float) -> "Occupancy":
        """From the slots' PLACEMENT_FIELDS only, in one SORT: GET /hosts and every placing read it,
        and a whole Slot per slot (store.all) costs 4x as much with 1,000 slots."""
        return cls.of(store.fields(PLACEMENT_FIELDS), now)

    @classmethod
    def of(cls, rows: list[tuple[str, dict]], now: float) -> "Occupancy":
        """From store.fields rows that hold PLACEMENT_FIELDS."""
        placed: dict[str, list[str]] = {}
        taken: Counter = Counter()
        for slot_id, fields in rows:
            host = fields.get("host")
            if host:
                placed.setdefault(host, []).append(slot_id)
                if wants_worker(fields["status"], fields.get("teardown") == "1", fields.get("pairing") == "1",
                                float(fields.get("pair_deadline") or 0), now):
                    taken[host] += 1
        return cls(placed, taken)


def host_listing(hosts: list[Host], occupancy: Occupancy, now: float, dead_after: float) -> list[dict]:
    """Each host as GET /hosts shows it (whinctl hosts and /metrics' per-host gauges read the same):
    alive or not, its capacity, its running slots (those taking a place), whether it drains, and the
    ids of every slot placed there."""
    return [{"name": h.name, "alive": h.alive(now, dead_after), "capacity": h.capacity,
             "running": occupancy.taken[h.name], "draining": h.draining, "slots": occupancy.placed.get(h.name, [])}
            for h in hosts]


class Placement:
    def __init__(self, settings: Settings, store: SlotStore, hosts: HostRegistry):
        self.settings = settings
        self.store = store
        self.hosts = hosts

    @property
    def movable(self) -> bool:
        """Sessions in PostgreSQL: a slot can resume on any host."""
        return bool(self.settings.session_db)

    def view(self) -> "View":
        """The hosts and their places taken, read once: a caller placing many slots in a row (an agent
        taking over a dead host's) passes it to each place() instead of reading every slot again."""
        now = time.time()
        return View(self.hosts.all(), Occupancy.read(self.store, now).taken, now)

    def place(self, slot: Slot, exclude: tuple[str, ...] = (), view: "View | None" = None) -> str | None:
        """The host ``slot``'s worker runs on, placing it first if it has none, or if its host is dead
        (or in ``exclude``) and its session can move. None: no live host has room."""
        view = view or self.view()
        alive = {h.name for h in view.hosts if h.alive(view.now, self.settings.host_dead_after)}
        if slot.host and slot.host not in exclude and (slot.host in alive or not self.movable):
            return slot.host
        choice = choose_host(view.hosts, view.taken, view.now, self.settings.host_dead_after, exclude=exclude)
        if choice is None and self.settings.role is Role.ALL and self.settings.host_name not in exclude \
                and not alive - {self.settings.host_name}:
            # The one machine of a single-host gateway, before its agent's first heartbeat.
            choice = self.settings.host_name
        if choice is None:
            return None
        if self.store.place(slot.id, choice, slot.host):
            if slot.host:
                log.info("placement: slot %s moves from host %s to host %s", slot.id, slot.host, choice)
                view.taken[slot.host] -= slot.wants_worker(view.now)
            view.taken[choice] += slot.wants_worker(view.now)
            return choice
        return (self.store.get(slot.id) or slot).host  # placed by someone else meanwhile: theirs


@dataclass
class View:
    """What placing reads: the hosts, and per host the places taken (Occupancy.taken), at ``now``."""
    hosts: list[Host]
    taken: Counter
    now: float
