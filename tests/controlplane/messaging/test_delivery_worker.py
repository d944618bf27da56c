"""controlplane.messaging.delivery_worker and delivery's drain, in this process, against a real Redis and a
real receiver: fewer round trips than a stock rq worker, and rq's own view of each job still right."""

import threading
import time

import pytest
import redis
from rq import SimpleWorker, Worker
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from controlplane.core.config import Settings
from controlplane.core.keys import backlog_key, drain_key
from controlplane.messaging import backlog, delivery
from controlplane.messaging.delivery_worker import RQ_CHECKED, DeliveryWorker, worker_number
from controlplane.messaging.events import EventPublisher
from tests.gateway import QUEUE_KEY, WEBHOOK_SECRET, wait_for
from tests.receiver import Receiver

LINE = "34666123456"


class CountingConnection(redis.UnixDomainSocketConnection):
    """Counts what goes to Redis: one send per round trip (a pipeline is one)."""
    sends = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)


@pytest.fixture
def receiver():
    r = Receiver(WEBHOOK_SECRET).start()
    yield r
    r.hold.clear()
    r.stop()


@pytest.fixture
def connection(redis_client, receiver, monkeypatch):
    """A bytes connection (as rq wants) that counts its round trips, and the delivery jobs' settings."""
    kwargs = redis_client.connection_pool.connection_kwargs
    pool = redis.ConnectionPool(connection_class=CountingConnection, path=kwargs["path"], db=kwargs["db"])
    env = {"WHIN_QUEUE_KEY": QUEUE_KEY, "WHIN_WEBHOOK_URL": receiver.url, "WHIN_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "WHIN_REDIS_URL": f"unix://{kwargs['path']}?db={kwargs['db']}", "WHIN_DELIVERY_WORKERS": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for cached in (delivery._settings, delivery._sealer, delivery._webhook_secret):
        cached.cache_clear()
    client = redis.Redis(connection_pool=pool)
    yield client
    client.close()
    for cached in (delivery._settings, delivery._sealer, delivery._webhook_secret):
        cached.cache_clear()


def publish(connection, count: int, each_its_own_job: bool = True) -> None:
    publisher = EventPublisher(Settings.from_env(), connection)
    for i in range(count):
        if each_its_own_job:  # as on a quiet line: the previous drain has started, the next event queues one
            connection.delete(drain_key(backlog.token(LINE, "")))
        message_id = f"M{time.monotonic_ns()}-{i}"
        publisher.message("SLOT0001", LINE, {"Message": {"conversation": f"text {i}"}}, message_id, None)


def worker(cls, connection, name: str):
    return cls([backlog.delivery_queue(connection, 1)], connection=connection, serializer=JSONSerializer,
               name=name, default_result_ttl=1, log_job_description=False, worker_ttl=30)


def round_trips_per_job(cls, connection, jobs: int = 20) -> float:
    """Each job one line's one event: as on quiet lines, where a job per event is the most rq costs."""
    publisher = EventPublisher(Settings.from_env(), connection)
    for i in range(jobs):
        # Ids of this run's own: the same message id again would be WhatsApp's redelivery, delivered once.
        publisher.message("SLOT0001", f"3466600{i:04d}", {"Message": {"conversation": "hola"}},
                          f"M{cls.__name__}-{i}", None)
    busy = burst_round_trips(cls, connection)
    return (busy - burst_round_trips(cls, connection, empty=True)) / jobs


def burst_round_trips(cls, connection, empty: bool = False) -> int:
    """What one burst run of a worker sends (``empty``: once the queue is empty: its start and end alone)."""
    w = worker(cls, connection, f"{cls.__name__}-{time.monotonic_ns()}")
    before = CountingConnection.sends
    w.work(burst=True, logging_level="WARNING")
    return CountingConnection.sends - before


def test_the_lean_worker_spends_far_fewer_round_trips_per_job_than_a_stock_one(connection, receiver):
    stock = round_trips_per_job(SimpleWorker, connection)
    lean = round_trips_per_job(DeliveryWorker, connection)
    # Measured here: 6 lean (4 of rq's: the pop, the fetch, the start with the drain's first read, the end;
    # 2 of the drain: the event's end, the look for more), and 23 for a stock worker.
    print(f"round trips per job: stock {stock:.1f}, lean {lean:.1f}")
    assert lean <= 6.5, lean
    assert lean <= stock * 0.6, (lean, stock)
    assert len(receiver.delivered(type="message")) == 40


def test_rq_sees_each_job_queued_started_then_finished_and_the_worker_busy_then_idle(connection, receiver):
    publish(connection, 1)
    (job_id,) = backlog.delivery_queue(connection, 1).get_job_ids()
    job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.QUEUED
    receiver.hold.set()
    seen_during: dict = {}

    def look_while_in_the_post():  # rq's worker installs signal handlers: it runs on the main thread
        try:
            if receiver.held.acquire(timeout=10):
                seen_during["status"] = job.get_status(refresh=True)
                seen_during["started"] = StartedJobRegistry(queue=backlog.delivery_queue(connection, 1)
                                                            ).get_job_ids(cleanup=False)
                (w,) = [x for x in Worker.all(connection=connection) if x.name == "lean-1"]
                seen_during["worker"] = (w.get_state(), w.get_current_job_id())
        finally:
            receiver.hold.clear()

    looker = threading.Thread(target=look_while_in_the_post, daemon=True)
    looker.start()
    worker(DeliveryWorker, connection, "lean-1").work(burst=True, logging_level="WARNING")
    looker.join(10)
    assert seen_during == {"status": JobStatus.STARTED, "started": [job_id], "worker": ("busy", job_id)}
    # Finished, its result kept for 1 s (result_ttl=0 re-delivers: RELIABILITY-NOTES); on a loaded machine
    # the second may be over already, and the job gone with it.
    if Job.exists(job_id, connection=connection):
        assert connection.hget(Job.key_for(job_id), "status") in (b"finished", None)
    assert not StartedJobRegistry(queue=backlog.delivery_queue(connection, 1)).get_job_ids(cleanup=False)
    wait_for(lambda: not Job.exists(job_id, connection=connection), timeout=5, what="the job to expire")


def test_a_drain_delivers_a_whole_backlog_in_seq_order_in_one_job(connection, receiver):
    publish(connection, 30, each_its_own_job=False)
    assert len(backlog.delivery_queue(connection, 1).get_job_ids()) == 1
    worker(DeliveryWorker, connection, "lean-2").work(burst=True, logging_level="WARNING")
    seqs = [e["seq"] for e in receiver.delivered(type="message", line=LINE)]
    assert seqs == list(range(1, 31))
    assert not connection.exists(backlog_key(backlog.token(LINE, "")))


def test_an_event_whose_attempt_fails_leaves_for_a_retry_job_and_the_rest_go_on(connection, receiver):
    publish(connection, 5, each_its_own_job=False)
    receiver.fail_with, receiver.fail_count = 503, 1  # the first event's first attempt
    worker(DeliveryWorker, connection, "lean-3").work(burst=True, logging_level="WARNING")
    assert [e["seq"] for e in receiver.delivered(type="message", line=LINE)] == [2, 3, 4, 5]
    assert not connection.exists(backlog_key(backlog.token(LINE, "")))
    (retry_id,) = ScheduledJobRegistry(queue=backlog.delivery_queue(connection, 1)).get_job_ids(cleanup=False)
    retry = Job.fetch(retry_id, connection=connection, serializer=JSONSerializer)
    assert retry.func_name == backlog.DELIVER and retry.id == receiver.attempts[0].webhook_id
    assert retry.retries_left == len(retry.retry_intervals)  # the first attempt was the drain's
    assert int(connection.hget("whin:stats", "retried")) == 1


def test_a_drain_hands_over_to_a_new_job_after_its_time_so_other_lines_get_their_turn(connection, receiver,
                                                                                     monkeypatch):
    monkeypatch.setattr(backlog, "DRAIN_SECONDS", 0.0)  # every drain hands over after one event
    publish(connection, 3, each_its_own_job=False)
    queue = backlog.delivery_queue(connection, 1)
    first = worker(DeliveryWorker, connection, "lean-4")
    first.work(burst=True, max_jobs=1, logging_level="WARNING")
    assert [e["seq"] for e in receiver.delivered(type="message", line=LINE)] == [1]
    (follow_up,) = queue.get_job_ids()  # at the end of the queue, behind any other line's drain
    assert connection.get(drain_key(backlog.token(LINE, ""))) == follow_up.encode()
    worker(DeliveryWorker, connection, "lean-5").work(burst=True, logging_level="WARNING")
    assert [e["seq"] for e in receiver.delivered(type="message", line=LINE)] == [1, 2, 3]


def test_the_worker_serves_the_queue_its_number_names():
    assert worker_number(["delivery_worker", "3"]) == 3
    assert worker_number(["delivery_worker"]) == worker_number(["delivery_worker", "x"]) == 1
    assert backlog.queue_name(worker_number(["delivery_worker", "2"])) == "deliveries-2"


def test_the_overrides_were_checked_against_the_rq_that_is_installed():
    """Each override leans on the rq method it replaces: a new rq means reading them again."""
    import rq

    assert rq.__version__ == RQ_CHECKED


def test_a_stop_that_lands_as_a_job_ends_leaves_it_finished_and_stops_the_worker(connection, receiver, monkeypatch):
    """supervisord's SIGTERM during the job's end MULTI: rq raises StopRequested once it sees IDLE; inside
    perform_job that turned the delivered job into a failed one, rescheduled and POSTed again."""
    import os
    import signal

    monkeypatch.setattr(backlog, "RESULT_TTL", 60)  # its status still there to read, however slow the stop
    publish(connection, 1)
    (job_id,) = backlog.delivery_queue(connection, 1).get_job_ids()

    class StoppedAtTheEnd(DeliveryWorker):
        def handle_job_success(self, job, queue, started_job_registry, execution):
            super().handle_job_success(job, queue, started_job_registry, execution)
            if job.id == job_id:
                publish(connection, 1)  # work that must wait for the next start
                os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    try:
        worker(StoppedAtTheEnd, connection, "lean-stop").work(burst=True, logging_level="CRITICAL")
    finally:
        signal.signal(signal.SIGTERM, previous)
        delivery.stopping.clear()
    assert Job.fetch(job_id, connection=connection, serializer=JSONSerializer).get_status() == JobStatus.FINISHED
    assert not ScheduledJobRegistry(queue=backlog.delivery_queue(connection, 1)).get_job_ids(cleanup=False)
    assert len(receiver.delivered(type="message", line=LINE)) == 1  # the next job waits for the next start
    assert len(backlog.delivery_queue(connection, 1).get_job_ids()) == 1


def test_an_event_this_gateway_cannot_open_is_given_up_and_its_line_goes_on(connection, receiver):
    """Sealed with another WHIN_QUEUE_KEY (a rotation gone wrong): it never will open; before, it held
    the line's later events for ever."""
    from controlplane.core.keys import backlog_key as key_of

    publish(connection, 3, each_its_own_job=False)
    name = backlog.token(LINE, "")
    connection.lpush(key_of(name), backlog.entry("evt_unopenable", "gAAAAA-not-ours"))
    worker(DeliveryWorker, connection, "lean-6").work(burst=True, logging_level="CRITICAL")
    assert [e["seq"] for e in receiver.delivered(type="message", line=LINE)] == [1, 2, 3]
    assert not connection.exists(key_of(name))
    assert int(connection.hget("whin:stats", "given_up")) == 1


def test_a_receiver_asking_to_wait_keeps_the_backlog_whole_and_in_order(connection, receiver):
    """A 429 with Retry-After: the event it answered goes to its retry; the rest wait, in order, for a
    drain at the end of the wait, instead of each failing into a retry of its own."""
    publish(connection, 6, each_its_own_job=False)
    receiver.fail_with, receiver.fail_count, receiver.retry_after = 429, 1, "2"
    queue = backlog.delivery_queue(connection, 1)
    worker(DeliveryWorker, connection, "lean-7").work(burst=True, logging_level="CRITICAL")
    assert len(receiver.attempts) == 1  # nothing POSTed while the receiver asked to wait
    scheduled = [Job.fetch(i, connection=connection, serializer=JSONSerializer)
                 for i in ScheduledJobRegistry(queue=queue).get_job_ids(cleanup=False)]
    assert sorted(job.func_name for job in scheduled) == sorted([backlog.DELIVER, backlog.DRAIN])
    assert connection.llen(backlog_key(backlog.token(LINE, ""))) == 5
    assert int(connection.hget("whin:stats", "retried")) == 1
    time.sleep(3.2)  # past the wait (rq's scheduled registry keeps whole seconds)
    for job in scheduled:  # as rq's scheduler would, once due
        queue.enqueue_job(job)
    worker(DeliveryWorker, connection, "lean-8").work(burst=True, logging_level="CRITICAL")
    seqs = [e["seq"] for e in receiver.delivered(type="message", line=LINE)]
    assert sorted(seqs) == [1, 2, 3, 4, 5, 6]
    assert [s for s in seqs if s != 1] == [2, 3, 4, 5, 6]


def test_an_event_handed_over_again_after_its_delivery_is_not_posted_twice(connection, receiver):
    """A slot stopped between handing a message over and acknowledging it to WhatsApp (a sleep that
    lands just then) gets it again on its next connection, same id: delivered once all the same."""
    publisher = EventPublisher(Settings.from_env(), connection)
    publisher.message("SLOT0001", LINE, {"Message": {"conversation": "hola"}}, "M-again", None)
    worker(DeliveryWorker, connection, "lean-again").work(burst=True, logging_level="WARNING")
    assert len(receiver.delivered(type="message", line=LINE)) == 1
    publisher.message("SLOT0001", LINE, {"Message": {"conversation": "hola"}}, "M-again", None)  # the redelivery
    assert not connection.exists(backlog_key(backlog.token(LINE, "")))
    worker(DeliveryWorker, connection, "lean-again-2").work(burst=True, logging_level="WARNING")
    assert len(receiver.delivered(type="message", line=LINE)) == 1
    assert 0 < connection.ttl(f"whin:queued:{receiver.attempts[0].webhook_id}") <= delivery.DELIVERED_MARK_SECONDS
