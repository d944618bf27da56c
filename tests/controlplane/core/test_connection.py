"""controlplane.core.connection against a real Redis under a real Sentinel: a redis+sentinel:// client
finds the master, its binary twin (the store's frames) too, and both find the new one after a failover."""

import time

import pytest
import redis

from controlplane.core.connection import connect
from controlplane.core.store import SlotStore
from tests.sentinel import SentinelRedis


@pytest.fixture
def sentinel(tmp_path):
    made = SentinelRedis(tmp_path).start()
    yield made
    made.stop()


def eventually(call, timeout: float = 20):
    """``call()`` once the client reaches the new master (errors while the failover settles are "not yet")."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_sentinel_url_reaches_the_master_and_the_new_one_after_a_failover(sentinel):
    client = connect(sentinel.url)
    store = SlotStore(client)
    client.set("before", "1")
    assert store._binary_redis().get("before") == b"1"
    assert client.info("server")["tcp_port"] == sentinel.master_port
    sentinel.fail_over()
    eventually(lambda: client.set("after", "2"))
    assert client.info("server")["tcp_port"] == sentinel.replica_port
    assert client.get("before") == "1"  # replicated before the master died
    assert eventually(lambda: store._binary_redis().get("after")) == b"2"
