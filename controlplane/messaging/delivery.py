"""The delivery job: POST one event to inmovilla's webhook, signed per Standard Webhooks. No Flask here.

An attempt succeeds on any 2xx within WHIN_WEBHOOK_TIMEOUT. Anything else raises, and rq schedules
the next attempt (events.retry_intervals: seconds at first, hours later, for WHIN_DELIVERY_MAX_AGE in
all). The last attempt that fails gives up: counted and logged by event id, never by content, and
the job ends normally so that no failed-job record keeps the sealed envelope.

Run the workers as ``python -m controlplane.messaging.delivery`` (supervisord runs WHIN_DELIVERY_WORKERS).
"""

import email.utils
import json
import logging
import os
import time
from datetime import UTC, datetime
from functools import cache, lru_cache

import redis
import urllib3
from rq import SimpleWorker, get_current_job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from standardwebhooks.webhooks import Webhook

from controlplane.core import lifeline, live_secrets, logs
from controlplane.core.config import Settings
from controlplane.core.keys import STATS, WEBHOOK_HOLD
from controlplane.core.sealed import Sealer
from controlplane.core.stats import observe_latency
from controlplane.messaging.events import bytes_connection, delivery_queue

log = logging.getLogger("controlplane.messaging.delivery")

# Statuses after which the receiver asks us to wait (its Retry-After) before the next attempt.
_SLOW_DOWN = {429, 502, 503, 504}


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


def deliver(event_id: str, sealed: str) -> None:
    """The RQ job. Raises DeliveryFailed to be retried; returns when delivered or given up."""
    job = get_current_job()
    connection = job.connection
    try:
        _attempt(connection, event_id, sealed)
    except DeliveryFailed as failure:
        if job.retries_left:
            connection.hincrby(STATS, "retried", 1)
            raise
        connection.hincrby(STATS, "given_up", 1)
        log.error("delivery given up: event %s after %d attempts (%s)",
                  event_id, len(job.retry_intervals or []) + 1, failure)
        return
    connection.hincrby(STATS, "delivered", 1)


def _observe_delivery(connection: redis.Redis, body: str) -> None:
    received_at = json.loads(body).get("received_at")
    if received_at:
        observe_latency(connection, max(0.0, time.time() - received_at))


def _attempt(connection: redis.Redis, event_id: str, sealed: str) -> None:
    settings = _settings()
    if not settings.webhook_url:
        raise DeliveryFailed("WHIN_WEBHOOK_URL is not set")
    hold = float(connection.get(WEBHOOK_HOLD) or 0)
    if hold > time.time():
        raise DeliveryFailed(f"receiver asked to wait {hold - time.time():.0f} s more")
    body = _sealer().unseal_text(sealed)
    stamp = datetime.now(tz=UTC)  # re-signed on every attempt: receivers refuse old timestamps
    headers = {
        "Content-Type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": _signer().sign(event_id, stamp, body),
    }
    try:
        response = _http().request("POST", settings.webhook_url, body=body.encode(), headers=headers,
                                   timeout=settings.webhook_timeout, redirect=False)
    except urllib3.exceptions.TimeoutError:
        raise DeliveryFailed(f"no answer within {settings.webhook_timeout:g} s") from None
    except urllib3.exceptions.HTTPError as err:
        raise DeliveryFailed(f"connection failed ({type(err).__name__})") from None
    if 200 <= response.status < 300:
        _observe_delivery(connection, body)
        return
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


class DeliveryWorker(SimpleWorker):
    """rq's SimpleWorker (no fork per job), tuned for many short jobs.

    - Abandoned-job deadline tied to the job's timeout: rq marks a started job abandoned
      ``min(timeout, 30) + 60`` s after its last heartbeat; a SimpleWorker sends none during a job, so
      the job's own timeout plus a margin is the right wait, and a delivery whose worker was killed
      is retried within seconds rather than minutes.
    - The worker's own heartbeat at most every HEARTBEAT_EVERY seconds: rq sends it about five times
      per job (an HSET and two EXPIREs each, a quarter of the worker's time), while its key lives
      ``worker_ttl + 60`` s. Measured: 186 -> 322 no-op jobs/s for one worker (bench/inbound.py shows
      the effect on deliveries). It touches only the worker's key, never a job's.
    - ``rq suspend`` looked up at most once a second rather than before every job.
    """

    log_result_lifespan = False
    HEARTBEAT_EVERY = 5.0
    SUSPENSION_CHECK_EVERY = 1.0
    _heartbeat_sent = float("-inf")
    _suspension_checked = float("-inf")

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return int(job.timeout or 60) + 5

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        now = time.monotonic()
        if now - self._heartbeat_sent < self.HEARTBEAT_EVERY:
            return
        self._heartbeat_sent = now
        super().heartbeat(timeout, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        now = time.monotonic()
        if now - self._suspension_checked < self.SUSPENSION_CHECK_EVERY:
            return
        self._suspension_checked = now
        super().check_for_suspension(burst)


def recover_abandoned(connection: redis.Redis) -> None:
    """Re-queue deliveries whose worker died mid-attempt (rq otherwise waits for a worker's maintenance)."""
    StartedJobRegistry(queue=delivery_queue(connection)).cleanup()


def main() -> None:
    logs.configure()
    lifeline.end_with_supervisord()  # rq's SIGTERM handling: a warm shutdown, the POST under way finishes
    settings = _settings()
    _webhook_secret()  # follows the secret's file from the start, busy or not (live_secrets)
    connection = bytes_connection(settings)
    worker = DeliveryWorker(
        [delivery_queue(connection)], connection=connection, serializer=JSONSerializer,
        name=f"delivery-{os.getpid()}", default_result_ttl=1,
        log_job_description=False,  # a description is an event id, but never log job arguments
        worker_ttl=30, maintenance_interval=15,
    )
    worker.work(with_scheduler=True, logging_level="WARNING")


if __name__ == "__main__":
    main()
