"""A program ends with the supervisord that started it, however supervisord dies.

Every program supervisord runs (slot workers, the api, the reconciler, delivery workers, simnet,
the embedded Redis) is a process group of its own, so nothing else ties its life to supervisord's:
after a SIGKILL to supervisord (or a SIGKILL of its whole service after a slow stop), a slot worker
would go on holding its WhatsApp session, and the next start would run a second client of the same
device; WhatsApp then disconnects both. Linux's parent-death signal closes that gap: the kernel
sends the program SIGTERM the moment its parent dies, and the program stops as on a normal stop
(a slot drains its inbound events first).
"""

import contextlib
import ctypes
import os
import shutil
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel for ``sig`` when this process's parent dies. A parent already gone (between our
    start and this call) gets the same answer at once."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):  # not Linux: nothing to ask for
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def wrapped(command: list[str]) -> list[str]:
    """``command`` run so that it ends with its parent: for a program that is not ours (Redis), through
    util-linux's setpriv, which sets the parent-death signal and then execs it (the signal survives
    exec). Unchanged where setpriv is missing."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command
