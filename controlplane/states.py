"""Slot status and the transitions between them. Standard library only: the slot worker imports it.

The outside world sees exactly the manual's three statuses. Pairing in progress is still
``available`` (a flag on the slot says a worker is showing QR codes), and so is a slot whose
credentials are being wiped (``teardown``).
"""

from enum import StrEnum


class SlotStatus(StrEnum):
    AVAILABLE = "available"  # no line: ready to enroll
    ACTIVE = "active"  # linked to a line, its worker running
    SLEEPING = "sleeping"  # linked to a line, its worker stopped on purpose, credentials kept


# Every arc of the slot's life, in one place (the Lua scripts in store.py enforce them atomically).
TRANSITIONS: dict[tuple[SlotStatus, SlotStatus], str] = {
    # /enroll then a scan: the worker reports pair success with the phone's number.
    (SlotStatus.AVAILABLE, SlotStatus.ACTIVE): "paired",
    # /sleep: the worker is stopped, credentials stay on disk.
    (SlotStatus.ACTIVE, SlotStatus.SLEEPING): "sleep",
    # /resume: the worker starts again and reconnects with its stored credentials.
    (SlotStatus.SLEEPING, SlotStatus.ACTIVE): "resume",
    # /kill, eviction by a re-pair elsewhere, or the phone's own unlink: line gone, credentials wiped.
    (SlotStatus.ACTIVE, SlotStatus.AVAILABLE): "released",
    (SlotStatus.SLEEPING, SlotStatus.AVAILABLE): "released",
}


def can_transition(current: SlotStatus, target: SlotStatus) -> bool:
    return (current, target) in TRANSITIONS
