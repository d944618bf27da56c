"""What a slot's worker does when it starts, decided by its slot's state alone (a pure function).

  not provisioned                 -> nothing to run, exit 0
  teardown flag set               -> log out from the network, wipe the slot's files, exit 0
  active, credentials on disk     -> reconnect with them, then serve until stopped
  active, credentials gone        -> release the line (one ``logged_out``, credentials_lost), wipe, exit 0
  pairing                         -> show QR codes until a phone scans one (then serve) or they run out
  anything else                   -> nothing to do, exit 0 (supervisord does not restart an exit 0)
"""

from enum import StrEnum

from controlplane.core.states import SlotStatus


class Start(StrEnum):
    NOT_PROVISIONED = "not_provisioned"
    WIPE = "wipe"
    RECONNECT = "reconnect"
    RELEASE_LOST_CREDENTIALS = "release_lost_credentials"
    PAIR = "pair"
    NOTHING = "nothing"


def plan(slot, has_credentials) -> Start:
    """``slot``: the store's Slot, or None. ``has_credentials()``: the engine's, asked only of an
    active slot (it reads the slot's files)."""
    if slot is None:
        return Start.NOT_PROVISIONED
    if slot.teardown:
        return Start.WIPE
    if slot.status is SlotStatus.ACTIVE:
        return Start.RECONNECT if has_credentials() else Start.RELEASE_LOST_CREDENTIALS
    if slot.pairing:
        return Start.PAIR
    return Start.NOTHING
