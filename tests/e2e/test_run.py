"""`make run` as a sysadmin runs it: embedded Redis, everything under supervisord, nothing left behind."""

import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from controlplane import instance
from tests.gateway import GATEWAY_MARK, REPO, free_port, processes_of, wait_for

# A mark of the test's own in the launcher's environment, to look for anything it left running.
RUN_MARK_CHECK = "WHIN_TEST_LAUNCH"


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
def test_make_run_serves_then_stops_every_process_it_started(make_gateway, new_line, sig, whole_group):
    gw = make_gateway(folder="var", embedded_redis=True, command=["make", "--no-print-directory", "run"])
    active, pairing = gw.provision(2)
    gw.enroll(active, new_line())
    gw.enroll_qr_text(pairing)  # a worker in the middle of pairing
    names = _command_lines(_descendants(gw.process.pid))
    for expected in ("supervisord", "redis-server", "simnet", "gunicorn", "controlplane.reconciler",
                     f"slotworker {active}", f"slotworker {pairing}"):
        assert expected in names
    # The embedded Redis keeps its data in the data folder, owner-only.
    assert (gw.data_dir / "run" / "redis.sock").exists()
    started = _descendants(gw.process.pid)
    gw.stop(sig=sig, whole_group=whole_group)  # make_gateway would also stop it if the test failed before
    assert gw.process.returncode is not None
    gone, alive = psutil.wait_procs(started, timeout=15)
    assert alive == [], _command_lines(alive)


# --- make run as a newcomer meets it ---

def _launch(tmp_path, **env) -> subprocess.CompletedProcess:
    """The launcher that must refuse to start: it answers in seconds, with one sentence."""
    environ = {**os.environ, "WHIN_ENGINE": "sim", "WHIN_DATA_DIR": str(tmp_path / "var"),
               "WHIN_PORT": str(free_port()), "WHIN_SIMNET_PORT": str(free_port()), **env}
    return subprocess.run([sys.executable, "-m", "controlplane.launch"], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=120)


