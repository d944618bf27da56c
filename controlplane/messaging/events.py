"""Turning what happens on a line into delivery jobs: the envelope, its sequence number, the RQ job.

Used by slot workers (every inbound event, enrolled, logged_out, evicted, offline) and by the API
(sleeping, active, killed). Types WHIN_EVENTS leaves out are dropped here, before a job exists.
Every event becomes one RQ job on the ``deliveries`` queue, sealed, with rq's copies kept to the
minimum (RELIABILITY-NOTES): a result for 1 s (``result_ttl=0`` re-delivers after a recovery), no
failed-job record worth keeping, a description that names the event and nothing else.

An event's ``seq`` is taken in the same MULTI/EXEC that queues its job (``Outbox``): a process that
dies between the two steps leaves neither, never a number without its event. Status changes that
end or change an enrollment are queued in the very transaction that makes them (controlplane.core.store
takes an Outbox), so each enrollment ends in exactly one terminal event, decided in Redis.
"""

import math
import time
import uuid
from dataclasses import dataclass

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from controlplane.core.config import Settings
from controlplane.core.connection import connect, watched_transaction
from controlplane.core.event_types import WebhookType
from controlplane.core.keys import seq_key
from controlplane.core.sealed import Sealer
from controlplane.messaging.envelope import Inbound, message_event_id

__all__ = ["EventPublisher", "Outbox", "message_event_id", "retry_intervals"]

QUEUE_NAME = "deliveries"
DELIVER = "controlplane.messaging.delivery.deliver"


def retry_intervals(backoff: tuple[float, ...], max_age: float) -> list[int]:
    """Growing waits between attempts (the last one repeats) until they add up to ``max_age``.

    Each is one second longer than its step: rq's scheduled registry keeps whole seconds (it
    truncates the time it is given), so a job scheduled N s ahead can run up to a second early, and
    a receiver that asked for a back-off must never see a shorter one.
    """
    intervals, total = [], 0
    while total < max_age:
        step = backoff[min(len(intervals), len(backoff) - 1)]
        step = max(1, math.ceil(min(step, max_age - total)))
        intervals.append(step + 1)
        total += step
    return intervals


def delivery_queue(connection: redis.Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=connection, serializer=JSONSerializer)


def bytes_connection(settings: Settings) -> redis.Redis:
    """rq needs a connection that returns bytes (the store's decodes to str)."""
    return connect(settings.redis_url, decode_responses=False)


class EventPublisher:
    def __init__(self, settings: Settings, connection: redis.Redis | None = None):
        self.connection = connection or bytes_connection(settings)
        self.queue = delivery_queue(self.connection)
        self.sealer = Sealer(settings.queue_key)
        intervals = retry_intervals(settings.delivery_backoff, settings.delivery_max_age)
        self.retry = Retry(max=len(intervals), interval=intervals)
        self.job_timeout = int(settings.webhook_timeout) + 10
        self.types = settings.events

    def wants(self, kind: str) -> bool:
        return kind in self.types

    def outbox(self) -> "Outbox":
        """Events to queue in the caller's own MULTI/EXEC, with the store change they report."""
        return Outbox(self)

    def inbound(self, slot_id: str, line: str, event: Inbound, payload: dict) -> str:
        """Queue what the engine delivered (envelope.inbound made ``event`` of it)."""
        self.outbox().send([Event(event.id, event.type.value, slot_id, line, {**event.fields, "payload": payload})])
        return event.id

    def message(self, slot_id: str, line: str, payload: dict, message_id: str, sender: str | None) -> str:
        """A message whose envelope is given (tests and benches that have no engine event to hand)."""
        event = Inbound(message_event_id(line, message_id), WebhookType.MESSAGE,
                        {"message_id": message_id, "from": sender})
        return self.inbound(slot_id, line, event, payload)

    def slot_status(self, slot_id: str, line: str | None, status: str, reason: str | None = None) -> str:
        event = status_event(slot_id, line, status, reason)
        self.outbox().send([event])
        return event.id

    def _job(self, event: "Event", seq: int | None) -> Job:
        envelope = {"type": event.type, "line": event.line, "slot": event.slot, "seq": seq,
                    **{k: v for k, v in event.fields.items() if k != "payload"},
                    "received_at": round(time.time(), 3),
                    "payload": event.fields["payload"]}  # last, as in the contract's example
        return self.queue.create_job(
            DELIVER, args=(event.id, self.sealer.seal(envelope)),
            job_id=event.id, description=f"deliver {event.id}",
            retry=self.retry, timeout=self.job_timeout,
            result_ttl=1,  # not 0: rq re-runs a recovered job whose result vanished (RELIABILITY-NOTES)
            failure_ttl=1,  # a failed job holds its arguments; the give-up is counted, not kept
        )


