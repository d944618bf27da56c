"""A line's backlog: its events waiting for delivery, in seq order, and the rq job that delivers them.

Every event is appended to its line's backlog (a Redis list) in the very step that numbers it
(events.Outbox). One rq job, a *drain*, delivers what a backlog holds, event by event, each its own
signed POST with its own webhook-id (delivery.drain). While a line's events come faster than they
are delivered, one job carries many of them, and rq's per-job bookkeeping is shared among them; a
quiet line gets one job per event, as before.

Order: all of a line's drains go to one of the WHIN_DELIVERY_WORKERS queues (the line's hash picks
it), and each queue has one worker. So a line's events are POSTed one after the other, in seq order,
while lines on other queues go out in parallel. An event whose attempt fails leaves the backlog for a
retry job of its own (rq's Retry, on the usual schedule): the line's later events do not wait for it.

Backlogs are named by a hash of the line (of the slot, for a slot's events without a line), so that
no phone number appears in a key name, a job's arguments or rq-dashboard.

The sweep (run by the reconciler) keeps that machinery whole: it recovers the jobs of a worker that
died mid-POST, puts back on its queue a job a worker took but never started (stranded), queues a
drain for a backlog nobody drains (its drain job was deleted, or failed for good), and moves the jobs
of a queue no worker serves any more (WHIN_DELIVERY_WORKERS was lowered).
"""

import hashlib
import logging
import time
import uuid
import zlib
from datetime import UTC, datetime

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from controlplane.core.keys import BACKLOG_PATTERN, backlog_key, drain_key, token_of_backlog

log = logging.getLogger("controlplane.messaging.backlog")

QUEUE_NAME = "deliveries"
DRAIN = "controlplane.messaging.delivery.drain"
DELIVER = "controlplane.messaging.delivery.deliver"  # one event's retries
# A drain hands over to a new job of its own after this long, so that the other lines of its queue
# get their turn, and a worker's stop waits for at most one POST more.
DRAIN_SECONDS = 2.0
DRAIN_CHUNK = 100  # entries read at a time
# A drain that raised (Redis away mid-drain) runs again a second later, this many times; then the
# sweep queues a new one. Its Retry is also what lets rq recover it after its worker was killed.
DRAIN_RETRIES = 30
SWEEP_SECONDS = 15.0
# A finished or failed job's hash stays this long (seconds): not 0, since rq re-runs a recovered job
# whose result vanished (RELIABILITY-NOTES); no longer, since a job holds its (sealed) arguments and a
# give-up is counted, not kept.
RESULT_TTL = 1
# A job taken off its queue but not started for this long is stranded (Sweep._put_back_stranded). A
# worker starts what it takes within milliseconds; a worker frozen longer than this may run it twice,
# which delivery tolerates (a drain finds what is left; a repeat keeps its webhook-id).
STRANDED_SECONDS = 10.0


def token(line: str | None, slot_id: str) -> str:
    """The backlog's name for a line (a slot's, for its events without a line)."""
    key = line if line else f"slot:{slot_id}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def queue_name(number: int) -> str:
    """Delivery worker ``number``'s queue (1 … WHIN_DELIVERY_WORKERS). The first keeps the name of the
    one queue of earlier versions, so that what they left queued is delivered."""
    return QUEUE_NAME if number == 1 else f"{QUEUE_NAME}-{number}"


def queue_number(backlog: str, workers: int) -> int:
    return zlib.crc32(backlog.encode()) % max(1, workers) + 1


def delivery_queue(connection: redis.Redis, number: int = 1) -> Queue:
    return Queue(queue_name(number), connection=connection, serializer=JSONSerializer)


def queue_for(connection: redis.Redis, backlog: str, workers: int) -> Queue:
    """The queue that serves ``backlog`` with ``workers`` delivery workers."""
    return delivery_queue(connection, queue_number(backlog, workers))


def delivery_queues(connection: redis.Redis) -> list[Queue]:
    """Every delivery queue rq knows of, served or not, the first one always."""
    names = {QUEUE_NAME}
    for key in connection.smembers(Queue.redis_queues_keys):
        name = key.decode().removeprefix(Queue.redis_queue_namespace_prefix)
        if name.startswith(f"{QUEUE_NAME}-") and name.removeprefix(f"{QUEUE_NAME}-").isdigit():
            names.add(name)
    return [Queue(name, connection=connection, serializer=JSONSerializer) for name in sorted(names)]


