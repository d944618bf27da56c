"""Slot status and phase. Standard library only: the slot worker imports it.

The outside world sees exactly the manual's three statuses (``SlotStatus``). Pairing in progress is
still ``available`` (a flag on the slot says a worker is showing QR codes), and so is a slot whose
credentials are being wiped (``teardown``). ``SlotPhase`` names those two moments as well: it is
what the store's atomic steps check, and the state a refusal carries.

Every arc of a slot's life, each enforced atomically by a Lua script in scripts.py:
  available -> pairing     /enroll: a worker starts showing QR codes                    BEGIN_PAIRING
  pairing -> active        paired: a phone scanned the slot's QR (or typed its code)   PAIR_SUCCESS
  active -> sleeping       /sleep: the worker stops, credentials stay on disk          MOVE
  sleeping -> active       /resume: the worker starts and reconnects without a QR       MOVE
  active|sleeping -> resetting
                           /kill, eviction by a re-pair elsewhere, the phone's unlink:
                           line unmapped, credentials to wipe                           RELEASE
  pairing -> available     codes ran out, the deadline passed                           END_PAIRING
  pairing -> resetting     /killid, /cancel                                             RELEASE
  resetting -> available   the worker (or the API) wiped the credentials               store.finish_teardown
"""

from enum import StrEnum


class SlotStatus(StrEnum):
    AVAILABLE = "available"  # no line: ready to enroll
    ACTIVE = "active"  # linked to a line, its worker running
    SLEEPING = "sleeping"  # linked to a line, its worker stopped on purpose, credentials kept


class SlotPhase(StrEnum):
    """Where a slot is in its life: a status, or one of the two moments inside ``available``."""

    AVAILABLE = "available"  # no line, nothing under way: ready to enroll
    PAIRING = "pairing"  # available, a worker showing QR codes (or waiting for a typed code)
    RESETTING = "resetting"  # available, its last line's credentials being logged out and wiped
    ACTIVE = "active"
    SLEEPING = "sleeping"

    @property
    def status(self) -> SlotStatus:
        """The manual's status for this phase: pairing and resetting are both ``available``."""
        return SlotStatus.AVAILABLE if self in (SlotPhase.PAIRING, SlotPhase.RESETTING) else SlotStatus(self.value)
