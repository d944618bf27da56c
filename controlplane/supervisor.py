"""The supervisord client (XML-RPC over its unix socket). Its faults become our exceptions.

Each slot is its own program ``slot-<ID>``, written as ``conf.d/slot-<ID>.conf`` and added at run
time with ``whin.addPrograms`` (controlplane/supervisor_plugin.py): only the new files are read,
where reloadConfig re-reads every program file there is.
"""

import http.client
import json
import os
import sys
import tempfile
import xmlrpc.client
from importlib import resources
from pathlib import Path

from supervisor.xmlrpc import Faults, SupervisorTransport

from controlplane.core.errors import ServiceUnavailable

SLOT_PROGRAM_PREFIX = "slot-"
RUNNING_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF"})
STOPPED_STATES = frozenset({"STOPPED", "EXITED", "FATAL", "UNKNOWN"})


# Above a stopProcess(wait=True), which lasts up to a program's stopwaitsecs.
RPC_TIMEOUT_SECONDS = 30.0


class _TimedTransport(SupervisorTransport):
    """supervisor's own transport, with a socket timeout: its unix connection ignores ``timeout``, and
    a stalled supervisord must not hang an API thread (nor /ready) forever."""

    def __init__(self, user: str, password: str, url: str, timeout: float):
        super().__init__(user, password, url)
        make_connection = self._get_connection

        def get_connection():
            connection = make_connection()
            connect = connection.connect

            def connect_with_timeout():
                connect()
                connection.sock.settimeout(timeout)

            connection.connect = connect_with_timeout
            return connection

        self._get_connection = get_connection


class ProgramMissing(Exception):
    """supervisord does not know the slot's program (it was never added, or supervisord restarted)."""


def program_name(slot_id: str) -> str:
    return SLOT_PROGRAM_PREFIX + slot_id


