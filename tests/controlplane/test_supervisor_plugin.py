"""controlplane.supervisor_plugin inside a real supervisord: programs added by reading only their own
file, as reloadConfig would have made them, and a shutdown that stops equal priorities together."""

import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import xmlrpc.client
from pathlib import Path

import pytest

from controlplane.supervisor import Supervisor, escape, program_name
from tests.gateway import wait_for

SUPERVISORD = str(Path(sys.executable).parent / "supervisord")


class BareSupervisord:
    """supervisord with the whin rpcinterface, conf.d/*.conf included, and no program of ours."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.conf_dir = folder / "conf.d"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "supervisord.conf"
        self.socket = folder / "s.sock"
        self.process: subprocess.Popen | None = None
        self.client = Supervisor(self.socket, "whin", "pw", self.conf_dir, folder)

    def start(self) -> "BareSupervisord":
        self.conf.write_text(textwrap.dedent(f"""\
            [unix_http_server]
            file={escape(self.socket)}
            chmod=0700
            username=whin
            password=pw
            [supervisord]
            nodaemon=true
            silent=true
            logfile={escape(self.folder)}/supervisord.log
            pidfile={escape(self.folder)}/supervisord.pid
            childlogdir={escape(self.folder)}
            minfds=4096
            ; read_config gives every program [supervisord]'s environment: addPrograms must too
            environment=WHIN_PLUGIN_TEST="yes"
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            [rpcinterface:whin]
            supervisor.rpcinterface_factory = controlplane.supervisor_plugin:make_rpcinterface
            conf_dir = {escape(self.conf_dir)}
            [supervisorctl]
            serverurl=unix://{escape(self.socket)}
            username=whin
            password=pw
            [include]
            files = {escape(self.conf_dir)}/*.conf
            """))
        self.process = subprocess.Popen([SUPERVISORD, "-n", "-c", str(self.conf)])
        wait_for(self._answers, what="supervisord to answer")
        return self

    def _answers(self) -> bool:
        try:
            return self.client.state() == "RUNNING"
        except Exception:
            return False

    def write(self, name: str, command: str, **settings) -> None:
        lines = [f"[program:{name}]", f"command={command}", "autostart=false", "startsecs=0",
                 "stopasgroup=true", "killasgroup=true", "stopwaitsecs=10",
                 *(f"{key}={value}" for key, value in settings.items())]
        (self.conf_dir / f"{name}.conf").write_text("\n".join(lines) + "\n")

    def supervisorctl(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=30).stdout

    def shutdown(self) -> float:
        """SIGTERM to supervisord; how long until it has exited."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        return time.monotonic() - started

    def close(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def supervisords(tmp_path):
    made = []

    def make(name: str = "a") -> BareSupervisord:
        made.append(BareSupervisord(tmp_path / name))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _bytes_read(pid: int) -> int:
    return int(next(line.split()[1] for line in Path(f"/proc/{pid}/io").read_text().splitlines()
                    if line.startswith("rchar:")))


def _cost_of_adding(bare: BareSupervisord, ids: list[str]) -> tuple[float, int]:
    """Median seconds of Supervisor.add_programs([one id]), and the most bytes supervisord read for one."""
    seconds, reads = [], []
    for slot_id in ids:
        before = _bytes_read(bare.process.pid)
        started = time.monotonic()
        bare.client.add_programs([slot_id])
        seconds.append(time.monotonic() - started)
        reads.append(_bytes_read(bare.process.pid) - before)
    return statistics.median(seconds), max(reads)


def test_adding_a_program_costs_the_same_with_300_programs_there_as_with_none(supervisords):
    empty = supervisords("empty").start()
    full = supervisords("full")
    for n in range(300):
        full.client.write_program(f"old{n:03d}")
    full.start()
    assert len(full.client.slot_states()) == 300

    empty_seconds, empty_read = _cost_of_adding(empty, [f"new{n}" for n in range(7)])
    full_seconds, full_read = _cost_of_adding(full, [f"new{n}" for n in range(7)])

    assert set(full.client.slot_states()) >= {f"new{n}" for n in range(7)}
    # reloadConfig would read all 300 files (~150 KB) for each one added: here only its own (~1 KB).
    assert full_read < empty_read + 2000, (empty_read, full_read)
    assert full_seconds < 3 * empty_seconds + 0.01, (empty_seconds, full_seconds)


def test_what_add_programs_made_is_what_a_reload_would_make_so_an_update_restarts_nothing(supervisords):
    bare = supervisords().start()
    bare.client.write_program("templated")  # the real slot template, never started here
    # A running one, with ENV_ and %(here)s expansions, as a file it finds already written.
    bare.write(program_name("running"), "sleep 600", environment='WHERE="%(here)s",HOME_WAS="%(ENV_HOME)s"')
    bare.client.add_programs(["templated", "running", "running"])  # twice in one call: fine
    bare.client.add_programs(["running"])  # and again: already added is fine
    bare.client.start("running")
    pid = bare.client.process_info("running")["pid"]
    assert pid

    assert bare.client._call("reloadConfig") == [[[], [], []]]
    bare.supervisorctl("update")
    info = bare.client.process_info("running")
    assert (info["statename"], info["pid"]) == ("RUNNING", pid)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert b"WHIN_PLUGIN_TEST=yes" in environ
    assert f"WHERE={bare.conf_dir}".encode() in environ


def test_a_missing_or_wrong_file_adds_nothing(supervisords):
    bare = supervisords().start()
    bare.write(program_name("good"), "sleep 600")
    (bare.conf_dir / "slot-bad.conf").write_text("[program:slot-other]\ncommand=sleep 1\n")
    with pytest.raises(Exception, match="must define"):
        bare.client._call("whin.addPrograms", ["slot-good", "slot-bad"])
    with pytest.raises(Exception, match="BAD_NAME"):
        bare.client._call("whin.addPrograms", ["../supervisord"])
    assert bare.client.slot_states() == {}


def test_slot_programs_answers_each_slot_programs_state_and_age_in_a_fraction_of_all_process_info(supervisords):
    bare = supervisords().start()
    for name in ("slot-RUN", "slot-IDLE", "slot-GONE", "api"):
        bare.write(name, "sleep 600")
    # A group of two processes named like a slot is not a slot program.
    bare.write("slot-TWO", "sleep 600", numprocs=2, process_name="%(program_name)s_%(process_num)s")
    for n in range(60):
        bare.write(f"slot-MORE{n:02d}", "sleep 600")
    bare.client._call("whin.addPrograms", [p.stem for p in bare.conf_dir.glob("*.conf")])
    for name in ("slot-RUN", "slot-GONE", "api"):
        bare.client._call("startProcess", name, True)
    bare.client._call("stopProcess", "slot-GONE", True)
    time.sleep(1.1)

    states, ages = bare.client.slot_programs()

    assert states == {"RUN": "RUNNING", "IDLE": "STOPPED", "GONE": "STOPPED"} | {
        f"MORE{n:02d}": "STOPPED" for n in range(60)}
    assert set(ages) == {"RUN"} and 1.0 <= ages["RUN"] < 30  # supervisord's clock: since its spawn
    assert bare.client.slot_states() == states
    compact = len(bare.client._call("whin.slotPrograms", "slot-"))
    full = len(xmlrpc.client.dumps((bare.client._call("getAllProcessInfo"),)))
    assert compact * 10 < full, (compact, full)


# TERM: wait for the trap's sleep, then exit 0 (the `sleep 600 &` dies with the group's TERM). "ready"
# once the trap is set: with startsecs=0 supervisord says RUNNING at the fork, before the shell has.
def _slow_to_stop(record: Path, name: str, seconds: float) -> str:
    mark = f"echo {name} $1 $(date +%s.%N) >> {record}"
    return escape(f"sh -c \"trap '{mark.replace('$1', 'term')}; sleep {seconds}; "
                  f"{mark.replace('$1', 'exit')}; exit 0' TERM; {mark.replace('$1', 'ready')}; sleep 600 & wait\"")


def test_a_shutdown_stops_all_programs_of_one_priority_at_once_in_priority_order(supervisords):
    bare = supervisords().start()
    record = bare.folder / "stops.txt"
    programs = {f"slot-{n}": 999 for n in range(8)} | {"delivery-1": 50, "delivery-2": 50, "api": 30}
    for name, priority in programs.items():
        bare.write(name, _slow_to_stop(record, name, 1.0), priority=priority)
    bare.client._call("whin.addPrograms", list(programs))
    for name in programs:
        bare.client._call("startProcess", name, False)
    wait_for(lambda: record.exists() and len(record.read_text().splitlines()) == len(programs),
             what="every program running, its trap set")

    took = bare.shutdown()

    events = {}
    for line in record.read_text().splitlines():
        name, what, when = line.split()
        events[name, what] = float(when)
    assert all((name, "exit") in events for name in programs), events  # each one drained, none SIGKILLed
    assert "SIGKILL" not in (bare.folder / "supervisord.log").read_text()
    # One priority after the other: the next is asked to stop only once the last one has exited.
    for first, then in ((999, 50), (50, 30)):
        last_exit = max(events[name, "exit"] for name, p in programs.items() if p == first)
        first_term = min(events[name, "term"] for name, p in programs.items() if p == then)
        assert last_exit <= first_term, (first, then)
    # Within one, together: 3 priorities of 1 s each (and supervisord's 1 s poll), not 11 x 1 s.
    slot_terms = [events[name, "term"] for name, p in programs.items() if p == 999]
    assert max(slot_terms) - min(slot_terms) < 0.5
    assert took < 7, took
    assert not os.path.exists(bare.socket)
