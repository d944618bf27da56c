"""Slot status. Standard library only: the slot worker imports it.

The outside world sees exactly the manual's three statuses. Pairing in progress is still
``available`` (a flag on the slot says a worker is showing QR codes), and so is a slot whose
credentials are being wiped (``teardown``).

Every arc of a slot's life, each enforced atomically by a Lua script in store.py:
  available -> active      paired: a phone scanned the slot's QR (or typed its code)   _PAIR_SUCCESS
  active -> sleeping       /sleep: the worker stops, credentials stay on disk          _MOVE
  sleeping -> active       /resume: the worker starts and reconnects without a QR       _MOVE
  active|sleeping -> available
                           /kill, eviction by a re-pair elsewhere, the phone's unlink:
                           line unmapped, credentials wiped                             _RELEASE
  (pairing) -> available   codes ran out, the deadline passed, or /killid                _END_PAIRING, _RELEASE
"""

from enum import StrEnum


class SlotStatus(StrEnum):
    AVAILABLE = "available"  # no line: ready to enroll
    ACTIVE = "active"  # linked to a line, its worker running
    SLEEPING = "sleeping"  # linked to a line, its worker stopped on purpose, credentials kept
