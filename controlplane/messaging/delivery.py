"""The delivery jobs: POST events to inmovilla's webhook, signed per Standard Webhooks. No Flask here.

``drain`` delivers a line's backlog (backlog.py) in seq order, each event its own POST. An attempt
succeeds on any 2xx within WHIN_WEBHOOK_TIMEOUT. An event whose first attempt fails leaves the
backlog for a ``deliver`` job of its own, which rq retries (events.retry_intervals: seconds at first,
hours later, for WHIN_DELIVERY_MAX_AGE in all). The last attempt that fails gives up: counted and
logged by event id, never by content, and the job ends normally so that no failed-job record keeps
the sealed envelope.

The workers that run them: delivery_worker.py.
"""

import email.utils
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache

import redis
import urllib3
from rq import get_current_job
from standardwebhooks.webhooks import Webhook

from controlplane.core import live_secrets
from controlplane.core.config import Settings
from controlplane.core.keys import STATS, WEBHOOK_HOLD, backlog_key, drain_key, queued_key
from controlplane.core.sealed import Sealer
from controlplane.core.stats import observe_latency
from controlplane.messaging import backlog
from controlplane.messaging.events import drain_timeout, event_retry

log = logging.getLogger("controlplane.messaging.delivery")

# Statuses after which the receiver asks us to wait (its Retry-After) before the next attempt.
_SLOW_DOWN = {429, 502, 503, 504}


class Unopenable(Exception):
    """An event this gateway cannot unseal (another WHIN_QUEUE_KEY sealed it): given up at once."""


@lru_cache(maxsize=2)
def _post_timeout(seconds: float) -> urllib3.Timeout:
    # total as well: a bare number bounds the connect and each socket read, so a receiver that
    # trickles its answer could hold one attempt past the job's rq timeout, and rq would cut it.
    return urllib3.Timeout(connect=seconds, read=seconds, total=seconds)


class DeliveryFailed(Exception):
    """One attempt did not get a 2xx. The message names the outcome only (status, timeout), never a body."""


@cache
def _settings() -> Settings:
    return Settings.from_env()


@cache
def _sealer() -> Sealer:
    return Sealer(_settings().queue_key)


@cache
def _webhook_secret() -> live_secrets.LiveSecret:
    return live_secrets.webhook_secret(_settings())


@lru_cache(maxsize=2)
def _webhook(secret: str) -> Webhook:
    return Webhook(secret)


def _signer() -> Webhook:
    """Signs with the current WHIN_WEBHOOK_SECRET, so a rotated secret applies from the next attempt."""
    return _webhook(_webhook_secret().get())


@cache
def _http() -> urllib3.PoolManager:
    # One per worker process, so the connection to the receiver stays open. urllib3 directly, not
    # requests on top of it: measured 0.25 ms of CPU per POST against 0.89 ms (bench/inbound.py).
    return urllib3.PoolManager(num_pools=4, maxsize=1, retries=False)


# Set by the worker when it is asked to stop: a drain hands its backlog over to a new job at once.
stopping = threading.Event()


def deliver(event_id: str, sealed: str) -> None:
    """The retry job of one event. Raises DeliveryFailed to be retried; returns when delivered or given up."""
    job = get_current_job()
    connection = job.connection
    try:
        received_at = _attempt(connection, event_id, sealed)
    except DeliveryFailed as failure:
        if job.retries_left:
            connection.hincrby(STATS, "retried", 1)
            raise
        _give_up(connection.pipeline(transaction=False), event_id, len(job.retry_intervals or []) + 2, failure)
        return
    except Unopenable as unopenable:
        _give_up(connection.pipeline(transaction=False), event_id, 0, unopenable)
        return
    with connection.pipeline(transaction=False) as pipe:
        _delivered(pipe, event_id, received_at)
        pipe.execute()


def drain(name: str) -> None:
    """Deliver a line's backlog (backlog.py), oldest first, for up to DRAIN_SECONDS; then, if events
    remain, hand over to a new drain at the end of the queue. Each event leaves the backlog once
    delivered, or for a retry job of its own once its first attempt failed, in one step each: a
    worker killed mid-POST leaves the event in place, and the recovered drain POSTs it again."""
    job = get_current_job()
    connection = job.connection
    started = time.monotonic()
    first = _first_reads.pop(job.id, None)  # made in the step that started the job (delivery_worker)
    if first is None:
        with connection.pipeline(transaction=False) as pipe:
            begin_drain(pipe, name)
            first = pipe.execute()
    _, items, hold = first
    attempted = 0
    while items:
        for item in items:
            # Checked before a POST, not after: a drain never starts one past its time (rq's timeout
            # for it allows one POST beyond DRAIN_SECONDS, and a POST that rq cuts is made again);
            # but every drain makes one, or a hand-over could follow a hand-over for ever.
            if attempted and (stopping.is_set() or time.monotonic() - started > backlog.DRAIN_SECONDS):
                _hand_over(connection, name)
                return
            held_until = float(hold or 0)
            if held_until > time.time():
                # The receiver asked to wait (Retry-After): the backlog waits whole, in order, for a
                # drain at the end of the wait, rather than each event failing into a retry of its own.
                _hand_over(connection, name, at=held_until)
                return
            event_id, sealed = backlog.parse(item)
            hold = _drain_one(connection, name, item, event_id, sealed, hold)
            attempted += 1
        items = connection.lrange(backlog_key(name), 0, backlog.DRAIN_CHUNK - 1)


# A drain's first reads, keyed by job id, when the worker made them with the job's start (one round
# trip fewer before the first POST).
_first_reads: dict[str, list] = {}