def _one_sentence(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    complaint = result.stderr.strip().splitlines()
    assert len(complaint) == 1, result.stderr
    for word in words:
        assert word in complaint[0]
    assert "ready" not in result.stdout


def test_a_port_in_use_is_one_sentence_naming_the_variable_and_nothing_is_left_running(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _launch(tmp_path, WHIN_PORT=str(port), **{RUN_MARK_CHECK: "port"})
    _one_sentence(result, f"port {port}", "already in use", "WHIN_PORT")
    assert instance.processes_with_env(RUN_MARK_CHECK, "port") == []


def test_a_busy_simnet_port_names_its_own_variable(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = _launch(tmp_path, WHIN_SIMNET_PORT=str(taken.getsockname()[1]))
    _one_sentence(result, "WHIN_SIMNET_PORT", "already in use")


def test_a_bad_setting_is_one_sentence(tmp_path):
    _one_sentence(_launch(tmp_path, WHIN_ENGINE="simulated"), "WHIN_ENGINE", "'simulated'")
    _one_sentence(_launch(tmp_path, WHIN_PORT="eighty"), "WHIN_PORT")


def test_an_api_that_cannot_start_is_reported_and_the_gateway_stops_without_saying_ready(tmp_path):
    # Not caught before the start: gunicorn's own configuration fails, so supervisord gives up on the api.
    result = _launch(tmp_path, WHIN_API_WORKERS="many", **{RUN_MARK_CHECK: "api"})
    _one_sentence(result, "the api program cannot start", "api.log")
    assert instance.processes_with_env(RUN_MARK_CHECK, "api") == []


def test_ready_is_said_only_once_the_api_answers_and_a_second_run_says_one_is_running(tmp_path, make_gateway):
    gw = make_gateway(folder="var", embedded_redis=True)
    said = (tmp_path / "var" / "launch.out").read_text()
    assert "whinmovilla: starting" in said
    # The banner comes after /ready passed: the line is there by the time the API answers.
    wait_for(lambda: "whinmovilla: ready." in (tmp_path / "var" / "launch.out").read_text(),
             what="the ready banner")
    assert said.index("whinmovilla: starting") < (tmp_path / "var" / "launch.out").read_text().index("ready.")
    second = _launch(tmp_path, WHIN_PORT=str(free_port()))
    _one_sentence(second, "is starting or running in", str(tmp_path / "var"), f"port {gw.port}")
    assert gw.api("GET", "/ready").status_code == 200  # the first one is untouched


def test_a_killed_supervisord_takes_every_program_with_it(make_gateway, new_line):
    gw = make_gateway(embedded_redis=True)
    gw.enroll(gw.provision(1)[0], new_line())
    gw.redis.close()  # the test's own client: Redis would wait for it (its grace), and the launcher for Redis
    supervisord = next(p for p in psutil.Process(gw.process.pid).children() if "supervisord" in p.name()
                       or "supervisord" in " ".join(p.cmdline()))
    programs = supervisord.children(recursive=True)
    assert len(programs) >= 5  # redis, simnet, api (and its workers), reconciler, the slot
    supervisord.kill()
    # The launcher ends what outlived supervisord, then exits: each program stops by itself at once
    # (the parent-death signal), and one that does not gets the launcher's grace (the longest
    # stopwaitsecs, 30 s) before its SIGKILL. Waited for past that bound, saying who was still there.
    try:
        gw.process.wait(75)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the launcher is still waiting for: {_command_lines(programs)}") from None
    gone, alive = psutil.wait_procs(programs, timeout=15)
    assert alive == [], _command_lines(alive)


def test_no_program_outlives_a_supervisord_killed_with_its_launcher(make_gateway, new_line):
    """Nobody left to clean up: the launcher SIGKILLed first, then supervisord. Every program ends by
    itself (the parent-death signal, core/lifeline.py) with SIGTERM, a normal stop; the embedded Redis
    too, through its keeper, once its clients are gone (so what they still write reaches it)."""
    gw = make_gateway(embedded_redis=True)
    gw.enroll(gw.provision(1)[0], new_line())
    gw.redis.close()  # the test's own client: Redis would wait for it (its grace) before it ends
    supervisord = next(p for p in psutil.Process(gw.process.pid).children() if "supervisord" in p.name()
                       or "supervisord" in " ".join(p.cmdline()))
    programs = [p for p in supervisord.children(recursive=True) if _serving(p)]  # not a finished `uname`
    names = _command_lines(programs)
    assert len(programs) >= 6 and "redis-server" in names and "redis_keeper" in names
    gw.process.kill()
    gw.process.wait(10)
    supervisord.kill()
    _, alive = psutil.wait_procs(programs, timeout=20)
    alive = [p for p in alive if _serving(p)]  # a zombie nobody reaps yet has ended
    assert alive == [], _command_lines(alive)


def _serving(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _launcher(tmp_path, mark: str, **env) -> subprocess.Popen:
    environ = {**os.environ, "WHIN_ENGINE": "sim", "WHIN_DATA_DIR": str(tmp_path / "var"),
               "WHIN_PORT": str(free_port()), "WHIN_SIMNET_PORT": str(free_port()), RUN_MARK_CHECK: mark, **env}
    return subprocess.Popen([sys.executable, "-m", "controlplane.launch"], cwd=REPO, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_supervisord_killed_before_ready_ends_the_launcher_and_everything(tmp_path):
    launcher = _launcher(tmp_path, "early")
    try:
        def supervisord_with_programs():
            children = psutil.Process(launcher.pid).children()
            return children and len(children[0].children()) >= 2 and children[0]
        supervisord = wait_for(supervisord_with_programs, timeout=60, what="supervisord and its programs")
        supervisord.kill()
        out, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1 and "supervisord exited" in err
    wait_for(lambda: processes_of(RUN_MARK_CHECK, "early", tmp_path / "var") == [], timeout=15,
             what="every program to be gone")


def test_a_hang_up_stops_the_gateway_instead_of_restarting_it(make_gateway):
    gw = make_gateway(embedded_redis=True)
    started = psutil.Process(gw.process.pid).children(recursive=True)
    gw.process.send_signal(signal.SIGHUP)  # the terminal was closed
    gw.process.wait(60)
    gone, alive = psutil.wait_procs(started, timeout=15)
    assert alive == [], _command_lines(alive)


def test_a_start_ends_what_a_killed_run_on_its_folder_left_running(make_gateway, new_line):
    first = make_gateway(folder="var", embedded_redis=True)
    first.enroll(first.provision(1)[0], new_line())
    launcher = psutil.Process(first.process.pid)
    (supervisord,) = launcher.children()
    orphans = [p for p in launcher.children(recursive=True) if p.pid != supervisord.pid]
    for proc in (launcher, supervisord):  # both at once: nobody is left to end the programs
        proc.kill()
    first.process.wait(10)
    second = make_gateway(folder="var", embedded_redis=True, start=False)
    second.env[GATEWAY_MARK] = first.env[GATEWAY_MARK]  # its stop() ends both runs' processes
    second.start()
    gone, alive = psutil.wait_procs(orphans, timeout=15)
    assert alive == [], _command_lines(alive)
    assert "ending" in (second.data_dir / "launch.out").read_text()
    assert second.api("GET", "/ready").status_code == 200


def test_two_starts_at_once_on_one_folder_make_one_gateway(tmp_path):
    env = {"WHIN_PORT": str(free_port()), "WHIN_SIMNET_PORT": str(free_port())}
    starts = [_launcher(tmp_path, "twice", **env), _launcher(tmp_path, "twice", **env)]
    try:
        refused = wait_for(lambda: next((s for s in starts if s.poll() is not None), None), timeout=60,
                           what="one of the two to refuse")
        assert refused.returncode == 1
        assert "is starting or running" in refused.stderr.read()
        (running,) = [s for s in starts if s is not refused]
        wait_for(lambda: instance.running_record(tmp_path / "var"), timeout=60, what="the running one's record")
        running.send_signal(signal.SIGTERM)
        running.wait(60)
    finally:
        for start in starts:
            if start.poll() is None:
                start.kill()
    wait_for(lambda: processes_of(RUN_MARK_CHECK, "twice", tmp_path / "var") == [], timeout=15,
             what="every program to be gone")


def test_two_gateways_side_by_side_keep_their_own_sockets_and_slots_and_stop_and_start_alone(
        make_gateway, tmp_path, new_line):
    import stat

    home = tmp_path / "home"  # where gunicorn would put its per-user default, shared by both
    home.mkdir()
    first, second = make_gateway(HOME=str(home)), make_gateway(HOME=str(home))
    sockets = [gw.data_dir / "run" / "gunicorn.ctl" for gw in (first, second)]
    for path in sockets:
        wait_for(lambda path=path: path.exists(), what=f"{path}")
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (home / ".gunicorn").exists()
    slots = {gw: [gw.enrolled_slot(new_line()) for _ in range(2)] for gw in (first, second)}
    untouched = _supervisord_and_workers(second, slots[second])

    first.stop()
    assert first.processes() == []
    assert second.api("GET", "/health").status_code == 200 and sockets[1].exists()
    assert all(second.detail(s)["connected"] for s in slots[second])
    assert _supervisord_and_workers(second, slots[second]) == untouched  # nothing restarted

    first.start()  # its slots come back; the other gateway still untouched
    wait_for(lambda: all(first.detail(s)["connected"] for s in slots[first]), timeout=30,
             what="the restarted gateway's slots to connect again")
    assert _supervisord_and_workers(second, slots[second]) == untouched


def _supervisord_and_workers(gw, slots: list[str]) -> tuple:
    """supervisord's pid and start time, and each slot worker's pid: the same only if nothing restarted."""
    (supervisord,) = psutil.Process(gw.process.pid).children()
    return supervisord.pid, supervisord.create_time(), tuple(gw.slot_pid(s) for s in slots)
