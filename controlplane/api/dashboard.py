"""rq-dashboard, mounted at /rq inside the API: ops watch the delivery queue where the API lives.

The blueprint has no authentication of its own (RELIABILITY-NOTES); the API's before_request hook
(api/auth.py) guards it: admin token only, as a bearer token or as the password of HTTP Basic (what a
browser can send). It sees job descriptions (event ids), never message content: the queued
envelopes are sealed (controlplane/sealed.py).
"""

import rq_dashboard
from rq.serializers import JSONSerializer

URL_PREFIX = "/rq"
BLUEPRINT = rq_dashboard.blueprint.name


def register(app, settings) -> None:
    rq_dashboard.web.config.serializer = JSONSerializer  # our jobs are JSON, not pickles
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    rq_dashboard.web.setup_rq_connection(app)
    # Out of the OpenAPI document (an ops page, not the contract). apiflask reads this attribute on
    # every blueprint that has before_request hooks, and a plain Blueprint lacks it.
    rq_dashboard.blueprint.enable_openapi = False
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
