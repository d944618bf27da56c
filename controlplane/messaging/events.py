"""Turning what happens on a line into deliveries: the envelope, its sequence number, the line's backlog.

Used by slot workers (every inbound event, enrolled, logged_out, evicted, offline) and by the API
(sleeping, active, killed). Types WHIN_EVENTS leaves out are dropped here, before anything is written.
Every event is sealed and appended to its line's backlog, which an rq job (a drain, backlog.py)
delivers; rq's copies are kept to the minimum (RELIABILITY-NOTES): a result for 1 s (``result_ttl=0``
re-delivers after a recovery), no failed-job record worth keeping, a description that names nothing.

An event's ``seq`` is taken in the same MULTI/EXEC that appends it (``Outbox``): a process that dies
between the two steps leaves neither, never a number without its event. Status changes that end or
change an enrollment are queued in the very transaction that makes them (controlplane.core.store
takes an Outbox), so each enrollment ends in exactly one terminal event, decided in Redis, and a
kill -9 at any point either delivers the event or never changed the state.
"""

import math
import time
import uuid
from dataclasses import dataclass

import redis
from rq import Retry

from controlplane.core.config import Settings
from controlplane.core.connection import connect, watched_transaction
from controlplane.core.event_types import WebhookType
from controlplane.core.keys import backlog_key, drain_key, queued_key, seq_key
from controlplane.core.sealed import Sealer
from controlplane.messaging import backlog
from controlplane.messaging.backlog import QUEUE_NAME, delivery_queue
from controlplane.messaging.envelope import Inbound, message_event_id

__all__ = ["QUEUE_NAME", "EventPublisher", "Outbox", "delivery_queue", "message_event_id", "retry_intervals"]


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


def bytes_connection(settings: Settings) -> redis.Redis:
    """rq needs a connection that returns bytes (the store's decodes to str)."""
    return connect(settings.redis_url, decode_responses=False)


class EventPublisher:
    def __init__(self, settings: Settings, connection: redis.Redis | None = None):
        self.connection = connection or bytes_connection(settings)
        self.workers = settings.delivery_workers
        self.queues = {n: delivery_queue(self.connection, n) for n in range(1, self.workers + 1)}
        self.sealer = Sealer(settings.queue_key)
        self.drain_timeout = drain_timeout(settings)
        self.marked_for = int(settings.delivery_max_age) + 3600  # while queued or retried, and then some
        self.types = settings.events

    def queue_for(self, backlog_name: str):
        return self.queues[backlog.queue_number(backlog_name, self.workers)]  # made once, not per event

    def wants(self, kind: str) -> bool:
        return kind in self.types

    def outbox(self) -> "Outbox":
        """Events to queue in the caller's own MULTI/EXEC, with the store change they report."""
        return Outbox(self)

    def inbound(self, slot_id: str, line: str, event: Inbound, payload: dict, also=None,
                received_at: float | None = None) -> str:
        """Queue what the engine delivered (envelope.inbound made ``event`` of it) at ``received_at``;
        ``also(pipe)`` adds writes of the caller's to the same step (the message index's entry for it)."""
        self.outbox().send([Event(event.id, event.type.value, slot_id, line, {**event.fields, "payload": payload},
                                  received_at)], also)
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

    def _sealed(self, event: "Event", seq: int | None) -> str:
        envelope = {"type": event.type, "line": event.line, "slot": event.slot, "seq": seq,
                    **{k: v for k, v in event.fields.items() if k != "payload"},
                    # Microseconds: the latency histogram and the bench measure from it.
                    "received_at": round(event.received_at or time.time(), 6),
                    "payload": event.fields["payload"]}  # last, as in the contract's example
        return self.sealer.seal(envelope)


def drain_timeout(settings: Settings) -> int:
    """A drain's rq timeout: its own time, one POST that started just before it, and a margin."""
    return int(settings.webhook_timeout + backlog.DRAIN_SECONDS) + 10


def event_retry(settings: Settings) -> tuple[list[int], Retry | None]:
    """The waits between an event's attempts, and the rq Retry of the job that makes them after the
    first (made by a drain) failed: None when that job's own attempt is the last one."""
    intervals = retry_intervals(settings.delivery_backoff, settings.delivery_max_age)
    rest = intervals[1:]
    return intervals, Retry(max=len(rest), interval=rest) if rest else None


