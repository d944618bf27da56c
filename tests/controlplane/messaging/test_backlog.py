"""controlplane.messaging.backlog's sweep against a real Redis: a backlog nobody drains gets a drain, and the
jobs of a queue no worker serves any more move to one that does."""

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from controlplane.core.config import Settings
from controlplane.core.keys import drain_key
from controlplane.messaging import backlog
from controlplane.messaging.events import EventPublisher
from tests.gateway import QUEUE_KEY

LINE = "34666123456"


@pytest.fixture
def connection(redis_client):
    kwargs = redis_client.connection_pool.connection_kwargs
    client = redis.Redis(unix_socket_path=kwargs["path"], db=kwargs["db"])
    yield client
    client.close()


def publisher(connection, workers: int) -> EventPublisher:
    settings = Settings.from_env({"WHIN_QUEUE_KEY": QUEUE_KEY, "WHIN_DELIVERY_WORKERS": str(workers)})
    return EventPublisher(settings, connection)


def all_queued(connection, workers: int) -> list[Job]:
    return [Job.fetch(i, connection=connection, serializer=JSONSerializer) for n in range(1, workers + 1)
            for i in backlog.delivery_queue(connection, n).get_job_ids()]


def test_a_backlog_whose_drain_job_vanished_gets_a_new_one_once_it_has_not_moved(connection, monkeypatch):
    monkeypatch.setattr(backlog, "SWEEP_SECONDS", 0.0)
    publisher(connection, 2).message("SLOT0001", LINE, {"Message": {"conversation": "hola"}}, "M1", None)
    (job,) = all_queued(connection, 2)
    job.delete()  # as an operator's delete in rq-dashboard, or a drain that failed for good
    sweep = backlog.Sweep(connection, workers=2, drain_timeout=30)
    sweep()  # first look: the backlog's head is remembered
    assert all_queued(connection, 2) == []
    sweep()  # it has not moved, and no queued drain will deliver it
    (again,) = all_queued(connection, 2)
    assert again.func_name == backlog.DRAIN and again.args == [backlog.token(LINE, "")]
    assert connection.get(drain_key(backlog.token(LINE, ""))) == again.id.encode()
    sweep()  # a drain is queued now: nothing more
    assert len(all_queued(connection, 2)) == 1


def test_a_backlog_being_delivered_gets_no_second_drain(connection, monkeypatch):
    monkeypatch.setattr(backlog, "SWEEP_SECONDS", 0.0)
    events = publisher(connection, 1)
    events.message("SLOT0001", LINE, {"Message": {"conversation": "uno"}}, "M1", None)
    sweep = backlog.Sweep(connection, workers=1, drain_timeout=30)
    sweep()
    sweep()  # unmoved, but its drain is queued
    assert len(all_queued(connection, 1)) == 1


def test_a_job_its_worker_took_but_never_started_goes_back_to_the_front_of_its_queue(connection, monkeypatch):
    monkeypatch.setattr(backlog, "STRANDED_SECONDS", 0.5)
    events = publisher(connection, 1)
    events.message("SLOT0001", LINE, {"Message": {"conversation": "uno"}}, "M1", None)
    events.message("SLOT0002", "34666000002", {"Message": {"conversation": "dos"}}, "M2", None)
    queue = backlog.delivery_queue(connection, 1)
    stranded, waiting = queue.get_job_ids()
    # A worker's BLMOVE whose answer was lost: the job sits in rq's intermediate list, never started.
    assert connection.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT") == stranded.encode()
    busy = connection.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT")  # being started now
    sweep = backlog.Sweep(connection, workers=1, drain_timeout=30)
    sweep()  # first sight: maybe a worker is just about to start it
    assert queue.get_job_ids() == []
    connection.lrem(queue.intermediate_queue_key, 1, busy)  # ...and it did, as rq's start takes it off
    sweep()
    assert queue.get_job_ids() == []  # not for long enough yet
    time.sleep(0.6)
    sweep()
    assert queue.get_job_ids() == [stranded]  # back at the front, once; the started one is not doubled
    assert connection.lrange(queue.intermediate_queue_key, 0, -1) == [] and waiting == busy.decode()
    sweep()
    assert queue.get_job_ids() == [stranded]


def test_a_stranded_id_whose_job_is_gone_is_dropped_not_queued_again(connection, monkeypatch):
    monkeypatch.setattr(backlog, "STRANDED_SECONDS", 0.0)
    queue = backlog.delivery_queue(connection, 1)
    connection.rpush(queue.intermediate_queue_key, "drain_gone")  # its hash deleted or expired
    sweep = backlog.Sweep(connection, workers=1, drain_timeout=30)
    sweep()
    sweep()
    assert queue.get_job_ids() == [] and connection.llen(queue.intermediate_queue_key) == 0


def test_jobs_of_a_queue_no_worker_serves_move_to_one_that_does(connection, monkeypatch):
    monkeypatch.setattr(backlog, "SWEEP_SECONDS", 0.0)
    lines = [f"3466600{i:04d}" for i in range(12)]
    four = publisher(connection, 4)
    for line in lines:
        four.message("SLOT0001", line, {"Message": {"conversation": "hola"}}, f"M{line}", None)
    third = backlog.delivery_queue(connection, 3)
    retry = third.create_job(backlog.DELIVER, args=("evt_x", "sealed"), job_id="evt_x")
    when = datetime.now(tz=UTC) + timedelta(hours=1)
    third.schedule_job(retry, when)
    assert len(all_queued(connection, 4)) == 12
    backlog.Sweep(connection, workers=2, drain_timeout=30)()  # WHIN_DELIVERY_WORKERS lowered to 2
    assert [backlog.delivery_queue(connection, n).count for n in (3, 4)] == [0, 0]
    moved = all_queued(connection, 2)
    assert len(moved) == 12
    for job in moved:  # each drain on the queue that now serves its line
        assert job.origin == backlog.queue_name(backlog.queue_number(job.args[0], 2))
    assert ScheduledJobRegistry(queue=third).get_job_ids(cleanup=False) == []
    scheduled = ScheduledJobRegistry(queue=backlog.delivery_queue(connection, 1))
    assert scheduled.get_job_ids(cleanup=False) == ["evt_x"]
    assert abs(scheduled.get_expiration_time(retry).timestamp() - when.timestamp()) < 1.5
    assert Job.fetch("evt_x", connection=connection, serializer=JSONSerializer).origin == "deliveries"
