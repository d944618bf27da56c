"""The running gateway of one data folder: its record, the checks before a start, its processes.

`make run` writes `$WHIN_DATA_DIR/run/instance.json` (owner-only) once supervisord is up, so that a
second terminal (whinctl, a second `make run`) finds the instance that folder belongs to, with the
ports it was really started with, whatever that terminal's own environment says.

The launcher is a child subreaper: a program that supervisord leaves behind when it dies (each
program has a process group of its own, so nothing else would end it) becomes the launcher's child,
and the launcher ends it.
"""

import contextlib
import ctypes
import errno
import json
import os
import signal
import socket
import time
from pathlib import Path

from controlplane import slotfiles
from controlplane.config import Settings

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


class CannotStart(RuntimeError):
    """Why the gateway cannot start here, in one sentence that says what to do."""


def record_path(settings: Settings) -> Path:
    return settings.run_dir / "instance.json"


def write_record(settings: Settings, launcher_pid: int, supervisord_pid: int) -> None:
    record = {"launcher_pid": launcher_pid, "supervisord_pid": supervisord_pid, "port": settings.port,
              "simnet_port": settings.simnet_port, "engine": settings.engine,
              "redis_url": "" if settings.embedded_redis else settings.redis_url, "started_at": time.time()}
    path = record_path(settings)
    slotfiles.private_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.chmod(0o600)  # it may hold an external Redis URL with its password
    tmp.replace(path)


def clear_record(settings: Settings) -> None:
    record_path(settings).unlink(missing_ok=True)


def running_record(data_dir: Path) -> dict | None:
    """The record of the instance running on ``data_dir``, or None (none, or it died without clearing it)."""
    try:
        record = json.loads((data_dir / "run" / "instance.json").read_text())
    except (OSError, ValueError):
        return None
    pid = record.get("supervisord_pid")
    return record if isinstance(pid, int) and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def refuse_if_running(settings: Settings) -> None:
    """A second start on one data folder would fight the first over its sockets and slots."""
    # The socket decides (a pid in an old record may belong to another program by now).
    if not _socket_answers(settings.supervisor_socket):
        return
    record = running_record(settings.data_dir)
    where = f"API on port {record['port']}, supervisord pid {record['supervisord_pid']}" if record else \
        f"its supervisord answers on {settings.supervisor_socket}"
    stop = f"kill {record['launcher_pid']}" if record else "its Ctrl-C"
    raise CannotStart(f"already running in {settings.data_dir} ({where}). Use that one, stop it "
                      f"first (Ctrl-C in its terminal, or {stop}), or give this one its own WHIN_DATA_DIR.")


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:  # no file, or a stale one nobody listens on
            return False
    return True


def refuse_busy_ports(settings: Settings) -> None:
    """Each port the gateway listens on must be free, or the api (or simnet) would restart forever."""
    ports = [("WHIN_PORT", settings.port, "the API")]
    if settings.engine == "sim":
        ports.append(("WHIN_SIMNET_PORT", settings.simnet_port, "the simulated network"))
    for variable, port, what in ports:
        if port_in_use(port):
            raise CannotStart(port_message(variable, port, what))


def port_message(variable: str, port: int, what: str) -> str:
    return (f"port {port} (for {what}) is already in use by another program; set {variable} to a free port, "
            f"e.g. {variable}={port + 1} make run")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        # As gunicorn binds: SO_REUSEADDR, so a port in TIME_WAIT after our own last run is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return True
            raise CannotStart(f"cannot listen on {host}:{port}: {err.strerror}") from None
    return False


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process instead of init (Linux 3.4+)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_until(pid: int) -> int:
    """Wait for any child (reaping orphans handed to us) until ``pid`` exits; its exit code."""
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:  # already reaped elsewhere
            return 0
        if done == pid:
            return os.waitstatus_to_exitcode(status)


def reap_all() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def children_of(parent: int) -> list[int]:
    """Pids of the live processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of the processes (but this one) whose environment has ``name=value``."""
    marker = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def end_processes(leftovers: list[int], grace: float = 5.0) -> list[int]:
    """TERM each, then KILL what is still alive after ``grace`` seconds; returns the pids it found."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while (alive := [pid for pid in leftovers if _alive_not_zombie(pid)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive:
            break
    return leftovers


def _alive_not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
