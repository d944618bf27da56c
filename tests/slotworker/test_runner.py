"""The slot runner against a real Redis, with an engine that echoes its own logout as the network may:
a kill or an eviction ends the enrollment with one event, and the phone's unlink with one logged_out."""

import threading
import time

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from controlplane.config import Settings
from controlplane.events import EventPublisher
from controlplane.sealed import Sealer
from controlplane.store import SlotStore
from slotworker.runner import SlotRunner
from tests.gateway import QUEUE_KEY

LINE = "34666123456"
ALLOWED = ("active", "sleeping", "pairing")


class EchoingEngine:
    """Reports the network's "logged out" for our own logout, on another thread, before logout returns."""

    def __init__(self, slot_id, slot_dir, settings, events):
        self.events = events
        self.calls: list[str] = []

    def has_credentials(self) -> bool:
        return True

    def connect(self) -> None:
        self.calls.append("connect")

    def logout(self) -> None:
        self.calls.append("logout")
        echo = threading.Thread(target=self.events.on_logged_out, args=("logged_out",))
        echo.start()
        echo.join(timeout=5)
        assert not echo.is_alive(), "the echo's handler blocked on the teardown"

    def stop(self) -> None:
        self.calls.append("stop")


@pytest.fixture
def store(redis_client):
    return SlotStore(redis_client)


@pytest.fixture
def publisher(redis_client):
    kwargs = redis_client.connection_pool.connection_kwargs
    connection = redis.Redis(unix_socket_path=kwargs["path"], db=kwargs["db"])
    yield EventPublisher(Settings.from_env({"WHIN_QUEUE_KEY": QUEUE_KEY}), connection)
    connection.close()


@pytest.fixture
def make_runner(store, publisher, tmp_path):
    settings = Settings.from_env({"WHIN_DATA_DIR": str(tmp_path), "WHIN_QUEUE_KEY": QUEUE_KEY})
    return lambda slot_id: SlotRunner(slot_id, settings, store, EchoingEngine, publisher)


def statuses(publisher) -> list[tuple[str, str, int]]:
    sealer = Sealer(QUEUE_KEY)
    out = []
    for job_id in publisher.queue.get_job_ids():
        envelope = sealer.unseal(Job.fetch(job_id, connection=publisher.connection, serializer=JSONSerializer).args[1])
        out.append((envelope["slot"], envelope["status"], envelope["seq"]))
    return out


def paired(store, make_runner):
    (slot_id,) = store.create_slots(1)
    store.begin_pairing(slot_id, time.time() + 60)
    runner = make_runner(slot_id)
    runner.on_paired(LINE)
    return slot_id, runner


def test_a_kill_whose_logout_echoes_sends_killed_only(store, publisher, make_runner):
    slot_id, runner = paired(store, make_runner)
    store.release(slot_id, "killed", ALLOWED, outbox=publisher.outbox())  # what the API's kill does
    runner._handle(store.pop_command(slot_id, timeout=1))  # the worker takes the logout command
    assert runner.engine.calls == ["logout", "stop"]
    assert statuses(publisher) == [(slot_id, "enrolled", 1), (slot_id, "killed", 2)]
    assert not store.get(slot_id).teardown


def test_a_late_logged_out_for_a_killed_enrollment_is_dropped_by_the_store(store, publisher, make_runner):
    """Not the teardown flag of this process: a restarted worker that hears it late is refused by Redis."""
    slot_id, runner = paired(store, make_runner)
    store.release(slot_id, "killed", ALLOWED, outbox=publisher.outbox())
    restarted = make_runner(slot_id)
    restarted.line, restarted.enrollment = LINE, runner.enrollment
    restarted.on_logged_out("logged_out")
    assert statuses(publisher) == [(slot_id, "enrolled", 1), (slot_id, "killed", 2)]
    assert restarted.engine.calls == ["stop"]  # wiped all the same, without a logout


def test_an_eviction_sends_evicted_once_and_the_old_workers_echo_nothing(store, publisher, make_runner):
    old, old_runner = paired(store, make_runner)
    new, _ = paired(store, make_runner)
    old_runner._handle(store.pop_command(old, timeout=1))
    assert statuses(publisher) == [(old, "enrolled", 1), (old, "evicted", 2), (new, "enrolled", 3)]


def test_the_phones_unlink_sends_logged_out_once(store, publisher, make_runner):
    slot_id, runner = paired(store, make_runner)
    runner.on_logged_out("logged_out")
    runner.on_logged_out("logged_out")  # said again, as a reconnect would
    assert statuses(publisher) == [(slot_id, "enrolled", 1), (slot_id, "logged_out", 2)]
    slot = store.get(slot_id)
    assert (slot.status.value, slot.line, slot.teardown) == ("available", None, False)
