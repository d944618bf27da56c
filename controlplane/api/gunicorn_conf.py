"""gunicorn settings for the API (gunicorn -c python:controlplane.api.gunicorn_conf).

Threads, not processes, carry the concurrency: /enroll and /resume wait seconds on a worker, and a
thread waiting on Redis costs little. Two processes keep one crash from taking the API down.
"""

import gc
import os

from controlplane.core import lifeline
from controlplane.core.config import data_dir_from_env

bind = f"127.0.0.1:{os.environ.get('WHIN_PORT', '8080')}"
workers = int(os.environ.get("WHIN_API_WORKERS", "2"))
worker_class = "controlplane.api.gunicorn_worker.ThreadWorker"  # gthread, errors in JSON
threads = int(os.environ.get("WHIN_API_THREADS", "16"))
timeout = 60


def on_starting(_server) -> None:
    lifeline.end_with_supervisord()  # the master: its workers end with it (gunicorn sees to that)


# gunicorn's control socket lives in this gateway's own run folder, not the per-user default
# (~/.gunicorn/gunicorn.ctl) that two gateways of one user would share.
control_socket = str(data_dir_from_env() / "run" / "gunicorn.ctl")
graceful_timeout = 10
# gunicorn's request limits, spelled out so that none is ever 0 (unlimited): a request line of 4 KiB
# (our longest path, /paircode/<slot>/<line>, is 34 characters), at most 100 headers of 8 KiB each.
# Past them gunicorn answers 414/431/400 itself, in JSON (gunicorn_worker.py). gunicorn has no body
# limit: the body is Flask's MAX_CONTENT_LENGTH (controlplane/app.py), refused with a 413 before it
# is read; gunicorn then drains at most 64 KiB of what is left before it closes the connection.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = "-"
# Method, path, status and time: paths carry slot ids and lines, never message text (that travels
# in bodies, which are never logged).
access_log_format = "%(m)s %(U)s %(s)s %(M)sms"
# gunicorn's own loggers as JSON lines too, like every other log of the gateway (controlplane/logs.py).
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "controlplane.core.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    # gunicorn merges this into its defaults one level deep: the root logger must name our handler.
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def post_worker_init(_worker) -> None:
    # Everything the worker has built by now (Flask, apiflask's OpenAPI document, rq, prometheus) lives
    # as long as the worker: moved out of the collector's sight, so that a full collection, which a
    # listing of hundreds of slots triggers every few requests, scans only what requests made. Without
    # it, GET /slots at 500 slots and 8 clients had a p99 of ~95 ms; with it ~35 (bench/host_scale.py).
    gc.collect()
    gc.freeze()
