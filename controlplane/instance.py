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
import fcntl
import json
import os
import signal
import socket
import time
from pathlib import Path

import redis

from controlplane.core import slotfiles
from controlplane.core.config import Role, Settings
from controlplane.core.connection import connect
from controlplane.core.hosts import HostRegistry

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
# Set by the launcher for every program of one data folder: a later start finds what a killed run left.
LAUNCHED_FOR = "WHIN_LAUNCHED_FOR"


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


def claim_data_dir(settings: Settings):
    """Refuse a second start on one data folder (it would fight the first over sockets and slots);
    else return the open lock file, held (flock) until this process ends.

    The lock catches two starts within the same second; the socket, a supervisord whose launcher
    was killed (the lock went with it).
    """
    slotfiles.private_dir(settings.run_dir)
    lock = open(settings.run_dir / "launch.lock", "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise CannotStart(_running_message(settings, "is starting or running")) from None
    if _socket_answers(settings.supervisor_socket):
        lock.close()
        raise CannotStart(_running_message(settings, "is running"))
    return lock


def _running_message(settings: Settings, state: str) -> str:
    record = running_record(settings.data_dir)
    if record is None:
        where, stop = "", "Ctrl-C in its terminal"
    else:
        launcher = record["launcher_pid"]
        pid = launcher if _alive(launcher) else record["supervisord_pid"]  # the launcher may be gone
        where, stop = f" (API on port {record['port']}, pid {pid})", f"Ctrl-C in its terminal, or kill {pid}"
    return (f"a gateway {state} in {settings.data_dir}{where}. Use that one, stop it first ({stop}), or give "
            f"this one its own WHIN_DATA_DIR.")


def end_orphans(settings: Settings, grace: float = 5.0) -> list[int]:
    """End what an earlier run on this data folder left running without its supervisord (the
    launcher and supervisord were killed together): unsupervised, it would hold the ports, and a
    slot worker would stay connected as a second client of its line once this run starts its own.
    Call it holding the data folder's lock, with no supervisord answering; ``grace``: how long each
    may take to stop before it is killed (the longest stopwaitsecs: a slot drains as on a stop)."""
    found = set(processes_with_env(LAUNCHED_FOR, str(settings.data_dir)))
    # redis-server rewrites its environment (its process title): found by its socket in the folder.
    # Only redis-server and supervisord by command line: a `less var/logs/api.log` is no orphan.
    found |= {pid for pid in processes_naming(settings.data_dir) if _program_name(pid) in OWN_DAEMONS}
    if found:
        print(f"whinmovilla: ending {len(found)} processes an earlier run on {settings.data_dir} left "
              f"running (pids {', '.join(map(str, sorted(found)))})", flush=True)
        # Redis last, as supervisord stops it: what the others write while they stop must reach it.
        last = {pid for pid in found if _is_redis(pid)}
        end_processes(sorted(found - last), grace=grace)
        end_processes(sorted(last), grace=grace)
    return sorted(found)


def _is_redis(pid: int) -> bool:
    """redis-server, or the keeper that runs it (controlplane/redis_keeper.py)."""
    return _program_name(pid) == "redis-server" or b"controlplane.redis_keeper" in _read(pid, "cmdline")


OWN_DAEMONS = ("redis-server", "supervisord")


def _program_name(pid: int) -> str:
    """The basename of what ``pid`` runs (the script for a Python program), or ""."""
    argv = _read(pid, "cmdline").split(b"\0")
    # The first word: redis-server's rewritten title is one string, "…/redis-server unixsocket:…".
    names = [Path(arg.decode(errors="replace").split(" ")[0]).name for arg in argv[:2] if arg]
    return next((name for name in names if name in OWN_DAEMONS), names[0] if names else "")


def processes_naming(folder: Path) -> list[int]:
    """Pids of the live processes (but this one) whose command line names a path inside ``folder``."""
    mark = (str(Path(folder).resolve()) + os.sep).encode()  # the separator: not a sibling (var vs var2)
    return [pid for pid in _other_pids() if mark in _read(pid, "cmdline") and _alive_not_zombie(pid)]


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:  # no file, or a stale one nobody listens on
            return False
    return True


def refuse_busy_ports(settings: Settings) -> None:
    """Each port the gateway listens on must be free, or the api (or simnet) would restart forever."""
    if settings.role is Role.HOST:
        return  # a slot host listens on no port: no API, and the simulated network is the api's
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


def children_of(parent: int) -> list[int]:
    """Pids of the live processes whose parent is ``parent``."""
    return [pid for pid in _other_pids() if (stat := _stat(pid)) and stat[1] == parent and stat[0] != "Z"]


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of the processes (but this one) whose environment has ``name=value``."""
    marker = f"{name}={value}".encode()
    return [pid for pid in _other_pids() if marker in _read(pid, "environ").split(b"\0")]


def _other_pids() -> list[int]:
    """Every process's pid but this one's, from /proc."""
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and int(entry.name) != os.getpid()]


def _read(pid: int, name: str) -> bytes:
    """/proc/<pid>/<name>, or b"" once the process is gone (or is not ours to read)."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from /proc/<pid>/stat, or None once it is gone."""
    fields = _read(pid, "stat").decode(errors="replace").rsplit(")", 1)
    if len(fields) < 2:
        return None
    state, ppid = fields[1].split()[:2]
    return state, int(ppid)


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
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def claim_host_name(settings: Settings) -> bool:
    """A slot host on a shared Redis takes its name for this run (hosts.HostRegistry.claim), or refuses
    to start while another machine beats under it. True if claimed (release it at the end); False
    when there is nothing to claim (no slots here, the embedded Redis) or Redis cannot be asked now
    (the agent's first beat claims it then)."""
    if settings.role is Role.API or settings.embedded_redis or not settings.host_instance:
        return False
    registry = HostRegistry(connect(settings.redis_url), settings.host_dead_after)
    try:
        age = registry.claim(settings.host_name, settings.host_instance)
    except redis.RedisError:
        return False
    if age is not None:
        raise CannotStart(f"another machine runs as slot host {settings.host_name} (it beat {age:.0f} s ago): "
                          "give each machine its own WHIN_HOST_NAME")
    return True


def release_host_name(settings: Settings) -> None:
    with contextlib.suppress(redis.RedisError):
        HostRegistry(connect(settings.redis_url), settings.host_dead_after).release(settings.host_name,
                                                                                   settings.host_instance)
