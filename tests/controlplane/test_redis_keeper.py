"""The embedded Redis's keeper (controlplane/redis_keeper.py): Redis ends with its supervisord, but only
once its clients are gone, so what they wrote last is on disk."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import redis

from controlplane.launch import redis_server_binary
from tests.gateway import wait_for

# A stand-in for supervisord: the lifeline trusts a parent whose command line names supervisord.
FAKE_SUPERVISORD = "import subprocess, sys, time  # supervisord\nsubprocess.Popen(sys.argv[1:])\ntime.sleep(600)"


class Kept:
    """A fake supervisord running the keeper of a real redis-server on a folder of the test's own."""

    def __init__(self, folder, grace: float):
        self.folder = folder
        self.sock = folder / "redis.sock"
        self.parent = subprocess.Popen(
            [sys.executable, "-c", FAKE_SUPERVISORD, sys.executable, "-m", "controlplane.redis_keeper", str(grace),
             *self.redis_command()],
            env={**os.environ, "SUPERVISOR_ENABLED": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.keeper = wait_for(lambda: next(iter(psutil.Process(self.parent.pid).children()), None),
                               what="the keeper")
        self.redis = wait_for(lambda: next(iter(self.keeper.children()), None), what="redis-server")
        wait_for(lambda: self.sock.exists() and self.client().ping(), what="redis to answer")

    def redis_command(self) -> list[str]:
        return [redis_server_binary(), "--port", "0", "--unixsocket", str(self.sock), "--dir", str(self.folder),
                "--daemonize", "no", "--appendonly", "yes", "--save", ""]

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.sock), socket_timeout=5)

    def kill_supervisord(self) -> None:
        self.parent.kill()
        self.parent.wait(10)

    def gone_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while any(_serving(p) for p in (self.keeper, self.redis)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def end(self) -> None:
        for proc in (self.parent, self.keeper, self.redis):
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                proc.kill()
        self.parent.wait(10)


def _serving(proc: psutil.Process) -> bool:
    """Alive and not a zombie (the fake supervisord does not reap its keeper)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def kept(tmp_path):
    made = []

    def make(grace: float = 10.0) -> Kept:
        made.append(Kept(tmp_path, grace))
        return made[-1]

    yield make
    for one in made:
        one.end()


def test_after_supervisords_death_redis_serves_its_clients_to_the_end_then_ends_with_their_writes(kept, tmp_path):
    one = kept(grace=20)
    client = one.client()
    client.set("before", "1")
    one.kill_supervisord()
    time.sleep(1)  # the keeper got its parent-death signal by now
    assert one.redis.is_running()  # a client is still stopping: its last writes must land
    client.set("last", "written while stopping")
    client.close()
    started = time.monotonic()
    assert one.gone_within(5)  # gone soon after its last client, not at the grace
    assert time.monotonic() - started < 3
    # Its append-only file has the last write: a new Redis on the folder reads it back.
    again = subprocess.Popen(one.redis_command(), stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: one.client().ping(), what="redis on the same folder")
        assert one.client().get("last") == b"written while stopping"
    finally:
        again.terminate()
        again.wait(10)


def test_a_client_that_never_leaves_holds_redis_for_the_grace_only(kept):
    one = kept(grace=1.5)
    client = one.client()
    client.ping()
    started = time.monotonic()
    one.kill_supervisord()
    assert one.gone_within(8)
    assert 1.0 < time.monotonic() - started < 6
    client.close()


def test_a_stop_by_a_living_supervisord_ends_redis_at_once(kept):
    one = kept(grace=30)
    client = one.client()
    client.ping()  # supervisord stops Redis last: a client still connected is no reason to wait
    started = time.monotonic()
    one.keeper.send_signal(signal.SIGTERM)
    assert one.gone_within(5)
    assert time.monotonic() - started < 3
    assert one.parent.poll() is None  # the keeper ended, its supervisord is untouched
    client.close()


def test_redis_dying_ends_the_keeper_with_its_code_so_supervisord_restarts_it(kept):
    one = kept()
    one.redis.kill()
    assert one.gone_within(5)
