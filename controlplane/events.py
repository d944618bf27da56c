"""Turning what happens on a line into delivery jobs: the envelope, its sequence number, the RQ job.

Used by slot workers (messages, enrolled, logged_out, evicted) and by the API (sleeping, active,
killed). Every event becomes one RQ job on the ``deliveries`` queue, sealed, with rq's copies kept to
the minimum (RELIABILITY-NOTES): a result for 1 s (``result_ttl=0`` re-delivers after a recovery),
no failed-job record worth keeping, a description that names the event and nothing else.
"""

import contextlib
import hashlib
import math
import time
import uuid

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from controlplane.config import Settings
from controlplane.sealed import Sealer
from controlplane.store import connect, seq_key

QUEUE_NAME = "deliveries"
DELIVER = "controlplane.delivery.deliver"


def retry_intervals(backoff: tuple[float, ...], max_age: float) -> list[int]:
    """Growing waits between attempts (the last one repeats) until they add up to ``max_age``."""
    intervals, total = [], 0
    while total < max_age:
        step = backoff[min(len(intervals), len(backoff) - 1)]
        step = max(1, math.ceil(min(step, max_age - total)))
        intervals.append(step)
        total += step
    return intervals


def message_event_id(line: str, message_id: str) -> str:
    """The webhook-id of an inbound message: the same whenever and by whichever slot it is received
    again, and made of characters rq accepts in a job id, whatever WhatsApp's id contains."""
    return "msg_" + hashlib.sha256(f"{line}:{message_id}".encode()).hexdigest()[:32]


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

    def message(self, slot_id: str, line: str, payload: dict, message_id: str, sender: str | None) -> str:
        event_id = message_event_id(line, message_id)
        self._publish(event_id, {"type": "message", "line": line, "slot": slot_id, "from": sender,
                                 "payload": payload})
        return event_id

    def slot_status(self, slot_id: str, line: str | None, status: str, reason: str | None = None) -> str:
        event_id = f"evt_{uuid.uuid4().hex}"
        self._publish(event_id, {"type": "slot.status", "line": line, "slot": slot_id, "status": status,
                                 "payload": {"status": status, "reason": reason}})
        return event_id

    def _publish(self, event_id: str, fields: dict) -> None:
        if Job.exists(event_id, connection=self.connection):
            return  # handed over again while still queued: once is enough, and no seq is used up
        line = fields["line"]
        envelope = {
            "type": fields.pop("type"),
            "line": line,
            "slot": fields.pop("slot"),
            "seq": self.connection.incr(seq_key(line)) if line else None,
            **fields,
            "received_at": round(time.time(), 3),
        }
        envelope["payload"] = envelope.pop("payload")  # last, as in the contract's example
        # The network may hand us the same message again while it is still queued: once is enough.
        with contextlib.suppress(DuplicateJobError):
            self.queue.enqueue(
                DELIVER, event_id, self.sealer.seal(envelope),
                job_id=event_id, unique=True, description=f"deliver {event_id}",
                retry=self.retry, job_timeout=self.job_timeout,
                result_ttl=1,  # not 0: rq re-runs a recovered job whose result vanished (RELIABILITY-NOTES)
                failure_ttl=1,  # a failed job holds its arguments; the give-up is counted, not kept
            )
