"""gunicorn settings for the API (gunicorn -c python:controlplane.gunicorn_conf).

Threads, not processes, carry the concurrency: /enroll and /resume wait seconds on a worker, and a
thread waiting on Redis costs little. Two processes keep one crash from taking the API down.
"""

import os

bind = f"127.0.0.1:{os.environ.get('WHIN_PORT', '8080')}"
workers = int(os.environ.get("WHIN_API_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WHIN_API_THREADS", "16"))
timeout = 60
graceful_timeout = 10
accesslog = "-"
# The access log shows method, path and status: paths carry slot ids and lines, never message text.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'
