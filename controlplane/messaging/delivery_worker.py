"""The delivery workers: rq's SimpleWorker, made lean for many short jobs (checked against rq 3.0.0).

Run as ``python -m controlplane.messaging.delivery_worker N``: worker N of WHIN_DELIVERY_WORKERS
serves delivery queue N alone (backlog.py: each line's drains go to one queue, so one worker delivers
a line's events in order; one queue per worker is also what rq's recovery of a killed worker's job
needs, with the job's Retry: rq then keeps the job in an intermediate list until it starts).

A stock SimpleWorker spends about 13 round trips to Redis per job; about half are the worker's own
heartbeat and state writes, which neither at-least-once delivery nor rq-dashboard needs per job. This
one spends 4 (the blocking pop, the job's fetch, one MULTI to start it, with a drain's first reads, one
MULTI to finish it), and
keeps what the dashboard and recovery read: jobs enqueued through rq, the worker's hash refreshed
within its TTL, the execution's entry in the started registry, a result kept for 1 s. Each override
below names the rq behaviour it replaces. Failures take rq's own path, unchanged.
"""

import gc
import os
import sys
import time

from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker.base import WorkerStatus

from controlplane.core import lifeline, logs
from controlplane.messaging import backlog, delivery
from controlplane.messaging.events import bytes_connection

# The rq version the overrides were checked against: each leans on the method it replaces.
RQ_CHECKED = "3.0.0"


