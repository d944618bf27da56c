"""The test harness itself: its waits treat every "not yet" as not yet, and it leaves nothing running."""

import os
import signal
import socket
import time

import psutil
import pytest

from tests.gateway import Gateway
from tests.httpserver import QuietHandler, serving


class _SlowReady(QuietHandler):
    """A /ready whose first answers take longer than any read timeout: a gateway still warming up."""

    slow_until = 0.0

    def do_GET(self):
        if time.monotonic() < self.slow_until:
            time.sleep(6)
        self.answer(200)


def test_a_slow_first_answer_is_not_yet_not_an_error(tmp_path):
    _SlowReady.slow_until = time.monotonic() + 3
    with serving(_SlowReady) as url:
        gw = Gateway(tmp_path, redis_url="unix:///nonexistent", WHIN_ENGINE="whatsmeow")

        class Running:  # the launcher, as far as _answers looks at it
            def poll(self):
                return None

        gw.process = Running()
        gw.url = url
        assert gw._answers() is False  # timed out: not yet
        with socket.socket() as closed:  # refused: not yet
            closed.bind(("127.0.0.1", 0))
            gw.url = f"http://127.0.0.1:{closed.getsockname()[1]}"
            assert gw._answers() is False
        gw.url = url
        time.sleep(max(0.0, _SlowReady.slow_until - time.monotonic()))
        assert gw._answers() is True


def test_a_gateway_whose_start_fails_leaves_no_process(tmp_path):
    gw = Gateway(tmp_path / "gw", redis_url=None)
    with pytest.raises(AssertionError, match="timed out"):
        gw.start(timeout=0.5)  # far too short to answer: the set-up fails
    assert gw.processes() == []
    assert gw.process.poll() is not None


def test_stop_ends_every_process_even_when_the_launcher_and_supervisord_were_killed(tmp_path, new_line):
    gw = Gateway(tmp_path / "gw", redis_url=None).start()
    try:
        gw.enroll(gw.provision(1)[0], new_line())
        launcher = psutil.Process(gw.process.pid)
        (supervisord,) = launcher.children()
        started = launcher.children(recursive=True)
        assert len(started) >= 5
        # Both killed at once: the launcher cannot end the programs; the embedded Redis at least runs on
        # without a parent (the others end with supervisord: core/lifeline.py).
        for proc in (launcher, supervisord):
            os.kill(proc.pid, signal.SIGKILL)
        gw.process.wait(10)
        assert any(_serving(p) for p in started)
    finally:
        gw.stop()
    gone, alive = psutil.wait_procs(started, timeout=10)
    assert alive == []
    assert gw.processes() == []


def _serving(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # a gunicorn worker leaves once its master is gone
        return False
