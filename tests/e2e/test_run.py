"""`make run` as a sysadmin runs it: embedded Redis, everything under supervisord, nothing left behind."""

import signal

import psutil
import pytest

from tests.gateway import Gateway


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _command_lines(processes: list[psutil.Process]) -> str:
    """What the processes run, skipping any that exit meanwhile (neonize runs `uname` at import)."""
    lines = []
    for proc in processes:
        try:
            lines.append(" ".join(proc.cmdline()))
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return " ".join(lines)


@pytest.mark.parametrize(("sig", "whole_group"), [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["sigterm-to-make", "ctrl-c"])
def test_make_run_serves_then_stops_every_process_it_started(tmp_path, new_line, sig, whole_group):
    gw = Gateway(tmp_path / "var", redis_url=None, command=["make", "--no-print-directory", "run"]).start()
    try:
        active, pairing = gw.provision(2)
        gw.enroll(active, new_line())
        gw.enroll_qr_text(pairing)  # a worker in the middle of pairing
        names = _command_lines(_descendants(gw.process.pid))
        for expected in ("supervisord", "redis-server", "simnet", "gunicorn", "controlplane.reconciler",
                         f"slotworker {active}", f"slotworker {pairing}"):
            assert expected in names
        # The embedded Redis keeps its data in the data folder, owner-only.
        assert (tmp_path / "var" / "run" / "redis.sock").exists()
        started = _descendants(gw.process.pid)
    finally:
        gw.stop(sig=sig, whole_group=whole_group)
    assert gw.process.returncode is not None
    gone, alive = psutil.wait_procs(started, timeout=15)
    assert alive == [], _command_lines(alive)