def number_of(queue: Queue) -> int:
    return 1 if queue.name == QUEUE_NAME else int(queue.name.removeprefix(f"{QUEUE_NAME}-"))


def entry(event_id: str, sealed: str) -> str:
    """One backlog entry: the webhook-id and the sealed envelope (a sealed token has no space)."""
    return f"{event_id} {sealed}"


def parse(raw: bytes | str) -> tuple[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    event_id, _, sealed = text.partition(" ")
    return event_id, sealed


def drain_job(queue: Queue, backlog: str, timeout: int) -> Job:
    return _job(queue, DRAIN, (backlog,), f"drain_{uuid.uuid4().hex}", "deliver a line's events",
                Retry(max=DRAIN_RETRIES, interval=1), timeout)


def retry_job(queue: Queue, event_id: str, sealed: str, retry: Retry | None, timeout: int) -> Job:
    """One event's further attempts, after its first (a drain's) failed; its id is the webhook-id."""
    return _job(queue, DELIVER, (event_id, sealed), event_id, f"deliver {event_id}", retry, timeout)


def _job(queue: Queue, func: str, args: tuple, job_id: str, description: str, retry: Retry | None,
         timeout: int) -> Job:
    return queue.create_job(
        func, args=args, job_id=job_id, description=description, retry=retry, timeout=timeout,
        result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL,
    )


def queue_drain(pipe, queue: Queue, backlog: str, timeout: int) -> Job:
    """Inside MULTI: a drain for ``backlog``, and the mark that one is queued (drain_key)."""
    job = drain_job(queue, backlog, timeout)
    queue.enqueue_job(job, pipeline=pipe)
    pipe.set(drain_key(backlog), job.id)
    return job


def queue_drain_unless_queued(connection: redis.Redis, queue: Queue, backlog: str, timeout: int,
                              at: float | None = None) -> None:
    """A drain for a backlog that still holds events, unless one is queued already; ``at`` (unix
    time): scheduled for then rather than queued now."""
    with connection.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(drain_key(backlog), backlog_key(backlog))
                if pipe.exists(drain_key(backlog)) or not pipe.exists(backlog_key(backlog)):
                    pipe.reset()
                    return
                queue.get_redis_server_version()  # rq asks while queueing: ask now, outside MULTI
                pipe.multi()
                if at is None:
                    queue_drain(pipe, queue, backlog, timeout)
                else:
                    job = drain_job(queue, backlog, timeout)
                    queue.schedule_job(job, datetime.fromtimestamp(at, tz=UTC), pipeline=pipe)
                    pipe.set(drain_key(backlog), job.id)
                pipe.execute()
                return
            except redis.WatchError:
                continue


# KEYS intermediate list, queue, the job's hash; ARGV job id. rq's dequeue takes from the left (the
# front). A job whose hash is gone (deleted, expired) is only dropped: rq would skip it for ever.
_PUT_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then return 2 end
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
"""


class Sweep:
    """The reconciler's keeper of the delivery machinery (see the module's note), every SWEEP_SECONDS."""

    def __init__(self, connection: redis.Redis, workers: int, drain_timeout: int):
        self.connection = connection
        self.workers = workers
        self.drain_timeout = drain_timeout
        self._heads: dict[str, bytes] = {}  # backlog -> its first entry at the last sweep
        self._stranded: dict[tuple[str, str], float] = {}  # (queue, job id) -> when first seen stranded
        self._last = float("-inf")

    def __call__(self) -> None:
        queues = delivery_queues(self.connection)
        for queue in queues:
            # Deliveries whose worker died mid-POST: retried now rather than at a worker's maintenance.
            StartedJobRegistry(queue=queue).cleanup()
        self._put_back_stranded(queues)
        if time.monotonic() - self._last < SWEEP_SECONDS:
            return
        self._last = time.monotonic()
        for queue in queues:
            if number_of(queue) > self.workers:
                self._fold(queue)
        self._restart_stuck_backlogs()

    def _put_back_stranded(self, queues: list[Queue]) -> None:
        """A job in a queue's intermediate list that its worker has not started for STRANDED_SECONDS goes
        back to the front of its queue. rq's worker moves a job there as it takes it (BLMOVE)
        and starts it in its next step; when the move's answer is lost with its connection (Redis
        failing over), redis-py sends the command again on a new connection and the first job waits
        there for ever, its line's backlog with it (the drain's mark still names it). rq's own clean-up
        of these runs at a worker's maintenance, ten minutes apart, and fails them."""
        now = time.monotonic()
        stranded, waiting = {}, []
        for queue in queues:
            taken = [raw.decode() for raw in self.connection.lrange(queue.intermediate_queue_key, 0, -1)]
            if not taken:
                continue  # as almost always: no need to read the started jobs
            started = set(StartedJobRegistry(queue=queue).get_job_ids(cleanup=False))
            for job_id in taken:
                if job_id not in started:
                    stranded[(queue.name, job_id)] = self._stranded.get((queue.name, job_id), now)
                    waiting.append((queue, job_id))
        for queue, job_id in waiting:
            if now - stranded[(queue.name, job_id)] < STRANDED_SECONDS:
                continue  # a worker takes a job and starts it a moment later
            # One step, and only if it is still there: a worker that starts it now takes it off first.
            done = self.connection.eval(_PUT_BACK, 3, queue.intermediate_queue_key, queue.key, Job.key_for(job_id),
                                        job_id)
            if done == 1:
                log.warning("a delivery job its worker took but never started was put back on its queue")
        self._stranded = stranded

    def _restart_stuck_backlogs(self) -> None:
        """A backlog whose first entry has not moved since the last sweep and that no queued drain
        will deliver (none marked, or the marked job is gone) gets a drain. One more drain than
        needed costs a no-op job; one fewer would strand the line's events."""
        heads = {}
        for key in self.connection.scan_iter(match=BACKLOG_PATTERN, count=1000):
            backlog = token_of_backlog(key.decode())
            head = self.connection.lindex(key, 0)
            if head is None:
                continue
            heads[backlog] = head
            if self._heads.get(backlog) != head:
                continue  # moving, or new since the last sweep
            marked = self.connection.get(drain_key(backlog))
            if marked and Job.exists(marked.decode(), connection=self.connection):
                continue
            log.warning("a line's backlog was not being delivered: queueing a drain for it")
            self.connection.delete(drain_key(backlog))
            queue = queue_for(self.connection, backlog, self.workers)
            queue_drain_unless_queued(self.connection, queue, backlog, self.drain_timeout)
        self._heads = heads

    def _fold(self, queue: Queue) -> None:
        """Jobs left on a queue no worker serves go to the queue that now serves their line (a drain)
        or to the first one (an event's retry: its line is sealed)."""
        for job in Job.fetch_many(queue.get_job_ids(), connection=self.connection, serializer=JSONSerializer):
            if job is not None:
                target = self._target(job)
                with self.connection.pipeline() as pipe:
                    pipe.multi()  # rq's enqueue_job takes a pipeline in MULTI
                    pipe.lrem(queue.key, 0, job.id)
                    target.enqueue_job(job, pipeline=pipe)
                    pipe.execute()
        scheduled = ScheduledJobRegistry(queue=queue)
        for job_id, score in self.connection.zrange(scheduled.key, 0, -1, withscores=True):
            job = Job.fetch(job_id.decode(), connection=self.connection, serializer=JSONSerializer) \
                if Job.exists(job_id.decode(), connection=self.connection) else None
            with self.connection.pipeline() as pipe:
                pipe.multi()
                pipe.zrem(scheduled.key, job_id)
                if job is not None:
                    target = self._target(job)
                    job.origin = target.name  # rq's scheduler puts a due job on its origin
                    target.schedule_job(job, datetime.fromtimestamp(score, tz=UTC), pipeline=pipe)
                pipe.execute()

    def _target(self, job: Job) -> Queue:
        if job.func_name == DRAIN and job.args:
            return queue_for(self.connection, job.args[0], self.workers)
        return delivery_queue(self.connection, 1)
