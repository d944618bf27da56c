"""rq-dashboard, mounted at /rq inside the API: ops watch the delivery queue where the API lives.

The blueprint has no authentication of its own (RELIABILITY-NOTES); the API's before_request hook
(api/auth.py) guards it: admin token only, as a bearer token or as the password of HTTP Basic (what a
browser can send). It sees job descriptions (event ids), never message content: the queued
envelopes are sealed (controlplane/sealed.py).

Two more guards, because a browser caches Basic credentials and attaches them to any request to
/rq, a cross-site form post included (rq-dashboard has no CSRF token):
  - a request that changes something (any method but GET/HEAD/OPTIONS, and requeue-all, which also
    takes GET) is refused with 403 `cross_site` when the browser says it comes from another site:
    `Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin` that is not this host. A request
    with neither header (curl, a script) carries its credentials on purpose and is served. Every
    browser sends `Origin` on a POST, so a forged form post cannot leave it out.
  - nothing deletes deliveries: deleting a job or emptying a queue or registry is a 403
    `delete_disabled`, from any origin (a deleted delivery is a lost message, and the gateway keeps no
    other copy). rq-dashboard is also told so (RQ_DASHBOARD_DISABLE_DELETE), which hides its buttons.
    Requeueing failed jobs and compacting a queue stay allowed: they lose nothing.
"""

from urllib.parse import urlsplit

import rq_dashboard
from flask import request
from rq import Worker
from rq.serializers import JSONSerializer

from controlplane.api.errors import error_response

URL_PREFIX = "/rq"
BLUEPRINT = rq_dashboard.blueprint.name
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# rq-dashboard 0.9.0's views (rq_dashboard/web.py) that change state although called with GET.
STATE_CHANGING_GETS = frozenset({f"{BLUEPRINT}.requeue_all"})
# Its views that delete jobs: the job's delete button, and "empty" on a queue or any registry.
DESTRUCTIVE = frozenset({f"{BLUEPRINT}.delete_job_view", f"{BLUEPRINT}.empty_queue"})
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})  # Sec-Fetch-Site values of our own pages / the user


class JSONWorkers:
    """rq-dashboard 0.9.0 lists workers (its worker page and workers.json) with rq's default
    serializer: a busy worker's current job, ours being JSON, then fails to load, a 500."""

    @staticmethod
    def all(connection=None, **kwargs):
        return Worker.all(connection=connection, serializer=JSONSerializer, **kwargs)


def register(app, settings) -> None:
    rq_dashboard.web.config.serializer = JSONSerializer  # our jobs are JSON, not pickles
    rq_dashboard.web.Worker = JSONWorkers
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    app.config["RQ_DASHBOARD_DISABLE_DELETE"] = True  # hides delete/empty (refused below anyway)
    rq_dashboard.web.setup_rq_connection(app)
    # Out of the OpenAPI document (an ops page, not the contract). apiflask reads this attribute on
    # every blueprint that has before_request hooks, and a plain Blueprint lacks it.
    rq_dashboard.blueprint.enable_openapi = False
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    # An app-level hook (rq_dashboard.blueprint is a module global: a hook added to it would pile up
    # with every create_app), registered after auth's, so only authenticated requests reach it.
    app.before_request(guard)


def guard():
    """Refuse cross-site changes and every deletion under /rq; let everything else through."""
    if request.blueprint != BLUEPRINT or request.routing_exception is not None:
        return None
    if request.method in SAFE_METHODS and request.endpoint not in STATE_CHANGING_GETS:
        return None
    if is_cross_site(request.headers.get("Sec-Fetch-Site"), request.headers.get("Origin"), request.host):
        return error_response(403, "cross_site", "The dashboard takes changes only from its own pages: this "
                                                 "request came from another site.")
    if request.endpoint in DESTRUCTIVE:
        return error_response(403, "delete_disabled", "The dashboard does not delete deliveries: a deleted "
                                                      "delivery is a lost message. Requeue failed ones instead.")
    return None


def is_cross_site(fetch_site: str | None, origin: str | None, host: str) -> bool:
    """What the browser says about where a request comes from; no header at all is not a browser's."""
    if fetch_site is not None and fetch_site.strip().lower() not in SAME_SITE_FETCHES:
        return True  # cross-site, same-site (a sibling subdomain), or anything unknown
    return origin is not None and not same_origin(origin, host)


def same_origin(origin: str, host: str) -> bool:
    """Whether an Origin header names this host (its Host header) and port.

    The scheme is not compared: behind the TLS proxy (deploy/nginx-whinmovilla.conf) the browser's
    origin is https while the API itself is spoken to in http. A port left out is the scheme's default
    on both sides, so `https://whin.example.com` matches a forwarded `Host: whin.example.com`.
    """
    theirs, ours = urlsplit(origin.strip()), urlsplit("//" + host)
    if theirs.scheme not in ("http", "https") or not theirs.hostname or not ours.hostname:
        return False  # "null" (a sandboxed frame, a redirect), or not an origin at all
    try:
        their_port, our_port = theirs.port, ours.port
    except ValueError:
        return False
    default = 443 if theirs.scheme == "https" else 80
    return theirs.hostname == ours.hostname and (their_port or default) == (our_port or default)