class Supervisor:
    def __init__(self, socket_path: Path, user: str, password: str, conf_dir: Path, logs_dir: Path,
                 timeout: float = RPC_TIMEOUT_SECONDS):
        self.timeout = timeout
        self.socket_path = Path(socket_path)
        self.user = user
        self.password = password
        self.conf_dir = Path(conf_dir)
        self.logs_dir = Path(logs_dir)

    @classmethod
    def from_settings(cls, settings) -> "Supervisor":
        return cls(settings.supervisor_socket, settings.supervisor_user, settings.supervisor_password,
                   settings.supervisor_conf_dir, settings.logs_dir)

    def _proxy(self):
        # A new proxy per call: ServerProxy is not thread-safe, and the unix socket is cheap to open.
        transport = _TimedTransport(self.user, self.password, f"unix://{self.socket_path}", self.timeout)
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def _call(self, method: str, *args):
        """``method`` in supervisord's own namespace (``getState``), or another's (``whin.addPrograms``)."""
        name = method if "." in method else f"supervisor.{method}"
        try:
            return getattr(self._proxy(), name)(*args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == Faults.SHUTDOWN_STATE:  # supervisord is stopping: as good as gone
                raise ServiceUnavailable("supervisor_unavailable", "supervisord is shutting down.") from None
            raise
        except (OSError, xmlrpc.client.ProtocolError, http.client.HTTPException) as err:  # cut mid-answer too
            raise ServiceUnavailable("supervisor_unavailable",
                                     f"supervisord cannot be reached ({type(err).__name__}).") from None

    def _whin(self, method: str, *args):
        """A method of our own rpcinterface (controlplane/supervisor_plugin.py)."""
        try:
            return self._call(f"whin.{method}", *args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode == Faults.UNKNOWN_METHOD:
                raise ServiceUnavailable("supervisor_error", "supervisord lacks the whin rpcinterface "
                                         "([rpcinterface:whin] in its supervisord.conf).") from None
            raise _translate(fault) from None

    # --- reads ---

    def state(self) -> str:
        """supervisord's own state (RUNNING, …): the cheapest question, whatever the programs."""
        return self._call("getState")["statename"]

    def slot_states(self) -> dict[str, str]:
        """slot id -> supervisord state name, for every slot program supervisord knows."""
        return self.slot_programs()[0]

    def slot_programs(self) -> tuple[dict[str, str], dict[str, float]]:
        """slot id -> state name, and slot id -> seconds since its program was last spawned (running
        ones), in one ``whin.slotPrograms``: its answer is a fraction of getAllProcessInfo's, and both
        ages' ends are supervisord's clock, so the caller's clock does not matter."""
        answer = json.loads(self._whin("slotPrograms", SLOT_PROGRAM_PREFIX))
        states, ages = {}, {}
        for name, (state, age) in answer.items():
            slot_id = name[len(SLOT_PROGRAM_PREFIX):]
            states[slot_id] = state
            if age is not None:
                ages[slot_id] = float(age)
        return states, ages

    def program_states(self) -> dict[str, str]:
        """program name -> supervisord state name, for every program (api, redis, slot-…)."""
        return {info["name"]: info["statename"] for info in self._call("getAllProcessInfo")}

    def process_info(self, slot_id: str) -> dict:
        return self.process_info_by_name(program_name(slot_id))

    def process_info_by_name(self, name: str) -> dict:
        """Any program's info (api, delivery-1, …), for operations and tests."""
        try:
            return self._call("getProcessInfo", name)
        except xmlrpc.client.Fault as fault:
            raise _translate(fault) from None

    def is_running(self, slot_id: str) -> bool:
        return self.process_info(slot_id)["statename"] in RUNNING_STATES

    # --- programs ---

    def write_program(self, slot_id: str) -> Path:
        """Write conf.d/slot-<ID>.conf atomically (temp file + rename): a half file breaks reloads."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        text = resources.files("controlplane").joinpath("templates/slot.conf").read_text()
        text = text.format(slot_id=slot_id, python=escape(sys.executable), workdir=escape(Path.cwd()),
                           logs_dir=escape(self.logs_dir))
        target = self.conf_dir / f"{program_name(slot_id)}.conf"
        fd, tmp = tempfile.mkstemp(dir=self.conf_dir, prefix=".slot-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
        return target

    def add_programs(self, slot_ids: list[str]) -> None:
        """Make supervisord know these slots' programs (written first if missing). Idempotent.

        The files are what a supervisord restart reads (through [include]); whin.addPrograms reads
        just these, at a cost that does not grow with the programs already there."""
        if not slot_ids:
            return
        for slot_id in slot_ids:
            if not (self.conf_dir / f"{program_name(slot_id)}.conf").exists():
                self.write_program(slot_id)
        self._whin("addPrograms", [program_name(slot_id) for slot_id in slot_ids])

    def remove(self, slot_id: str) -> None:
        """Forget a stopped slot program: out of supervisord, and its file gone, so that a restart of
        supervisord does not load it either (the slot runs on another host now)."""
        (self.conf_dir / f"{program_name(slot_id)}.conf").unlink(missing_ok=True)
        try:
            self._call("removeProcessGroup", program_name(slot_id))
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.BAD_NAME:
                raise _translate(fault) from None

    # --- processes ---

    def start(self, slot_id: str) -> None:
        try:
            self._call("startProcess", program_name(slot_id), False)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.ALREADY_STARTED:
                raise _translate(fault) from None

    def stop(self, slot_id: str, wait: bool = True) -> None:
        try:
            self._call("stopProcess", program_name(slot_id), wait)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.NOT_RUNNING:
                raise _translate(fault) from None


def escape(value) -> str:
    """supervisord expands %(name)s in its values: a literal % must be written %%."""
    return str(value).replace("%", "%%")


def _translate(fault: xmlrpc.client.Fault) -> Exception:
    if fault.faultCode == Faults.BAD_NAME:
        return ProgramMissing(fault.faultString)
    return ServiceUnavailable("supervisor_error", f"supervisord refused: {fault.faultString}")
