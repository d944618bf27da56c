"""controlplane.instance: what an earlier run on the data folder left running is ended in order."""

import subprocess
import sys
import time
from pathlib import Path

from controlplane import instance
from controlplane.core.config import Settings


def test_orphans_are_ended_before_the_redis_they_write_to(tmp_path, monkeypatch):
    # Real processes: two stand-ins for a slot worker and a delivery worker, one for Redis's keeper.
    tags = ("slotworker", "delivery", "controlplane.redis_keeper")
    programs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", tag]) for tag in tags]
    by_pid = {p.pid: p for p in programs}
    # Popen returns after fork: until exec, /proc shows pytest's own command line, not the tag.
    for program, tag in zip(programs, tags, strict=True):
        wait_for_exec(program.pid, tag)
    keeper = programs[2].pid
    monkeypatch.setattr(instance, "processes_with_env", lambda name, value: list(by_pid))
    monkeypatch.setattr(instance, "processes_naming", lambda folder: [])
    rounds = []
    real_end = instance.end_processes

    def end_processes(pids, grace):
        rounds.append(sorted(pids))
        return real_end(pids, grace)

    monkeypatch.setattr(instance, "end_processes", end_processes)
    try:
        ended = instance.end_orphans(Settings.from_env({"WHIN_DATA_DIR": str(tmp_path)}), grace=5)
        assert sorted(ended) == sorted(by_pid)
        assert rounds == [sorted(set(by_pid) - {keeper}), [keeper]]
        assert all(p.wait(5) is not None for p in programs)
    finally:
        for p in programs:
            p.kill()
            p.wait()


def wait_for_exec(pid: int, tag: str, deadline: float = 10.0) -> None:
    give_up = time.monotonic() + deadline
    while tag.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < give_up, f"{pid} never ran its command line with {tag}"
        time.sleep(0.01)