def begin_drain(pipe, name: str) -> None:
    """A drain's first step, in ``pipe``: three results, as ``drain`` reads them."""
    pipe.delete(drain_key(name))  # from now on, new events queue a drain of their own
    pipe.lrange(backlog_key(name), 0, backlog.DRAIN_CHUNK - 1)
    pipe.get(WEBHOOK_HOLD)


def first_reads_made(job_id: str, results: list) -> None:
    _first_reads.clear()  # only the job under way's: a job that never ran must not leave its reads
    _first_reads[job_id] = results


def _drain_one(connection: redis.Redis, name: str, item: bytes, event_id: str, sealed: str, hold):
    """One event of the backlog; returns the receiver's hold as read in the same step (for the next)."""
    try:
        received_at = _attempt(connection, event_id, sealed, hold)
    except DeliveryFailed as failure:
        _to_retry_job(connection, name, item, event_id, sealed, failure)
        return connection.get(WEBHOOK_HOLD)
    except Unopenable as unopenable:  # it never will be: the line's later events must not wait for it
        with connection.pipeline(transaction=True) as pipe:
            pipe.lrem(backlog_key(name), 1, item)
            _give_up(pipe, event_id, 0, unopenable)
        return hold
    with connection.pipeline(transaction=False) as pipe:
        pipe.lrem(backlog_key(name), 1, item)  # the entry itself: a second drainer can never pop another
        _delivered(pipe, event_id, received_at)
        pipe.get(WEBHOOK_HOLD)  # for the next event: one round trip per event in all
        return pipe.execute()[-1]


def _to_retry_job(connection: redis.Redis, name: str, item: bytes, event_id: str, sealed: str,
                  failure: "DeliveryFailed") -> None:
    """The event leaves the backlog for a ``deliver`` job scheduled at its next attempt, in one step."""
    settings = _settings()
    intervals, retry = event_retry(settings)
    with connection.pipeline(transaction=True) as pipe:
        pipe.lrem(backlog_key(name), 1, item)
        if not intervals:
            _give_up(pipe, event_id, 1, failure)
            return
        queue = backlog.queue_for(connection, name, settings.delivery_workers)
        job = backlog.retry_job(queue, event_id, sealed, retry, int(settings.webhook_timeout) + 10)
        queue.schedule_job(job, datetime.now(tz=UTC) + timedelta(seconds=intervals[0]), pipeline=pipe)
        pipe.hincrby(STATS, "retried", 1)
        pipe.execute()


def _hand_over(connection: redis.Redis, name: str, at: float | None = None) -> None:
    settings = _settings()
    queue = backlog.queue_for(connection, name, settings.delivery_workers)
    backlog.queue_drain_unless_queued(connection, queue, name, drain_timeout(settings), at)


# How long a delivered event's "handed over already" mark stays. A slot stopped (slept, moved,
# restarted) between handing an event over and acknowledging it to WhatsApp gets it again on its
# next connection, with the same id: within this window it is not queued, and not POSTed, twice.
DELIVERED_MARK_SECONDS = 600


def _delivered(pipe, event_id: str, received_at: float | None) -> None:
    pipe.expire(queued_key(event_id), DELIVERED_MARK_SECONDS)
    pipe.hincrby(STATS, "delivered", 1)
    if received_at:
        observe_latency(pipe, max(0.0, time.time() - received_at))


def _give_up(pipe, event_id: str, attempts: int, failure: "DeliveryFailed") -> None:
    pipe.delete(queued_key(event_id))
    pipe.hincrby(STATS, "given_up", 1)
    pipe.execute()
    log.error("delivery given up: event %s after %d attempts (%s)", event_id, attempts, failure)


_UNREAD = object()


def _attempt(connection: redis.Redis, event_id: str, sealed: str, hold=_UNREAD) -> float | None:
    """One signed POST; returns the envelope's received_at (for the latency histogram) on a 2xx.
    ``hold``: WEBHOOK_HOLD's value when the caller read it in a step of its own."""
    settings = _settings()
    if not settings.webhook_url:
        raise DeliveryFailed("WHIN_WEBHOOK_URL is not set")
    hold = float((connection.get(WEBHOOK_HOLD) if hold is _UNREAD else hold) or 0)
    if hold > time.time():
        raise DeliveryFailed(f"receiver asked to wait {hold - time.time():.0f} s more")
    try:
        body = _sealer().unseal_text(sealed)
    except ValueError:  # sealed with another WHIN_QUEUE_KEY, or no sealed token at all
        raise Unopenable("it does not open with this WHIN_QUEUE_KEY") from None
    stamp = datetime.now(tz=UTC)  # re-signed on every attempt: receivers refuse old timestamps
    headers = {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": _signer().sign(event_id, stamp, body),
    }
    try:
        response = _http().request("POST", settings.webhook_url, body=body.encode(), headers=headers,
                                   timeout=_post_timeout(settings.webhook_timeout), redirect=False)
    except urllib3.exceptions.TimeoutError:
        raise DeliveryFailed(f"no answer within {settings.webhook_timeout:g} s") from None
    except urllib3.exceptions.HTTPError as err:
        raise DeliveryFailed(f"connection failed ({type(err).__name__})") from None
    if 200 <= response.status < 300:
        return json.loads(body).get("received_at")
    _remember_retry_after(connection, response)
    raise DeliveryFailed(f"HTTP {response.status}")


def _remember_retry_after(connection: redis.Redis, response: urllib3.BaseHTTPResponse) -> None:
    if response.status not in _SLOW_DOWN:
        return
    seconds = retry_after_seconds(response.headers.get("Retry-After"))
    if seconds:
        connection.set(WEBHOOK_HOLD, time.time() + seconds, ex=int(seconds) + 1)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date (RFC 9110); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now or time.time()))