class DeliveryWorker(SimpleWorker):
    """rq's SimpleWorker (no fork per job), with fewer writes per job.

    - Abandoned-job deadline tied to the job's timeout: rq marks a started job abandoned
      ``min(timeout, 30) + 60`` s after its last heartbeat; a SimpleWorker sends none during a job, so
      the job's own timeout plus a margin is the right wait, and a delivery whose worker was killed
      is retried within seconds rather than minutes.
    - The worker's own heartbeat at most every HEARTBEAT_EVERY seconds: rq sends it about five times
      per job (an HSET and two EXPIREs each), while its key lives ``worker_ttl + 60`` s.
    - ``rq suspend`` looked up at most once a second rather than before every job.
    - A job starts in one MULTI and ends in one MULTI (prepare_execution, handle_execution_ended,
      handle_job_success), and a state write that does not change the state is skipped (set_state).
    """

    log_result_lifespan = False
    HEARTBEAT_EVERY = 5.0
    SUSPENSION_CHECK_EVERY = 1.0
    _heartbeat_sent = float("-inf")
    _suspension_checked = float("-inf")
    _starting = None  # the pipeline prepare_execution fills and prepare_job_execution sends

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return int(job.timeout or 60) + 5

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        now_ = time.monotonic()
        if now_ - self._heartbeat_sent < self.HEARTBEAT_EVERY:
            return
        self._heartbeat_sent = now_
        super().heartbeat(timeout, pipeline)

    def check_for_suspension(self, burst: bool) -> None:
        now_ = time.monotonic()
        if now_ - self._suspension_checked < self.SUSPENSION_CHECK_EVERY:
            return
        self._suspension_checked = now_
        super().check_for_suspension(burst)

    def execute_job(self, job, queue):
        # rq's SimpleWorker.execute_job. After a success the IDLE state is in Redis already
        # (handle_job_success): only this process's own record of it is left to change.
        execution = self.prepare_execution(job)
        if self.perform_job(job, queue, execution):
            self._state = WorkerStatus.IDLE  # in Redis since the job's end MULTI
        else:
            self.set_state(WorkerStatus.IDLE)

    def set_state(self, state: str, pipeline=None):
        # rq writes the state before and after every job, and again when it starts to listen: IDLE
        # twice in a row is one write (the hash's TTL is the heartbeat's business).
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)

    def prepare_execution(self, job) -> Execution:
        # rq (executions.prepare_execution): the execution and the BUSY state in one pipeline, sent at
        # once; prepare_job_execution, called right after by perform_job, sends a second one. Here
        # the first waits for the second, and both go as one MULTI.
        pipeline = self.connection.pipeline()
        execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=pipeline, worker_name=self.name)
        self.executions[execution.id] = execution
        self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
        self._starting = pipeline
        return execution

    def prepare_job_execution(self, job, remove_from_intermediate_queue: bool = False) -> None:
        # rq's own writes (the job's heartbeat, STARTED, PERSIST, out of the intermediate list), in the
        # pipeline prepare_execution began; the worker's heartbeat only when it is due (heartbeat()).
        pipeline, self._starting = self._starting or self.connection.pipeline(), None
        with pipeline:
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            self.heartbeat(heartbeat_ttl, pipeline=pipeline)
            job.heartbeat(now(), heartbeat_ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if remove_from_intermediate_queue:
                pipeline.lrem(self.queues[0].intermediate_queue_key, 1, job.id)
            drain = job.func_name == backlog.DRAIN and job.args
            if drain:  # a drain's own first reads, in the same step: one round trip fewer before its POST
                delivery.begin_drain(pipeline, job.args[0])
            results = pipeline.execute()
            if drain:
                delivery.first_reads_made(job.id, results[-3:])

    def handle_execution_ended(self, job, queue, heartbeat_ttl: int):
        # rq also writes the job's last_heartbeat here, so that the job looks alive while its
        # success or failure callbacks run. Ours have none, and the next write ends the execution.
        job.ended_at = now()

    def handle_job_success(self, job, queue, started_job_registry, execution):
        # rq: WATCH the job's dependents, move them to ready, then MULTI (counters, result, cleanup,
        # the execution's end), then enqueue the dependents and release a rate-limit slot. Our jobs
        # have neither dependents nor repeats nor rate limits: the MULTI alone, with the IDLE state.
        with self.connection.pipeline() as pipeline:
            self.increment_successful_job_count(pipeline=pipeline)
            self.increment_total_working_time(job.ended_at - job.started_at, pipeline)
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if result_ttl != 0:
                job._handle_success(result_ttl, pipeline=pipeline, worker_name=self.name, execution_id=execution.id,
                                    execution_started_at=execution.created_at, execution_ended_at=job.ended_at)
            job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
            job._status = JobStatus.FINISHED
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            # IDLE in Redis with the job's end, but not in this process yet: rq's SIGTERM handler
            # raises StopRequested when it sees IDLE, and raised here, inside perform_job, it would
            # turn this finished job into a failed one (rescheduled, POSTed again) and lose the stop.
            # execute_job goes IDLE once perform_job has returned, as rq's own does.
            pipeline.hset(self.key, "state", WorkerStatus.IDLE)
            pipeline.execute()

    def request_stop(self, signum, frame):
        delivery.stopping.set()  # a drain under way hands its backlog over after the POST it is in
        super().request_stop(signum, frame)


def worker_number(argv: list[str]) -> int:
    """The worker's number, 1 … WHIN_DELIVERY_WORKERS (its queue); 1 when not given."""
    if len(argv) > 1 and argv[1].isdigit() and int(argv[1]) >= 1:
        return int(argv[1])
    return 1


def main() -> None:
    logs.configure()
    lifeline.end_with_supervisord()  # rq's SIGTERM handling: a warm shutdown, the POST under way finishes
    settings = delivery._settings()
    delivery._webhook_secret()  # follows the secret's file from the start, busy or not (live_secrets)
    connection = bytes_connection(settings)
    number = worker_number(sys.argv)
    queue = backlog.delivery_queue(connection, number)
    # rq registers a queue when a job is first put on it, and rq-dashboard lists the registered ones:
    # each delivery queue is listed from its worker's start, empty or not.
    connection.sadd(Queue.redis_queues_keys, queue.key)
    worker = DeliveryWorker(
        [queue], connection=connection, serializer=JSONSerializer,
        name=f"delivery-{number}-{os.getpid()}", default_result_ttl=1,
        log_job_description=False,  # a description names nothing, but never log job arguments
        worker_ttl=30, maintenance_interval=15,
    )
    # Started: what is left lives as long as the worker. Frozen, a full collection never walks it
    # again: each walk was a pause of milliseconds in the path of the delivery under way.
    gc.collect()
    gc.freeze()
    worker.work(with_scheduler=True, logging_level="WARNING")


if __name__ == "__main__":
    main()
