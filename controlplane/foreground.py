"""supervisord's parent in the foreground: what `make run` is once its configuration is written.

It starts supervisord in a session of its own, says why when an essential program cannot start,
passes Ctrl-C, a hang-up and SIGTERM on as SIGTERM, and, as a child subreaper, reaps supervisord
and ends whatever a dead supervisord leaves behind (each program has a process group of its own).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from controlplane import instance
from controlplane.core.config import Role, Settings
from controlplane.core.errors import ServiceUnavailable
from controlplane.supervisor import Supervisor

# The programs that must be up for the gateway to be any use; a slot or delivery worker that
# fails is the reconciler's and supervisord's business, not a reason to stop the start.
ESSENTIAL = ("redis", "simnet", "api", "reconciler")


class Launcher:
    """supervisord's parent: starts it, reports readiness or the reason it cannot be, passes signals on.

    It alone reaps: supervisord, and any program a dead supervisord leaves (as a child subreaper,
    those become its children). Popen only spawns; its poll() would reap supervisord behind our back.
    """

    def __init__(self, settings: Settings, conf: Path, poll: float = 0.25, stop_grace: float = 30.0):
        self.settings = settings
        # What outlives supervisord gets SIGTERM, then this long (the longest stopwaitsecs: a slot
        # draining, a delivery finishing its POST, Redis waiting for its clients) before SIGKILL.
        self.stop_grace = stop_grace
        self.conf = conf
        self.poll = poll
        self.pid: int | None = None  # supervisord's
        self.exit_code: int | None = None  # supervisord's, once reaped
        self.stopping = False

    def start(self) -> None:
        supervisord = str(Path(sys.executable).parent / "supervisord")
        instance.become_subreaper()  # programs orphaned by a dead supervisord become our children
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, self._stop_on_signal)
        # Logs outlive a run: only what this start writes can say why this start fails.
        self.log_offsets = {name: _size(self.settings.logs_dir / f"{name}.log") for name in ESSENTIAL}
        os.environ[instance.LAUNCHED_FOR] = str(self.settings.data_dir)  # every program inherits it
        # Its own session: a terminal's Ctrl-C or hang-up reaches the launcher only, which decides.
        self.pid = subprocess.Popen([supervisord, "-n", "-c", str(self.conf)], start_new_session=True).pid
        instance.write_record(self.settings, os.getpid(), self.pid)

    def _stop_on_signal(self, signum, _frame) -> None:
        # SIGTERM whatever came: supervisord takes SIGHUP as "restart everything", and a closed
        # terminal must stop the gateway, not restart it.
        self.stopping = True
        self.stop()

    def stop(self) -> None:
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def _reap(self, block: bool) -> None:
        """Reap exited children; with ``block``, until supervisord has exited."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block and self.exit_code is None else os.WNOHANG)
            except ChildProcessError:  # no child left at all
                if self.exit_code is None:
                    self.exit_code = 1
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.exit_code = os.waitstatus_to_exitcode(status)

    def wait_until_ready(self, start_timeout: float) -> str | None:
        """None once /ready passes; else why the gateway cannot run, in one sentence."""
        supervisor = Supervisor.from_settings(self.settings)
        deadline = time.monotonic() + start_timeout
        warned = False
        while not self.stopping:
            self._reap(block=False)
            if self.exit_code is not None:
                return (f"supervisord exited with code {self.exit_code}; see "
                        f"{self.settings.logs_dir / 'supervisord.log'}")
            if self._ready():
                return None
            failure = self._failed_program(supervisor)
            if failure:
                return failure
            if not warned and time.monotonic() > deadline:
                warned = True
                print(f"whinmovilla: still not ready after {start_timeout:g} s; waiting (logs in "
                      f"{self.settings.logs_dir})", flush=True)
            time.sleep(self.poll)
        return None

    def _ready(self) -> bool:
        if self.settings.role is Role.HOST:  # no API here: ready once its agent runs
            try:
                return Supervisor.from_settings(self.settings).program_states().get("reconciler") == "RUNNING"
            except ServiceUnavailable:
                return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.port}/ready", timeout=2) as answer:
                return answer.status == 200
        except (OSError, urllib.error.URLError):  # refused, timed out, 503: not yet
            return False

    def _failed_program(self, supervisor: Supervisor) -> str | None:
        """Why an essential program cannot start: a port in use at once, anything else once FATAL."""
        if "Connection in use" in self._new_log("api"):  # gunicorn's words; it retries, then exits
            return instance.port_message("WHIN_PORT", self.settings.port, "the API")
        if "Address already in use" in self._new_log("simnet"):
            return instance.port_message("WHIN_SIMNET_PORT", self.settings.simnet_port, "the simulated network")
        try:
            states = supervisor.program_states()
        except ServiceUnavailable:  # supervisord not listening yet
            return None
        # FATAL, not BACKOFF: a program may fail once while another is still starting (the
        # reconciler before Redis); supervisord gives up on one only after its start retries.
        for name in ESSENTIAL:
            if states.get(name) == "FATAL":
                reason = _last_error(self._new_log(name))
                return (f"the {name} program cannot start" + (f" ({reason})" if reason else "") +
                        f"; see {self.settings.logs_dir / (name + '.log')}")
        return None

    def _new_log(self, name: str, most: int = 65536) -> str:
        """What program ``name`` logged since this start (its last ``most`` bytes)."""
        path = self.settings.logs_dir / f"{name}.log"
        try:
            with open(path, "rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self.log_offsets.get(name, 0), size - most))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait(self) -> int:
        """Reap children until supervisord exits; then end what outlived it. Returns its exit code."""
        self._reap(block=True)
        # Whatever outlived supervisord (it was killed, say) would serve on with no parent: end it.
        # Rounds, since a killed parent (gunicorn's master) hands its own children to us in turn.
        for _ in range(5):
            leftovers = instance.children_of(os.getpid())
            if not leftovers:
                break
            instance.end_processes(leftovers, grace=self.stop_grace)
            self._reap(block=False)
        instance.clear_record(self.settings)
        return self.exit_code


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _last_error(tail: str) -> str:
    for line in reversed(tail.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("ERROR", "CRITICAL"):
            return str(entry.get("event", ""))[:300]
    return ""
