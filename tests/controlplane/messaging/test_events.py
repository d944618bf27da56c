"""controlplane.messaging.events against a real Redis: an event's seq is taken in the step that appends it to its
line's backlog, and a backlog nobody drains yet gets its rq job in that step too."""

import threading

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from controlplane.core.config import Settings
from controlplane.core.keys import backlog_key, drain_key, seq_key
from controlplane.core.sealed import Sealer
from controlplane.messaging import backlog
from controlplane.messaging.events import EventPublisher, delivery_queue
from tests.gateway import QUEUE_KEY

LINE = "34666123456"


@pytest.fixture
def connection(redis_client):
    kwargs = redis_client.connection_pool.connection_kwargs
    client = redis.Redis(unix_socket_path=kwargs["path"], db=kwargs["db"])  # bytes, as rq wants
    yield client
    client.close()


@pytest.fixture
def publisher(connection):
    return EventPublisher(Settings.from_env({"WHIN_QUEUE_KEY": QUEUE_KEY}), connection)


def queued_envelopes(connection, lines=(LINE, "34666000000")) -> list[dict]:
    """What the lines' backlogs hold, line by line, oldest first."""
    sealer = Sealer(QUEUE_KEY)
    return [sealer.unseal(backlog.parse(item)[1]) for line in lines
            for item in connection.lrange(backlog_key(backlog.token(line, "")), 0, -1)]


def queued_jobs(connection, workers: int = 2) -> list[Job]:
    ids = [i for n in range(1, workers + 1) for i in delivery_queue(connection, n).get_job_ids()]
    return [Job.fetch(i, connection=connection, serializer=JSONSerializer) for i in ids]


def test_events_are_numbered_per_line_in_their_backlog_and_one_drain_job_delivers_each(publisher, connection):
    publisher.slot_status("SLOT0001", LINE, "enrolled")
    publisher.message("SLOT0001", LINE, {"Info": {"ID": "M1"}}, "M1", "34611122233")
    publisher.slot_status("SLOT0001", "34666000000", "enrolled")
    envelopes = queued_envelopes(connection)
    assert [(e["line"], e["seq"], e["type"]) for e in envelopes] == [
        (LINE, 1, "slot.status"), (LINE, 2, "message"), ("34666000000", 1, "slot.status")]
    assert list(envelopes[1]) == ["type", "line", "slot", "seq", "message_id", "from", "received_at", "payload"]
    # rq's own bookkeeping, as rq-dashboard reads it: the queues are registered, each drain is queued.
    jobs = queued_jobs(connection)
    assert sorted(job.args[0] for job in jobs) == sorted({backlog.token(LINE, ""), backlog.token("34666000000", "")})
    for job in jobs:
        assert job.get_status() == "queued"
        assert job.origin == backlog.queue_name(backlog.queue_number(job.args[0], 2))
        assert f"rq:queue:{job.origin}".encode() in connection.smembers("rq:queues")
        assert job.func_name == "controlplane.messaging.delivery.drain"
        assert job.retries_left and job.description == "deliver a line's events"
        assert connection.get(drain_key(job.args[0])) == job.id.encode()
        assert LINE not in job.description + str(job.args)  # no phone number where rq-dashboard shows it


def test_a_line_always_goes_to_the_same_queue_and_lines_spread_over_the_queues():
    numbers = [backlog.queue_number(backlog.token(f"3466600{i:04d}", ""), 4) for i in range(400)]
    assert set(numbers) == {1, 2, 3, 4} and min(numbers.count(n) for n in range(1, 5)) > 60
    assert backlog.queue_number(backlog.token(LINE, ""), 4) == backlog.queue_number(backlog.token(LINE, "other"), 4)
    assert (backlog.queue_name(1), backlog.queue_name(3)) == ("deliveries", "deliveries-3")


def test_a_message_handed_over_again_while_queued_is_queued_once_and_uses_no_number(publisher, connection):
    for _ in range(3):
        publisher.message("SLOT0001", LINE, {"Info": {"ID": "M1"}}, "M1", None)
    assert [e["seq"] for e in queued_envelopes(connection)] == [1]
    assert connection.get(seq_key(LINE)) == b"1"


@pytest.mark.parametrize("where", ["_persist_job", "push_job_id"])
def test_a_failure_while_queueing_leaves_neither_the_number_nor_the_event(publisher, connection, monkeypatch, where):
    """The worker that died between INCR and the enqueue (issue 9) left a gap: now both are one EXEC."""
    publisher.slot_status("SLOT0001", LINE, "enrolled")
    connection.delete(drain_key(backlog.token(LINE, "")))  # as once its drain started: the next event queues one

    def dies(*args, **kwargs):
        raise SystemExit("the worker exits here")

    with monkeypatch.context() as patch:
        patch.setattr(type(publisher.queues[1]), where, dies)
        with pytest.raises(SystemExit):
            publisher.message("SLOT0001", LINE, {"Info": {"ID": "M2"}}, "M2", None)
    assert connection.get(seq_key(LINE)) == b"1"
    assert len(queued_envelopes(connection)) == 1
    publisher.message("SLOT0001", LINE, {"Info": {"ID": "M2"}}, "M2", None)  # handed over again: no gap
    assert [e["seq"] for e in queued_envelopes(connection)] == [1, 2]


def test_a_failure_at_exec_leaves_neither(publisher, connection, monkeypatch):
    def connection_lost(self, *args, **kwargs):
        raise redis.ConnectionError("Redis went away before EXEC")

    with monkeypatch.context() as patch:
        patch.setattr(redis.client.Pipeline, "execute", connection_lost)
        with pytest.raises(redis.ConnectionError):
            publisher.slot_status("SLOT0001", LINE, "enrolled")
    assert connection.get(seq_key(LINE)) is None
    assert queued_envelopes(connection) == []


def test_publishers_racing_on_one_line_use_every_number_once(publisher, connection):
    """The API and a slot worker (here: 4 threads, each with its own publisher) numbering one line."""
    publishers = [publisher] + [EventPublisher(Settings.from_env({"WHIN_QUEUE_KEY": QUEUE_KEY}),
                                               redis.Redis(connection_pool=connection.connection_pool))
                                for _ in range(3)]
    barrier = threading.Barrier(len(publishers))

    def publish(p, n):
        barrier.wait()
        for i in range(25):
            p.message("SLOT0001", LINE, {"Info": {"ID": f"{n}-{i}"}}, f"{n}-{i}", None)

    threads = [threading.Thread(target=publish, args=(p, n)) for n, p in enumerate(publishers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = sorted(e["seq"] for e in queued_envelopes(connection))
    assert seqs == list(range(1, 101))
    assert connection.get(seq_key(LINE)) == b"100"


def test_a_job_queued_by_an_earlier_version_still_finds_its_function():
    """Deliveries wait in Redis for days, named by their function's old dotted path."""
    from rq.utils import import_attribute

    from controlplane.messaging.delivery import deliver

    assert import_attribute("controlplane.delivery.deliver") is deliver


def test_types_whin_events_leaves_out_never_become_jobs_nor_use_a_number(connection):
    only_messages = EventPublisher(Settings.from_env({"WHIN_QUEUE_KEY": QUEUE_KEY, "WHIN_EVENTS": "message"}),
                                   connection=connection)
    only_messages.slot_status("SLOT0001", LINE, "enrolled")
    only_messages.message("SLOT0001", LINE, {"Info": {"ID": "M1"}}, "M1", None)
    assert [(e["type"], e["seq"]) for e in queued_envelopes(connection)] == [("message", 1)]
    assert connection.get(seq_key(LINE)) == b"1"