@dataclass(frozen=True)
class Event:
    id: str  # the webhook-id, and the rq job's id
    type: str
    slot: str
    line: str | None
    fields: dict  # the envelope's other fields; "payload" goes last


def status_event(slot_id: str, line: str | None, status: str, reason: str | None = None,
                 details: dict | None = None) -> Event:
    return Event(f"evt_{uuid.uuid4().hex}", WebhookType.SLOT_STATUS.value, slot_id, line,
                 {"status": status, "payload": {"status": status, "reason": reason, **(details or {})}})


class Outbox:
    """Numbers events and queues them as rq jobs in one MULTI/EXEC, so that a seq is never used
    without its job being queued (a gap the receiver could not tell from a lost event), and so that a
    store transition and the events that report it happen together or not at all.

    Inside a transaction whose keys are WATCHed: ``stage(pipe, events)`` before ``pipe.multi()``
    (it WATCHes each line's counter and each job's key too, and reads the counters), then
    ``write(pipe)`` after it. A WatchError means nothing was written: stage again on the retry.
    rq queues the jobs itself (Queue.enqueue_job with the pipeline), so rq-dashboard sees them as any.
    """

    def __init__(self, publisher: EventPublisher):
        self.publisher = publisher
        self._jobs: list[Job] = []
        self._seqs: dict[str, int] = {}

    @staticmethod
    def status(slot_id: str, line: str | None, status: str, reason: str | None = None) -> Event:
        return status_event(slot_id, line, status, reason)

    def stage(self, pipe, events: list[Event]) -> None:
        self.publisher.queue.get_redis_server_version()  # rq asks while queueing: ask now, outside MULTI
        events = [e for e in events if self.publisher.wants(e.type)]  # WHIN_EVENTS: the rest cost nothing
        self._seqs, self._jobs = {}, []
        if not events:
            return
        lines = sorted({e.line for e in events if e.line})
        pipe.watch(*[Job.key_for(e.id) for e in events], *[seq_key(line) for line in lines])
        self._seqs = {line: int(pipe.get(seq_key(line)) or 0) for line in lines}
        self._jobs = []
        for event in events:
            if pipe.exists(Job.key_for(event.id)):
                continue  # handed over again while still queued: once is enough, and no seq is used up
            seq = None
            if event.line:
                seq = self._seqs[event.line] = self._seqs[event.line] + 1
            self._jobs.append(self.publisher._job(event, seq))

    def write(self, pipe) -> None:
        for line, seq in self._seqs.items():
            pipe.set(seq_key(line), seq)  # the counter WATCHed in stage: the same as INCR, in this step
        for job in self._jobs:
            self.publisher.queue.enqueue_job(job, pipeline=pipe)

    def send(self, events: list[Event]) -> None:
        """Queue events that report no store change, in a transaction of their own (numbered again
        when another event of the line was numbered meanwhile)."""
        if not any(self.publisher.wants(e.type) for e in events):
            return

        def stage(pipe):
            self.stage(pipe, events)
            return None, self.write

        watched_transaction(self.publisher.connection, stage)
