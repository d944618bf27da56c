"""whinctl remove-host: a machine taken out of the gateway for good is forgotten, so GET /hosts and
/metrics stop listing it as a dead host.

Only a host that is dead (its agent stopped: `systemctl stop`) and holds no slot can go. A slot still
placed there would be a line nobody serves until it is moved: drain the host first (or, without
WHIN_SESSION_DB, move its lines to slots of other hosts). A host that starts again after its removal
simply beats and is listed again.
"""

import time

from controlplane.core.errors import Refused
from controlplane.placement import Occupancy


def remove(lifecycle, name: str) -> None:
    hosts = lifecycle.hosts
    host = hosts.get(name)
    if host is None:
        raise Refused("unknown_host", f"There is no slot host named {name!r}.")
    now, dead_after = time.time(), lifecycle.settings.host_dead_after
    if host.alive(now, dead_after):
        raise Refused("host_alive", f"Host {name} is still running: stop its gateway first, then remove it once "
                                    f"it has been silent for WHIN_HOST_DEAD_AFTER ({dead_after:g} s).")
    placed = Occupancy.read(lifecycle.store, now).placed.get(name, [])
    if placed:
        raise Refused("host_has_slots", f"Host {name} still holds {len(placed)} slot(s) ({', '.join(placed[:5])}"
                                        f"{', ...' if len(placed) > 5 else ''}): drain it first.")
    hosts.forget(name)
