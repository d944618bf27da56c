"""A program ends with the supervisord that started it, however supervisord dies.

Every program supervisord runs is a process group of its own, so nothing else ties its life to
supervisord's: after a SIGKILL to supervisord (and to `make run`, which would otherwise clean up),
a slot worker would go on holding its WhatsApp session, and the next start would run a second
client of the same device; WhatsApp then disconnects both. Linux's parent-death signal closes that
gap: the kernel sends the program SIGTERM the moment supervisord dies, and the program stops as on
a normal stop (a slot drains its inbound events, a delivery worker finishes its POST).

The embedded Redis cannot simply do the same: dying in the same instant as its clients, it would
take with it the events they are still writing while they stop. It runs under a keeper
(controlplane/redis_keeper.py) that asks for the signal instead and, once supervisord is gone, ends
Redis as soon as its clients are gone (within the longest client stop at most).
"""

import contextlib
import ctypes
import os
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_supervisord(sig: int = signal.SIGTERM) -> None:
    """Under supervisord (which sets SUPERVISOR_ENABLED for its programs), ask the kernel for ``sig``
    when the parent dies. Run as anything else (by hand, gunicorn --daemon), nothing changes. A
    supervisord already gone before the ask (this process's start is its window) gets ``sig`` at once."""
    if not os.environ.get("SUPERVISOR_ENABLED"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not Linux: nothing to ask for
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if not _is_supervisord(os.getppid()):
        os.kill(os.getpid(), sig)


def parent_is_supervisord() -> bool:
    """Whether this process's parent is (still) a supervisord: after its death the parent is whoever
    adopted the orphan (init, or the launcher as a child subreaper)."""
    return _is_supervisord(os.getppid())


def _is_supervisord(pid: int) -> bool:
    try:
        return b"supervisord" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to tell: trust the parent
