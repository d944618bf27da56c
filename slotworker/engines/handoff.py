"""The moment a request goes to WhatsApp: a request whose caller stopped waiting is not made then.

The API waits WHIN_SEND_TIMEOUT for a slot's answer, then answers 504 and tells the caller the
message "was sent by now or never will be". The slot checks the command's deadline when it takes the
command (commands.py), and an engine checks it again at the very moment it hands a message, a read
mark or a reaction to WhatsApp (``check``): after an upload, say, that took longer than the caller
waited. Past it, nothing is handed over, and the slot answers engine_timeout to nobody.

The deadline is the command's, set for the thread that runs it (``deadline``); an engine call made
outside a command (a test, a stand-in) has none and is never refused here.
"""

import threading
import time
from contextlib import contextmanager

_current = threading.local()


class HandoffExpired(Exception):
    """The caller's deadline passed before the request reached WhatsApp: nothing was handed over."""


@contextmanager
def deadline(at: float | None):
    """Requests an engine makes on this thread inside the block are made only until ``at`` (unix time)."""
    previous = getattr(_current, "at", None)
    _current.at = at
    try:
        yield
    finally:
        _current.at = previous


def check() -> None:
    """Call just before handing a request to WhatsApp: raises HandoffExpired once the deadline passed."""
    at = getattr(_current, "at", None)
    if at is not None and time.time() > at:
        raise HandoffExpired("the caller's deadline passed before the request reached WhatsApp")