@dataclass(frozen=True)
class Event:
    id: str  # the webhook-id, and the rq job's id
    type: str
    slot: str
    line: str | None
    fields: dict  # the envelope's other fields; "payload" goes last
    received_at: float | None = None  # when the slot had it from the network; None: now


def status_event(slot_id: str, line: str | None, status: str, reason: str | None = None,
                 details: dict | None = None) -> Event:
    return Event(f"evt_{uuid.uuid4().hex}", WebhookType.SLOT_STATUS.value, slot_id, line,
                 {"status": status, "payload": {"status": status, "reason": reason, **(details or {})}})


class Outbox:
    """Numbers events and appends them to their backlogs in one MULTI/EXEC, so that a seq is never
    used without its event being queued (a gap the receiver could not tell from a lost event), and
    so that a store transition and the events that report it happen together or not at all. A
    backlog that no queued drain will deliver gets one in the same step.

    Inside a transaction whose keys are WATCHed: ``stage(pipe, events)`` before ``pipe.multi()``
    (it WATCHes each line's counter and drain mark and each event's queued mark too, and reads them
    in one round trip), then ``write(pipe)`` after it. A WatchError means nothing was written: stage
    again on the retry. The drains are rq jobs queued by rq itself (Queue.enqueue_job with the
    pipeline), so rq-dashboard sees them as any.
    """

    def __init__(self, publisher: EventPublisher):
        self.publisher = publisher
        self._seqs: dict[str, int] = {}
        self._entries: list[tuple[str, str, str]] = []  # (backlog, event id, entry)
        self._drains: list[str] = []  # backlogs that get a drain

    @staticmethod
    def status(slot_id: str, line: str | None, status: str, reason: str | None = None) -> Event:
        return status_event(slot_id, line, status, reason)

    def stage(self, pipe, events: list[Event]) -> None:
        events = [e for e in events if self.publisher.wants(e.type)]  # WHIN_EVENTS: the rest cost nothing
        self._seqs, self._entries, self._drains = {}, [], []
        if not events:
            return
        self.publisher.queues[1].get_redis_server_version()  # rq asks while queueing: ask now, outside MULTI
        lines = sorted({e.line for e in events if e.line})
        backlogs = sorted({backlog.token(e.line, e.slot) for e in events})
        watched = [*map(seq_key, lines), *map(drain_key, backlogs), *(queued_key(e.id) for e in events)]
        pipe.watch(*watched)
        values = pipe.mget(watched)
        self._seqs = {line: int(v or 0) for line, v in zip(lines, values, strict=False)}
        drains = dict(zip(backlogs, values[len(lines):], strict=False))
        already = {e.id for e, v in zip(events, values[len(lines) + len(backlogs):], strict=True) if v}
        for event in events:
            if event.id in already:
                continue  # handed over again while still queued: once is enough, and no seq is used up
            already.add(event.id)
            seq = None
            if event.line:
                seq = self._seqs[event.line] = self._seqs[event.line] + 1
            name = backlog.token(event.line, event.slot)
            self._entries.append((name, event.id, backlog.entry(event.id, self.publisher._sealed(event, seq))))
            if drains[name] is None and name not in self._drains:
                self._drains.append(name)

    def write(self, pipe) -> None:
        for line, seq in self._seqs.items():
            pipe.set(seq_key(line), seq)  # the counter WATCHed in stage: the same as INCR, in this step
        for name, event_id, item in self._entries:
            pipe.rpush(backlog_key(name), item)
            pipe.set(queued_key(event_id), 1, ex=self.publisher.marked_for)
        for name in self._drains:
            backlog.queue_drain(pipe, self.publisher.queue_for(name), name, self.publisher.drain_timeout)

    def send(self, events: list[Event], also=None) -> None:
        """Queue events that report no store change, in a transaction of their own (numbered again
        when another event of the line was numbered meanwhile), with the writes ``also(pipe)`` adds."""
        if not any(self.publisher.wants(e.type) for e in events):
            return

        def write(pipe):
            if also is not None:
                also(pipe)
            self.write(pipe)

        def stage(pipe):
            self.stage(pipe, events)
            return None, write

        watched_transaction(self.publisher.connection, stage)
